"""One `ProjectRunner` per project: everything the process knows about that project's cycles.

It owns, for its project alone:

- the lock: one cycle at a time, whoever asks (`once`, the scheduler, a webhook, a cron
  run); projects never wait for each other (invariant 6);
- the scheduled runs and the rerun flag: a poll requested while a scheduled run is going
  becomes one more cycle right after it, however many requests came meanwhile;
- the health transitions (`project.failed` once, `project.recovered` once);
- the canonical `cycle.finished` line and the cycle's metrics;
- its prune task, so a slow deletion never holds back the next publish; it is re-armed
  after each new activation and while a prune hits its per-cycle bound.

"Is this project busy?" has one answer, `busy`. The shared resources (store, gateway,
worker, metrics, the current config) belong to the `Runtime` the runner is given.

    scheduled run:  [lock: cycle] ---(rerun requested?)--> [lock: cycle] -> done
    poll request:        ^ sets the flag while a run is going
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from aldaemon.config import ProjectConfig
from aldaemon.errors import (
    AldaemonError,
    LabelStudioUnreachable,
    OwnershipLost,
    StateError,
    error_kind,
)
from aldaemon.labelstudio import count_requests
from aldaemon.loop.context import CycleReport
from aldaemon.loop.cycle import Cycle
from aldaemon.loop.prune import prune_own_versions
from aldaemon.service.health import ProjectHealth
from aldaemon.service.metrics import project_label
from aldaemon.sync.label_sets import trainable_label_counts
from aldaemon.sync.versions import label_changes_since_training

if TYPE_CHECKING:
    from aldaemon.service.runtime import Runtime

log = structlog.get_logger(__name__)


class ProjectRunner:
    """Runs one project's cycles and prunes; see the module docstring for what it owns."""

    def __init__(self, project_id: int, *, runtime: Runtime, failure: str | None = None) -> None:
        """`failure` is the permanent failure the store remembers from an earlier run."""
        self.project_id = project_id
        self.health = ProjectHealth(failure=failure)
        self._runtime = runtime
        self._lock = asyncio.Lock()
        self._scheduled_runs = 0
        self._rerun_requested = False
        self._prune: asyncio.Task[None] | None = None
        self._prune_pending = True

    @property
    def busy(self) -> bool:
        """A cycle is running, or a scheduled run is going (waiting for its turn included)."""
        return self._scheduled_runs > 0 or self._lock.locked()

    @property
    def _label(self) -> str:
        """The `project` label of this runner's metrics."""
        return project_label(self.project_id)

    # --- cycles ---------------------------------------------------------------------------

    async def run_cycle(
        self, project: ProjectConfig, *, force_resync: bool = False, forced_training: bool = False
    ) -> CycleReport:
        """Run one cycle of `project` in its turn; never raises for a cycle's own failure."""
        async with self._lock:
            return await self._cycle(
                project, force_resync=force_resync, forced_training=forced_training
            )

    async def run_scheduled(
        self,
        *,
        forced_training: bool,
        stopping: asyncio.Event,
        on_progress: Callable[[], None],
    ) -> None:
        """One scheduled run: a cycle, plus one more when a poll was requested meanwhile.

        The turn is taken BEFORE checking `stopping`, so a run that waited for a running
        cycle does not start a new one once shutdown began. Only the first cycle of a
        forced (cron) run forces training.
        """
        self._scheduled_runs += 1
        try:
            forced = forced_training
            while True:
                async with self._lock:
                    project = self._runtime.config.project(self.project_id)
                    if stopping.is_set() or project is None:
                        return
                    if not self._runtime.still_owner(self.project_id):
                        on_progress()  # the scheduler works; another replica has it
                        return
                    self._rerun_requested = False
                    await self._cycle(project, forced_training=forced)
                    on_progress()
                if not self._rerun_requested:
                    return
                forced = False
                log.debug(
                    "poll.repeated", project_id=self.project_id, reason="requested during cycle"
                )
        finally:
            self._scheduled_runs -= 1

    def request_rerun(self) -> bool:
        """While a scheduled run is going, ask it for one more cycle; False when there is none.

        Not a job modification: APScheduler drops a run while the same job still runs
        (max_instances), so a change made during a long training would wait a whole poll.
        """
        if not self._scheduled_runs:
            return False
        self._rerun_requested = True
        log.debug("poll.requested_after_cycle", project_id=self.project_id)
        return True

    async def _cycle(
        self, project: ProjectConfig, *, force_resync: bool = False, forced_training: bool = False
    ) -> CycleReport:
        """One cycle, the lock already held."""
        cycle = Cycle(
            self._runtime.context(project),
            force_resync=force_resync,
            forced_training=forced_training,
        )
        with structlog.contextvars.bound_contextvars(
            project_id=project.id, cycle_id=cycle.report.cycle_id
        ):
            await self._run_guarded(cycle)
            self._after_cycle(project, cycle.report)
            return cycle.report

    async def _run_guarded(self, cycle: Cycle) -> None:
        metrics = self._runtime.metrics
        timeout = self._runtime.config.daemon.cycle_timeout
        started = time.perf_counter()
        # Counted per cycle, not as a difference of the shared gateway's total: other
        # projects' cycles and prunes send requests at the same time.
        with count_requests() as tally:
            try:
                async with asyncio.timeout(timeout):
                    await cycle.run()
            except TimeoutError:
                cycle.report.outcome = "failed"
                cycle.report.error = f"cycle took longer than {timeout:g} s"
            except OwnershipLost as exc:  # no failure of the project: its new owner goes on
                self._mark_failed(cycle.report, exc)
                log.warning("ownership.lost_mid_cycle", error=str(exc))
            except LabelStudioUnreachable as exc:
                self._mark_failed(cycle.report, exc)
                self.health.note_unreachable(now=time.time())
                metrics.record_labelstudio_error(self.project_id, exc)
            except AldaemonError as exc:
                self._mark_failed(cycle.report, exc)
                self._note_failure(exc)
                metrics.record_labelstudio_error(self.project_id, exc)
            except Exception as exc:  # a bug: keep the daemon alive, keep the traceback
                log.exception("cycle.crashed", error=f"{type(exc).__name__}: {exc}")
                cycle.report.outcome = "failed"
                cycle.report.error = f"{type(exc).__name__}: {exc}"
            finally:  # also when cancelled (shutdown), as before
                report = cycle.report
                report.counts["http_requests"] = tally.requests
                metrics.labelstudio_requests.labels(self._label).inc(tally.requests)
                metrics.cycle_duration.labels(self._label).observe(time.perf_counter() - started)
                for step, seconds in report.seconds.items():
                    metrics.step_duration.labels(self._label, step).observe(seconds)

    @staticmethod
    def _mark_failed(report: CycleReport, exc: AldaemonError) -> None:
        """A cycle that raised failed, whatever step raised (even before its own handling)."""
        report.outcome = "failed"
        if report.error is None:
            report.error = f"{type(exc).__name__}: {exc}"

    def _note_failure(self, exc: AldaemonError) -> None:
        message = f"{type(exc).__name__}: {exc}"
        if not self.health.note_failure(message):
            return  # logged and stored when it was news; a full disk would only fail again
        log.error("project.failed", error=message, kind=error_kind(exc))
        store = self._runtime.store
        assert store is not None
        try:
            store.set_meta(self.project_id, failure=message)
        except StateError as state_error:  # the failure itself may be a broken store
            log.error("state.write_failed", error=str(state_error))

    def _after_cycle(self, project: ProjectConfig, report: CycleReport) -> None:
        metrics = self._runtime.metrics
        now = time.time()
        failed = report.outcome == "failed"
        cleared = self.health.note_finished(succeeded=not failed, now=now)
        if cleared is not None:
            log.info("project.recovered", previous_failure=cleared)
            store = self._runtime.store
            assert store is not None
            store.set_meta(self.project_id, failure=None)
        if not failed:
            metrics.record_success(self.project_id, at=now)
        metrics.cycles.labels(self._label, report.outcome).inc()
        if "activated" in report.counts:
            self._prune_pending = True
            metrics.trainings.labels(self._label).inc()
        metrics.predictions_uploaded.labels(self._label).inc(
            report.counts.get("predictions_uploaded", 0)
        )
        self._update_label_gauges(project)
        level = "warning" if failed else "info"
        getattr(log, level)("cycle.finished", **report.as_log_fields())
        if self._prune_pending and not failed:
            self._start_prune(project)

    def _update_label_gauges(self, project: ProjectConfig) -> None:
        store = self._runtime.store
        assert store is not None
        metrics = self._runtime.metrics
        metrics.team.update(self._label, store, project)
        trained, not_in_config = trainable_label_counts(
            store.annotated_tasks(self.project_id),
            store.get_meta(self.project_id).schema,
            project.labels.policy,
        )
        metrics.set_label_counts(self._label, trained=trained, not_in_config=not_in_config)
        since = label_changes_since_training(
            label_changes=store.sync_state(self.project_id).label_changes,
            versions=store.list_versions(self.project_id),
        )
        metrics.labels_since_training.labels(self._label).set(since)

    # --- prune ----------------------------------------------------------------------------

    def _start_prune(self, project: ProjectConfig) -> None:
        if self._prune is not None and not self._prune.done():
            return
        self._prune = asyncio.create_task(self._run_prune(project), name=f"prune-{project.id}")

    async def _run_prune(self, project: ProjectConfig) -> None:
        metrics = self._runtime.metrics
        with (
            structlog.contextvars.bound_contextvars(project_id=project.id),
            count_requests() as tally,
        ):
            try:
                pruned = await prune_own_versions(self._runtime.context(project))
            except AldaemonError as exc:
                log.warning("prune.failed", error=str(exc))
                return
            except Exception:
                log.exception("prune.crashed")
                return
            finally:  # a prune's requests are its project's too, though in no cycle's report
                metrics.labelstudio_requests.labels(self._label).inc(tally.requests)
        # A prune that hit its per-cycle bound leaves more: prune again after the next cycle.
        self._prune_pending = len(pruned) >= project.predictions.prune_per_cycle > 0
        metrics.versions_pruned.labels(self._label).inc(len(pruned))

    async def wait_for_prune(self) -> None:
        """Wait for the prune in progress, if any (its failures are logged, not raised)."""
        if self._prune is not None and not self._prune.done():
            await asyncio.gather(self._prune, return_exceptions=True)

    async def cancel_prune(self) -> None:
        """Stop the prune in progress; a version half-deleted is deleted again next time."""
        if self._prune is not None and not self._prune.done():
            self._prune.cancel()
            await asyncio.gather(self._prune, return_exceptions=True)

    async def wait_for_cycle(self) -> None:
        """Wait until no cycle holds the lock (the one running now, if any, is done)."""
        async with self._lock:
            pass
