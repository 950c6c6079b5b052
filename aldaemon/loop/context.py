"""What every step of a project's cycle shares: its context, and the report it fills in."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aldaemon.config import DaemonConfig, ProjectConfig
from aldaemon.labelstudio.gateway import LabelStudioGateway
from aldaemon.model.jobs import ModelJobs
from aldaemon.store import Store
from aldaemon.sync.policy import IntervalAnchor


@dataclass
class IntervalClocks:
    """What one project's cycles carry from one to the next to measure `min_interval` and
    `resync_interval` on the monotonic clock (see `sync.policy.seconds_since_attempt`)."""

    training: IntervalAnchor | None = None  # since the last training attempt
    reported_behind: float = 0.0  # the step back last logged, so each step is logged once
    resync: IntervalAnchor | None = None  # since the last full id listing


@dataclass
class CycleContext:
    """Everything one project's cycle needs; built once per project by the service."""

    project: ProjectConfig
    daemon: DaemonConfig
    gateway: LabelStudioGateway
    store: Store
    worker: ModelJobs  # a local process pool, or a Dask cluster
    artifacts_dir: Path
    clock: Callable[[], float] = time.time  # wall clock: stored times, for display too
    monotonic: Callable[[], float] = time.monotonic  # intervals within this process
    intervals: IntervalClocks = field(default_factory=IntervalClocks)
    # Replicas: does this replica still own the project, asked right before a write to
    # Label Studio (loop/fence.py); alone, it always does.
    still_owner: Callable[[int], bool] = lambda _project_id: True


@dataclass
class CycleReport:
    """What one cycle did: the fields of the canonical `cycle.finished` line."""

    project_id: int
    cycle_id: str
    outcome: str = "ok"  # ok | idle | failed | cancelled
    decision: str = ""
    version: str | None = None
    error: str | None = None
    backend_version: str | None = None  # the ML backend's own version, for its projects
    counts: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def count(self, name: str, value: int) -> None:
        if value:
            self.counts[name] = self.counts.get(name, 0) + value

    def as_log_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "outcome": self.outcome,
            "decision": self.decision,
            "version": self.version,
            **self.counts,
            "duration_s": round(sum(self.seconds.values()), 3),
            "steps_s": {k: round(v, 3) for k, v in self.seconds.items()},
        }
        if self.backend_version:
            fields["backend_version"] = self.backend_version
        if self.error:
            fields["error"] = self.error
        return fields
