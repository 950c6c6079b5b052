"""The runtime shared by every command: store, gateway, model worker, metrics.

`Runtime.run_cycle` is the one way a project's cycle runs, from `aldaemon once`, from the
daemon's scheduler and from a webhook trigger. It owns what surrounds a cycle:

- one cycle per project at a time (an asyncio.Lock per project; projects never wait
  for each other, invariant 6);
- a timeout for the whole cycle;
- failure bookkeeping that logs on TRANSITIONS only: `project.failed` once for a permanent
  error (bad token, project gone, unsupported labeling config), shown in `status` and
  `/healthz`, and `project.recovered` once when it works again (the gateway logs
  `labelstudio.unreachable` / `labelstudio.recovered` once per server outage);
- the canonical `cycle.finished` line and the metrics;
- pruning in its own task, so a slow deletion never holds back the next publish.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

import structlog

from aldaemon.config import Config, ProjectConfig
from aldaemon.cycle import (
    Cycle,
    CycleContext,
    CycleReport,
    activate_version,
    own_version_number,
    prune_own_versions,
)
from aldaemon.errors import (
    AldaemonError,
    LabelStudioAuthError,
    LabelStudioRefused,
    LabelStudioUnreachable,
    ProjectNotFound,
    StateError,
    StateLockedError,
)
from aldaemon.labelstudio.gateway import LabelStudioGateway, count_requests
from aldaemon.metrics import Metrics
from aldaemon.model.worker import ModelWorker
from aldaemon.store import Store, quarantine_database

log = structlog.get_logger(__name__)
WEBHOOK_ACTIONS = (
    "ANNOTATION_CREATED",
    "ANNOTATIONS_CREATED",
    "ANNOTATION_UPDATED",
    "ANNOTATIONS_DELETED",
    "TASKS_CREATED",
    "TASKS_DELETED",
)


def error_kind(exc: BaseException) -> str:
    """A short label for metrics and health: unreachable | auth | not_found | refused | other."""
    if isinstance(exc, LabelStudioUnreachable):
        return "unreachable"
    if isinstance(exc, LabelStudioAuthError):
        return "auth"
    if isinstance(exc, ProjectNotFound):
        return "not_found"
    if isinstance(exc, LabelStudioRefused):
        return "refused"
    return "other"


@dataclass
class ProjectHealth:
    """In-memory view of one project's recent cycles, for logs on transitions and /healthz."""

    unreachable_since: float | None = None
    failure: str | None = None
    last_success_at: float | None = None
    last_finished_at: float | None = None
    prune_pending: bool = True


@dataclass
class OnceResult:
    lines: list[str] = field(default_factory=list)
    all_succeeded: bool = True


class Runtime:
    """Opens the shared resources; use as `async with Runtime(config) as runtime:`."""

    def __init__(self, config: Config, *, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.store: Store | None = None
        self.gateway: LabelStudioGateway | None = None
        self.worker: ModelWorker | None = None
        self.health: dict[int, ProjectHealth] = {p.id: ProjectHealth() for p in config.projects}
        self._locks: dict[int, asyncio.Lock] = {}
        self._prunes: dict[int, asyncio.Task[None]] = {}
        self._retired_gateways: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Runtime:
        self.store = Store.open(self.config.state.dir)
        self.gateway = self._make_gateway(self.config)
        self.worker = ModelWorker(max_workers=min(2, max(1, len(self.config.projects))))
        for project in self.config.projects:
            meta = self.store.get_meta(project.id)
            self.health.setdefault(project.id, ProjectHealth()).failure = meta.failure
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.cancel_prunes()
        if self._retired_gateways:
            await asyncio.gather(*self._retired_gateways, return_exceptions=True)
        if self.worker is not None:
            self.worker.shutdown()
        if self.gateway is not None:
            await self.gateway.close()
        if self.store is not None:
            self.store.close()

    @staticmethod
    def _make_gateway(config: Config) -> LabelStudioGateway:
        return LabelStudioGateway(
            url=config.labelstudio.url,
            token=config.labelstudio.token,
            timeout=config.labelstudio.timeout,
            max_attempts=config.labelstudio.max_attempts,
        )

    async def reload(self, config: Config) -> None:
        """Take a new, already validated config (SIGHUP): new project set, maybe new gateway.

        The gateway is replaced only when `[labelstudio]` changed, and the old one is
        closed only after the cycles and prunes that hold it have finished: closing it
        under them would fail their requests half-way through an upload.
        """
        old_gateway = self.gateway
        labelstudio_changed = config.labelstudio != self.config.labelstudio
        self.config = config
        for project in config.projects:
            if project.id not in self.health:
                failure = self.store.get_meta(project.id).failure if self.store else None
                self.health[project.id] = ProjectHealth(failure=failure)
        for gone in set(self.health) - {p.id for p in config.projects}:
            del self.health[gone]
        if old_gateway is None or not labelstudio_changed:
            return
        self.gateway = self._make_gateway(config)
        retire = asyncio.create_task(self._close_when_unused(old_gateway), name="gateway-retire")
        self._retired_gateways.add(retire)
        retire.add_done_callback(self._retired_gateways.discard)

    async def _close_when_unused(self, gateway: LabelStudioGateway) -> None:
        """Wait until every cycle and prune that started before the swap is done, then close."""
        for lock in list(self._locks.values()):
            async with lock:
                pass
        await self.wait_for_prunes()
        await gateway.close()

    def context(self, project: ProjectConfig) -> CycleContext:
        assert self.store is not None and self.gateway is not None and self.worker is not None
        return CycleContext(
            project=project,
            daemon=self.config.daemon,
            gateway=self.gateway,
            store=self.store,
            worker=self.worker,
            artifacts_dir=self.config.state.dir / "models" / str(project.id),
        )

    def is_busy(self, project_id: int) -> bool:
        lock = self._locks.get(project_id)
        return lock is not None and lock.locked()

    async def run_cycle(
        self,
        project: ProjectConfig,
        *,
        force_resync: bool = False,
        forced_training: bool = False,
    ) -> CycleReport:
        """Run one cycle of `project`; never raises for a cycle's own failure."""
        lock = self._locks.setdefault(project.id, asyncio.Lock())
        async with lock:
            cycle = Cycle(
                self.context(project), force_resync=force_resync, forced_training=forced_training
            )
            with structlog.contextvars.bound_contextvars(
                project_id=project.id, cycle_id=cycle.report.cycle_id
            ):
                await self._run_guarded(cycle, project)
                self._after_cycle(project, cycle.report)
                return cycle.report

    async def _run_guarded(self, cycle: Cycle, project: ProjectConfig) -> None:
        started = time.perf_counter()
        # Counted per cycle, not as a difference of the shared gateway's total: other
        # projects' cycles and prunes send requests at the same time.
        with count_requests() as tally:
            try:
                async with asyncio.timeout(self.config.daemon.cycle_timeout):
                    await cycle.run()
            except TimeoutError:
                cycle.report.outcome = "failed"
                cycle.report.error = (
                    f"cycle took longer than {self.config.daemon.cycle_timeout:g} s"
                )
            except LabelStudioUnreachable as exc:
                self._note_unreachable(project.id, exc)
                self.metrics.labelstudio_errors.labels(str(project.id), "unreachable").inc()
            except AldaemonError as exc:
                self._note_failure(project.id, exc)
                self.metrics.labelstudio_errors.labels(str(project.id), error_kind(exc)).inc()
            except Exception as exc:  # a bug: keep the daemon alive, keep the traceback
                log.exception("cycle.crashed", error=f"{type(exc).__name__}: {exc}")
                cycle.report.outcome = "failed"
                cycle.report.error = f"{type(exc).__name__}: {exc}"
            finally:  # also when cancelled (shutdown), as before
                report = cycle.report
                report.counts["http_requests"] = tally.requests
                self.metrics.labelstudio_requests.labels(str(project.id)).inc(tally.requests)
                self.metrics.cycle_duration.labels(str(project.id)).observe(
                    time.perf_counter() - started
                )
                for step, seconds in report.seconds.items():
                    self.metrics.step_duration.labels(str(project.id), step).observe(seconds)

    def _note_unreachable(self, project_id: int, exc: LabelStudioUnreachable) -> None:
        health = self.health.setdefault(project_id, ProjectHealth())
        # The gateway logs `labelstudio.unreachable` once per server; here we only track
        # each project's outage for /healthz and `once`'s exit code.
        if health.unreachable_since is None:
            health.unreachable_since = time.time()

    def _note_failure(self, project_id: int, exc: BaseException) -> None:
        health = self.health.setdefault(project_id, ProjectHealth())
        message = f"{type(exc).__name__}: {exc}"
        if health.failure != message:
            log.error("project.failed", error=message, kind=error_kind(exc))
        health.failure = message
        assert self.store is not None
        try:
            self.store.set_meta(project_id, failure=message)
        except StateError as state_error:  # the failure itself may be a broken store
            log.error("state.write_failed", error=str(state_error))

    def _after_cycle(self, project: ProjectConfig, report: CycleReport) -> None:
        health = self.health.setdefault(project.id, ProjectHealth())
        now = time.time()
        health.last_finished_at = now
        failed = report.outcome == "failed"
        if not failed:
            health.unreachable_since = None
            if health.failure is not None:
                log.info("project.recovered", previous_failure=health.failure)
                health.failure = None
                assert self.store is not None
                self.store.set_meta(project.id, failure=None)
            health.last_success_at = now
            self.metrics.last_success.labels(str(project.id)).set(now)
        pid = str(project.id)
        self.metrics.cycles.labels(pid, report.outcome).inc()
        if "activated" in report.counts:
            health.prune_pending = True
            self.metrics.trainings.labels(pid).inc()
        self.metrics.predictions_uploaded.labels(pid).inc(
            report.counts.get("predictions_uploaded", 0)
        )
        self._update_label_gauges(project)
        level = "warning" if failed else "info"
        getattr(log, level)("cycle.finished", **report.as_log_fields())
        if health.prune_pending and not failed:
            self._start_prune(project)

    def _update_label_gauges(self, project: ProjectConfig) -> None:
        assert self.store is not None
        pid = str(project.id)
        for label, count in self.store.label_counts(project.id).items():
            self.metrics.labels.labels(pid, label).set(count)
        since = self.store.label_changes_since_training(project.id)
        self.metrics.labels_since_training.labels(pid).set(since)

    def _start_prune(self, project: ProjectConfig) -> None:
        running = self._prunes.get(project.id)
        if running is not None and not running.done():
            return
        self._prunes[project.id] = asyncio.create_task(
            self._prune(project), name=f"prune-{project.id}"
        )

    async def _prune(self, project: ProjectConfig) -> None:
        health = self.health.setdefault(project.id, ProjectHealth())
        with (
            structlog.contextvars.bound_contextvars(project_id=project.id),
            count_requests() as tally,
        ):
            try:
                pruned = await prune_own_versions(self.context(project))
            except AldaemonError as exc:
                log.warning("prune.failed", error=str(exc))
                return
            except Exception:
                log.exception("prune.crashed")
                return
            finally:  # a prune's requests are its project's too, though in no cycle's report
                self.metrics.labelstudio_requests.labels(str(project.id)).inc(tally.requests)
        health.prune_pending = len(pruned) >= project.predictions.prune_per_cycle > 0
        self.metrics.versions_pruned.labels(str(project.id)).inc(len(pruned))

    async def wait_for_prunes(self) -> None:
        tasks = [task for task in self._prunes.values() if not task.done()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def cancel_prunes(self) -> None:
        """Stop prunes in progress (shutdown grace expired); the next start prunes again.

        A version half-deleted on the server is safe: deleting it again removes the rest.
        """
        tasks = [task for task in self._prunes.values() if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def run_once(config: Config) -> OnceResult:
    """`aldaemon once`: one full cycle for every project, concurrently."""
    result = OnceResult()
    async with Runtime(config) as runtime:
        reports: Sequence[CycleReport] = await asyncio.gather(
            *(runtime.run_cycle(project) for project in config.projects)
        )
        await runtime.wait_for_prunes()
        for report in reports:
            result.lines.append(summary_line(report, runtime.health.get(report.project_id)))
            if report.outcome == "failed" or report.error is not None:
                result.all_succeeded = False
            health = runtime.health.get(report.project_id)
            if health is not None and (health.failure or health.unreachable_since):
                result.all_succeeded = False
    return result


def summary_line(report: CycleReport, health: ProjectHealth | None) -> str:
    counts = report.counts
    parts = [
        f"project {report.project_id}: {report.outcome}",
        f"read {counts.get('tasks_read', 0)} task(s)",
        f"+{counts.get('annotations_created', 0)}"
        f" ~{counts.get('annotations_updated', 0)}"
        f" -{counts.get('annotations_deleted', 0)} annotation(s)",
    ]
    if report.version:
        parts.append(f"version {report.version}")
    if counts.get("predictions_uploaded"):
        parts.append(f"{counts['predictions_uploaded']} prediction(s) uploaded")
    if report.decision:
        parts.append(report.decision)
    parts.append(f"{counts.get('http_requests', 0)} request(s)")
    if health is not None and health.failure:
        parts.append(f"FAILED: {health.failure}")
    elif health is not None and health.unreachable_since:
        parts.append("Label Studio unreachable")
    elif report.error:
        parts.append(f"error: {report.error}")
    return "; ".join(parts)


def _project(config: Config, project_id: int) -> ProjectConfig:
    project = config.project(project_id)
    if project is None:
        configured = ", ".join(str(p.id) for p in config.projects)
        raise AldaemonError(f"project {project_id} is not in the config (configured: {configured})")
    return project


async def pin_version(config: Config, *, project_id: int, version: str) -> str:
    """Activate one of our own complete versions and stop automatic activation."""
    project = _project(config, project_id)
    store = Store.open(config.state.dir, lock=False)
    try:
        row = store.get_version(project_id, version)
        if row is None or own_version_number(project.predictions.version_prefix, version) is None:
            raise AldaemonError(
                f"{version} is not a version aldaemon created for project {project_id}"
            )
        if row.state not in ("active", "superseded"):
            raise AldaemonError(f"{version} is {row.state}; only a complete version can be pinned")
        async with Runtime._make_gateway(config) as gateway:
            counts = await gateway.model_version_counts(project_id)
            if counts.get(version, 0) < (row.n_predictions or 0):
                raise AldaemonError(
                    f"{version} has {counts.get(version, 0)} of {row.n_predictions} predictions "
                    "in Label Studio; pin a complete version"
                )
            ctx = CycleContext(
                project=project,
                daemon=config.daemon,
                gateway=gateway,
                store=store,
                worker=None,  # type: ignore[arg-type]  # activation needs no model
                artifacts_dir=config.state.dir,
            )
            # The pin is recorded first: a running daemon that finishes a version meanwhile
            # sees it and does not activate over it; prune never deletes it.
            previous_pin = store.get_meta(project_id).pinned_version
            store.set_meta(project_id, pinned_version=version)
            try:
                await activate_version(ctx, version)
            except BaseException:
                store.set_meta(project_id, pinned_version=previous_pin)
                raise
    finally:
        store.close()
    log.info("version.pinned", project_id=project_id, version=version)
    return (
        f"project {project_id}: {version} is active and pinned; "
        f"`aldaemon unpin --project {project_id}` resumes automatic activation"
    )


def unpin_version(config: Config, *, project_id: int) -> str:
    _project(config, project_id)
    store = Store.open(config.state.dir, lock=False)
    try:
        pinned = store.get_meta(project_id).pinned_version
        store.set_meta(project_id, pinned_version=None)
    finally:
        store.close()
    log.info("version.unpinned", project_id=project_id, was=pinned)
    if pinned is None:
        return f"project {project_id}: nothing was pinned"
    return f"project {project_id}: {pinned} unpinned; the next new version becomes active"


async def install_webhook(config: Config, *, project_id: int, url: str) -> str:
    """Register our webhook in Label Studio, with the shared secret header."""
    _project(config, project_id)
    secret = config.daemon.webhook_secret
    if secret is None:
        raise AldaemonError(
            "no webhook secret configured: set [daemon].webhook_secret_file, "
            "ALDAEMON_WEBHOOK_SECRET or the credential webhook-secret first"
        )
    async with Runtime._make_gateway(config) as gateway:
        try:
            webhook_id = await gateway.create_webhook(
                project_id, url=url, secret=secret, actions=WEBHOOK_ACTIONS
            )
        except LabelStudioRefused as exc:
            if (
                exc.status_code == 403
                or "private" in str(exc).lower()
                or "ssrf" in str(exc).lower()
            ):
                raise AldaemonError(
                    f"Label Studio refused the webhook URL {url}: {exc}. Label Studio blocks "
                    "webhooks to local and private addresses unless it runs with "
                    "SSRF_PROTECTION_ENABLED=false; set that on the Label Studio server or use "
                    "an address it accepts"
                ) from None
            raise
    return f"project {project_id}: webhook {webhook_id} -> {url}"


async def rebuild_state(config: Config, *, project_id: int) -> str:
    """Forget a project's local tasks and labels, re-read them all, retrain."""
    project = _project(config, project_id)
    try:
        store = Store.open(config.state.dir)
    except StateLockedError:
        raise
    except StateError as exc:
        moved = quarantine_database(config.state.dir, now=time.time())
        log.warning("state.quarantined", error=str(exc), moved_to=str(moved))
        store = Store.open(config.state.dir)
    store.wipe_project(project_id)
    store.close()
    async with Runtime(config) as runtime:
        report = await runtime.run_cycle(project, force_resync=True, forced_training=True)
        line = summary_line(report, runtime.health.get(project_id))
    return f"rebuilt: {line}"
