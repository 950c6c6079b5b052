"""`aldaemon run`: the service shell around the runtime's `ProjectRunner`s.

    start: open state -> HTTP server -> scheduler -> READY=1
    every poll_interval (+jitter), per project ........ run_cycle      (APScheduler job)
    cron, per project (optional) ....................... run_cycle(forced_training)
    webhook ... debounce ... idle project: move its poll job to "now"
                             busy project: one more cycle right after the running one
    heartbeat .......................................... WATCHDOG=1 when progress is real
    SIGHUP ...... RELOADING=1, validate new file, swap, diff jobs, READY=1 (bad file: keep old)
    SIGTERM/INT . STOPPING=1, no new cycles, running ones get `shutdown_grace`, exit 0
                  (grace over, or a second signal: cancel them and kill the training
                  worker; every step is resumable, so the next start carries on)

The jobs and their defaults are in schedule.py.

Why a webhook for a busy project is not a `job.modify(next_run_time=now)`: APScheduler
refuses a run while the previous one of the same job is still going (max_instances) and
drops it, so a change made during a long training would wait a whole poll_interval.
The running job instead loops once more (`ProjectRunner.request_rerun`).

The shell holds no per-project state: each project's lock, rerun flag, health and prune
task live in its runner; the shell owns the scheduler, the webhook debouncer, signals,
reload, the watchdog and the HTTP edge.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from aldaemon.config import Config, ProjectConfig, load_config
from aldaemon.errors import AldaemonError, ConfigError
from aldaemon.service import schedule, systemd
from aldaemon.service.debounce import PollDebouncer
from aldaemon.service.health import stale_after
from aldaemon.service.http import HttpEdge
from aldaemon.service.logs import register_secret
from aldaemon.service.replicas import keep_ownership
from aldaemon.service.runtime import Runtime

log = structlog.get_logger(__name__)

WEBHOOK_DEBOUNCE_SECONDS = 1.0
# Without systemd's watchdog the heartbeat still runs, so a stall shows in the log.
DEFAULT_HEARTBEAT_SECONDS = 15.0


def watchdog_due(*, busy: bool, seconds_since_progress: float, stale_limit: float) -> bool:
    """Ping the watchdog only while the daemon makes progress, not merely while a timer ticks.

    Progress: a cycle is running (it has its own timeout), or one finished within the
    stale limit. A daemon whose scheduler silently died keeps its loop alive but stops
    finishing cycles; withholding WATCHDOG=1 then lets systemd restart it.
    """
    return busy or seconds_since_progress < stale_limit


@dataclass(frozen=True)
class ReloadPlan:
    """What a SIGHUP changes; `refused` says why the new config cannot be taken live."""

    added: tuple[int, ...] = ()
    removed: tuple[int, ...] = ()
    restart_server: bool = False
    refused: str | None = None


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """Compare two valid configs; the state dir and the model runner are fixed for the
    life of the process (jobs may be in flight on the runner)."""
    if new.state.dir != old.state.dir:
        return ReloadPlan(refused="state.dir: changing it needs a restart")
    if new.daemon.dask_scheduler != old.daemon.dask_scheduler:
        return ReloadPlan(refused="daemon.dask_scheduler: changing it needs a restart")
    old_ids = {p.id for p in old.projects}
    new_ids = {p.id for p in new.projects}
    return ReloadPlan(
        added=tuple(sorted(new_ids - old_ids)),
        removed=tuple(sorted(old_ids - new_ids)),
        restart_server=(
            new.daemon.listen != old.daemon.listen
            or new.daemon.webhook_secret != old.daemon.webhook_secret
        ),
    )


def _register_secrets(config: Config) -> None:
    """Keep this config's secrets out of every log line, even one a library writes."""
    register_secret(config.labelstudio.token.reveal())
    if config.daemon.webhook_secret is not None:
        register_secret(config.daemon.webhook_secret.reveal())


class Watchdog:
    """The systemd watchdog's side of the daemon: the last progress, and the heartbeat that
    pings only while progress is fresh (see `watchdog_due`)."""

    def __init__(self) -> None:
        self.last_progress = time.monotonic()

    def note_progress(self) -> None:
        self.last_progress = time.monotonic()

    async def heartbeat(
        self, *, busy: Callable[[], bool], stale_limit: Callable[[], float]
    ) -> None:
        interval = systemd.watchdog_interval()
        period = interval / 2 if interval else DEFAULT_HEARTBEAT_SECONDS
        while True:
            await asyncio.sleep(period)
            idle_for = time.monotonic() - self.last_progress
            if watchdog_due(
                busy=busy(), seconds_since_progress=idle_for, stale_limit=stale_limit()
            ):
                systemd.watchdog()
            else:
                log.warning("watchdog.withheld", seconds_without_progress=round(idle_for))


class Daemon:
    """Schedules every project's cycles and answers signals; `serve()` runs until stopped."""

    def __init__(self, runtime: Runtime, *, config_path: str) -> None:
        self.runtime = runtime
        self.config_path = config_path
        self.started_at = time.time()
        self.stopping = asyncio.Event()
        self._forced_stop = asyncio.Event()
        self.scheduler = schedule.new_scheduler()
        self.debouncer = PollDebouncer(delay=WEBHOOK_DEBOUNCE_SECONDS, fire=self.poll_now)
        self.server: HttpEdge | None = None
        self.watchdog = Watchdog()
        self._cycle_tasks: set[asyncio.Task[Any]] = set()
        self._reload_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()

    # --- lifecycle ----------------------------------------------------------------------

    async def serve(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit status (0)."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self.stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        try:
            await self._start_server()
            self.scheduler.start()
            self._schedule_projects(self.runtime.config.projects)
            heartbeat = asyncio.create_task(
                self.watchdog.heartbeat(
                    busy=lambda: bool(self.runtime.busy_projects()),
                    stale_limit=lambda: stale_after(self.runtime.config),
                ),
                name="heartbeat",
            )
            if self.runtime.ownership is not None:
                self._spawn(keep_ownership(self.runtime, poll_now=self.poll_now), name="ownership")
            systemd.ready()
            self._announce_status()
            log.info(
                "daemon.started",
                projects=[p.id for p in self.runtime.config.projects],
                listen=self.runtime.config.daemon.listen or None,
                poll_interval=self.runtime.config.daemon.poll_interval,
            )
            await self.stopping.wait()
            systemd.stopping()
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            await self._shutdown()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
        return 0

    def stop(self, signal_name: str = "stop") -> None:
        """Begin shutdown; a second call cuts the grace period short."""
        if not self.stopping.is_set():
            log.info("daemon.stopping", signal=signal_name)
            self.stopping.set()
            return
        if not self._forced_stop.is_set():
            log.warning("daemon.stop_forced", signal=signal_name)
            self._forced_stop.set()

    async def _shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.pause()
        await self.debouncer.aclose()
        grace = self.runtime.config.daemon.shutdown_grace
        busy = self.runtime.busy_projects()
        if busy:
            log.info("daemon.waiting_for_cycles", projects=busy, grace_s=grace)
        if not await self._drain(grace):
            log.warning(
                "daemon.grace_expired",
                grace_s=grace,
                action="running cycles cancelled; they resume at the next start",
            )
            await self._cancel_work()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self.server is not None:
            await self.server.stop()
        log.info("daemon.stopped")

    async def _drain(self, grace: float) -> bool:
        """Wait for running cycles, then prunes; False when grace or a second signal ends it."""

        async def work_done() -> None:
            while pending := {t for t in self._cycle_tasks if not t.done()}:
                await asyncio.wait(pending)
            await self.runtime.wait_for_prunes()

        drained = asyncio.create_task(work_done(), name="drain")
        forced = asyncio.create_task(self._forced_stop.wait(), name="forced-stop")
        await asyncio.sleep(0)  # with nothing to wait for, `drained` is done after one step
        await asyncio.wait({drained, forced}, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
        finished = drained.done()
        for task in (drained, forced):
            task.cancel()
        await asyncio.gather(drained, forced, return_exceptions=True)
        return finished

    async def _cancel_work(self) -> None:
        """Cancel cycles and prunes, and stop a training in its worker process at once."""
        cycles = [t for t in self._cycle_tasks if not t.done()]
        for task in cycles:
            task.cancel()
        # Waiting for an abandoned fit would overrun systemd's stop timeout; the version
        # stays in "training" and the next start trains it again.
        if self.runtime.worker is not None:
            await asyncio.to_thread(self.runtime.worker.shutdown, kill_running=True)
        await asyncio.gather(*cycles, return_exceptions=True)
        await self.runtime.cancel_prunes()

    async def _start_server(self) -> None:
        config = self.runtime.config
        if not config.daemon.listen:
            return
        server = HttpEdge(
            listen=config.daemon.listen,
            webhook_secret=config.daemon.webhook_secret,
            metrics=self.runtime.metrics,
            known_projects=lambda: [p.id for p in self.runtime.config.projects],
            request_poll=self.debouncer.request,
            health=lambda: self.runtime.health_report(now=time.time(), started_at=self.started_at),
        )
        try:
            await server.start()
        except OSError as exc:
            raise AldaemonError(
                f"cannot listen on {config.daemon.listen} ([daemon].listen): {exc.strerror}"
            ) from None
        self.server = server

    def _announce_status(self) -> None:
        systemd.status(f"serving {len(self.runtime.config.projects)} project(s)")

    def _spawn(self, coroutine: Coroutine[Any, Any, None], *, name: str) -> None:
        """Run a background task and keep a reference (the loop holds only weak ones)."""
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- scheduling -----------------------------------------------------------------------

    def _schedule_projects(self, projects: Iterable[ProjectConfig]) -> None:
        """(Re)create each project's jobs; the first poll comes now, staggered."""
        schedule.schedule_projects(
            self.scheduler,
            projects,
            poll_interval=self.runtime.config.daemon.poll_interval,
            run=self._run_project,
        )

    async def _run_project(self, project_id: int, *, forced_training: bool = False) -> None:
        """One scheduled run: a cycle, plus one more for each poll requested meanwhile."""
        runner = self.runtime.runners.get(project_id)
        if runner is None:  # a job left for a project no reload ever configured
            return
        task = asyncio.current_task()
        if task is not None:
            task.set_name(f"cycle-{project_id}")
            self._cycle_tasks.add(task)
            task.add_done_callback(self._cycle_tasks.discard)
        try:
            await runner.run_scheduled(
                forced_training=forced_training,
                stopping=self.stopping,
                on_progress=self.watchdog.note_progress,
            )
        except asyncio.CancelledError:
            # Only shutdown cancels a cycle. The task is the scheduler's and nobody awaits
            # it, so ending quietly beats APScheduler logging a traceback for it.
            log.info("cycle.cancelled", project_id=project_id, action="resumes at the next start")

    def poll_now(self, project_id: int) -> None:
        """Poll the project as soon as possible (a webhook said something changed)."""
        if self.stopping.is_set():
            return
        runner = self.runtime.runners.get(project_id)
        if runner is not None and runner.request_rerun():
            return
        schedule.poll_soon(self.scheduler, project_id)

    # --- reload and watchdog --------------------------------------------------------------

    def request_reload(self) -> None:
        """SIGHUP handler: reload in a task (a signal handler must not block)."""
        if self.stopping.is_set():
            return
        self._spawn(self.reload(), name="reload")

    async def reload(self) -> None:
        """Read the config file again; keep the running one when the new one is bad."""
        async with self._reload_lock:
            systemd.reloading()
            try:
                await self._apply_new_config()
            finally:
                systemd.ready()

    async def _apply_new_config(self) -> None:
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            self._reject_reload(exc.problems)
            return
        old = self.runtime.config
        plan = plan_reload(old, new)
        if plan.refused is not None:
            self._reject_reload([plan.refused])
            return
        _register_secrets(new)
        await self.runtime.reload(new)
        for removed in plan.removed:
            schedule.unschedule_project(self.scheduler, removed)
        self._schedule_projects(new.projects)
        if plan.restart_server and self.server is not None:
            await self.server.stop()
            self.server = None
        if plan.restart_server:
            try:
                await self._start_server()
            except AldaemonError as exc:
                log.error("server.restart_failed", error=str(exc), action="running without it")
        log.info(
            "config.reloaded",
            added=list(plan.added),
            removed=list(plan.removed),
            projects=[p.id for p in new.projects],
        )
        self._announce_status()

    def _reject_reload(self, problems: list[str]) -> None:
        log.error(
            "config.reload_rejected",
            path=self.config_path,
            problems=problems,
            action="the previous configuration keeps running",
        )


async def run_daemon(config: Config, *, config_path: str) -> int:
    """Open the runtime, serve until stopped, close everything; returns the exit status."""
    async with Runtime(config, replica=True) as runtime:
        return await Daemon(runtime, config_path=config_path).serve()
