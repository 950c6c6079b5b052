"""A project's health, in one place: its transitions and what `/healthz` makes of them.

Logs come on TRANSITIONS only, like Home Assistant's update coordinator: a project that
fails permanently says `project.failed` once (not once per poll), and `project.recovered`
once when a cycle succeeds again. The gateway does the same per server outage with
`labelstudio.unreachable` / `labelstudio.recovered`; here each project only remembers
since when it could not reach Label Studio, for `/healthz` and `once`'s exit code.

`ProjectHealth` holds the state and decides the transitions; `ProjectRunner` feeds it
each cycle's end and does the logging; `assess_health` turns every project's state
into the `HealthReport` that `/healthz` renders.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from aldaemon.config import Config


@dataclass
class ProjectHealth:
    """In-memory view of one project's recent cycles."""

    unreachable_since: float | None = None
    failure: str | None = None  # a permanent failure, as "Type: message"
    last_success_at: float | None = None
    last_finished_at: float | None = None

    def note_unreachable(self, *, now: float) -> None:
        """Label Studio could not be reached; the outage starts at the first such cycle."""
        if self.unreachable_since is None:
            self.unreachable_since = now

    def note_failure(self, message: str) -> bool:
        """Record a permanent failure; True when it is news (a first or a different one)."""
        is_new = self.failure != message
        self.failure = message
        return is_new

    def note_finished(self, *, succeeded: bool, now: float) -> str | None:
        """A cycle ended; on success returns the failure it clears (None when none)."""
        self.last_finished_at = now
        if not succeeded:
            return None
        cleared, self.failure = self.failure, None
        self.unreachable_since = None
        self.last_success_at = now
        return cleared

    @property
    def failing(self) -> bool:
        """Failed permanently, or lost Label Studio: `once` exits 1 for either."""
        return bool(self.failure or self.unreachable_since)


@dataclass(frozen=True)
class ReplicaView:
    """With replicas: this one's name, who owns what, and why it cannot own anything."""

    replica: str
    owners: Mapping[int, str]
    problem: str | None  # no PostgreSQL: this replica owns nothing and says so


@dataclass(frozen=True)
class HealthReport:
    """What `/healthz` reports; built here, rendered by the HTTP edge."""

    healthy: bool
    reasons: tuple[str, ...] = ()
    projects: Mapping[str, object] = field(default_factory=dict)
    model_runner: str = "local"  # DaemonConfig.model_runner: "local" or "dask tcp://..."


def stale_after(config: Config) -> float:
    """How old a project's last success may be before /healthz says 503."""
    daemon = config.daemon
    return daemon.stale_after or 3 * daemon.poll_interval + daemon.cycle_timeout


def assess_health(
    *,
    project_ids: Iterable[int],
    health: Mapping[int, ProjectHealth],
    busy: frozenset[int],
    now: float,
    started_at: float,
    stale_limit: float,
    replicas: ReplicaView | None = None,
    model_runner: str = "local",
) -> HealthReport:
    """Healthy when no project failed permanently, none lost Label Studio, all succeeded lately.

    A project that has not succeeded yet is measured from the daemon's start, so a fresh
    daemon is healthy until it has had `stale_limit` seconds to prove itself.

    With replicas, each project shows its `owner`; a replica answers only for the
    projects it owns, and is unhealthy when it cannot reach PostgreSQL (it owns nothing
    then, so it would otherwise look idle and fine).
    """
    reasons: list[str] = []
    projects: dict[str, object] = {}
    if replicas is not None and replicas.problem is not None:
        reasons.append(f"replica {replicas.replica}: {replicas.problem}")
    for project_id in project_ids:
        if replicas is not None and replicas.owners.get(project_id) != replicas.replica:
            projects[str(project_id)] = {"owner": replicas.owners.get(project_id)}
            continue
        state = health.get(project_id)
        last = state.last_success_at if state else None
        age = now - (last if last is not None else started_at)
        entry: dict[str, object] = {
            "last_success_age_s": None if last is None else round(now - last, 1),
            "busy": project_id in busy,
        }
        if replicas is not None:
            entry["owner"] = replicas.replica
        if state is not None and state.failure:
            reasons.append(f"project {project_id} failed: {state.failure}")
            entry["failure"] = state.failure
        elif state is not None and state.unreachable_since is not None:
            reasons.append(f"project {project_id}: Label Studio unreachable")
            entry["unreachable_s"] = round(now - state.unreachable_since, 1)
        elif age > stale_limit:
            reasons.append(f"project {project_id}: no successful cycle for {age:.0f} s")
        projects[str(project_id)] = entry
    return HealthReport(
        healthy=not reasons, reasons=tuple(reasons), projects=projects, model_runner=model_runner
    )
