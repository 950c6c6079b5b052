"""The daemon shell without Label Studio: health, watchdog, reload plans, scheduling, stop.

Cycles here are played by `ScriptedRuntime`, a stand-in for `service.runtime.Runtime`
whose `run_cycle` waits until the test lets it finish; its runners are real
`ProjectRunner`s whose cycle is that script. What is under test is the daemon's own
bookkeeping (when a cycle runs, how many, what a stop does to it); the real Runtime and
Label Studio are exercised by tests/labelstudio/test_daemon.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import structlog

from aldaemon.config import (
    Config,
    DaemonConfig,
    LabelStudioConfig,
    ProjectConfig,
    RetrainConfig,
    StateConfig,
)
from aldaemon.secret import Secret
from aldaemon.service.daemon import Daemon, plan_reload, watchdog_due
from aldaemon.service.health import ProjectHealth, assess_health, stale_after
from aldaemon.service.metrics import Metrics
from aldaemon.service.runner import ProjectRunner
from aldaemon.service.schedule import poll_job_id

NOW = 1_000_000.0
BOUND = 10.0  # seconds any wait below may take before the test fails; not a speed claim


def make_config(
    tmp_path: Path,
    *,
    project_ids: tuple[int, ...] = (1,),
    poll_interval: float = 300.0,
    shutdown_grace: float = 30.0,
    webhook_secret: str | None = None,
    listen: str = "",
    state_dir: str = "state",
) -> Config:
    return Config(
        path=str(tmp_path / "config.toml"),
        labelstudio=LabelStudioConfig(url="http://127.0.0.1:1", token=Secret("token-0123456789")),
        state=StateConfig(dir=tmp_path / state_dir),
        daemon=DaemonConfig(
            poll_interval=poll_interval,
            listen=listen,
            shutdown_grace=shutdown_grace,
            webhook_secret=None if webhook_secret is None else Secret(webhook_secret),
        ),
        projects=tuple(ProjectConfig(id=pid) for pid in project_ids),
    )


def config_text(project_ids: tuple[int, ...], state_dir: Path) -> str:
    projects = "".join(f"[[projects]]\nid = {pid}\n" for pid in project_ids)
    return (
        '[labelstudio]\nurl = "http://127.0.0.1:1"\ntoken = "token-0123456789"\n'
        f'[state]\ndir = "{state_dir}"\n[daemon]\npoll_interval = 300\nlisten = ""\n' + projects
    )


class ScriptedRunner(ProjectRunner):
    """A real runner (lock, scheduled runs, rerun flag) whose cycle is the runtime's script."""

    async def _cycle(  # type: ignore[override]
        self, project: ProjectConfig, *, force_resync: bool = False, forced_training: bool = False
    ) -> None:
        await self._runtime.run_cycle(
            project, force_resync=force_resync, forced_training=forced_training
        )


class ScriptedRuntime:
    """Plays `service.runtime.Runtime` for the daemon: each cycle waits for `finish_cycles`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = Metrics()
        self.runners = {
            p.id: ScriptedRunner(p.id, runtime=self)  # type: ignore[arg-type]
            for p in config.projects
        }
        self.worker = None
        self.ownership = None  # one daemon, no replicas: it owns every project
        self.started: list[tuple[int, bool]] = []  # (project id, forced_training)
        self.finished: list[int] = []
        self.cancelled: list[int] = []
        self.finish_cycles = asyncio.Event()
        self._cycle_started = asyncio.Event()

    async def run_cycle(
        self, project: ProjectConfig, *, force_resync: bool = False, forced_training: bool = False
    ) -> None:
        self.started.append((project.id, forced_training))
        self._cycle_started.set()
        try:
            await self.finish_cycles.wait()
        except asyncio.CancelledError:
            self.cancelled.append(project.id)
            raise
        self.finished.append(project.id)

    def still_owner(self, project_id: int) -> bool:
        return True

    async def cycle_started(self) -> None:
        """Wait for the next cycle to start."""
        await asyncio.wait_for(self._cycle_started.wait(), BOUND)
        self._cycle_started.clear()

    def busy_projects(self) -> list[int]:
        return sorted(pid for pid, runner in self.runners.items() if runner.busy)

    async def wait_for_prunes(self) -> None:
        return None

    async def cancel_prunes(self) -> None:
        return None

    async def reload(self, config: Config) -> None:
        self.config = config


def make_daemon(config: Config) -> tuple[Daemon, ScriptedRuntime]:
    runtime = ScriptedRuntime(config)
    daemon = Daemon(runtime, config_path=config.path)  # type: ignore[arg-type]
    return daemon, runtime


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the loop until `condition()` holds (at most BOUND seconds)."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), BOUND)


async def stop_and_wait_for_the_grace(daemon: Daemon, signal_name: str) -> None:
    """Stop the daemon and return once it waits out the grace for its running cycles."""
    with structlog.testing.capture_logs() as logs:
        daemon.stop(signal_name)
        await until(lambda: any(e["event"] == "daemon.waiting_for_cycles" for e in logs))


class TestAssessHealth:
    def test_a_recent_success_is_healthy(self) -> None:
        """A project that succeeded 10 s ago, with no failure, is healthy."""
        report = assess_health(
            project_ids=[1],
            health={1: ProjectHealth(last_success_at=NOW - 10)},
            busy=frozenset(),
            now=NOW,
            started_at=NOW - 5000,
            stale_limit=100,
        )
        assert (True, ()) == (report.healthy, report.reasons)

    def test_a_permanent_failure_is_unhealthy_and_named(self) -> None:
        """A failed project makes the daemon unhealthy, with the failure as the reason."""
        report = assess_health(
            project_ids=[1],
            health={1: ProjectHealth(failure="bad token", last_success_at=NOW - 10)},
            busy=frozenset(),
            now=NOW,
            started_at=NOW - 5000,
            stale_limit=100,
        )
        assert (False, ("project 1 failed: bad token",)) == (report.healthy, report.reasons)

    def test_unreachable_label_studio_is_unhealthy(self) -> None:
        """A project that cannot reach Label Studio makes the daemon unhealthy."""
        report = assess_health(
            project_ids=[1],
            health={1: ProjectHealth(unreachable_since=NOW - 3, last_success_at=NOW - 10)},
            busy=frozenset(),
            now=NOW,
            started_at=NOW - 5000,
            stale_limit=100,
        )
        assert ("project 1: Label Studio unreachable",) == report.reasons

    def test_no_success_within_the_limit_is_unhealthy(self) -> None:
        """A last success older than the stale limit is reported with its age."""
        report = assess_health(
            project_ids=[1],
            health={1: ProjectHealth(last_success_at=NOW - 250)},
            busy=frozenset(),
            now=NOW,
            started_at=NOW - 5000,
            stale_limit=100,
        )
        assert ("project 1: no successful cycle for 250 s",) == report.reasons

    def test_a_fresh_daemon_is_healthy_before_its_first_success(self) -> None:
        """A project without any cycle yet is healthy while the daemon is younger than the limit."""
        report = assess_health(
            project_ids=[1],
            health={1: ProjectHealth()},
            busy=frozenset(),
            now=NOW,
            started_at=NOW - 5,
            stale_limit=100,
        )
        assert True is report.healthy

    def test_a_project_without_any_success_since_a_long_start_is_unhealthy(self) -> None:
        """Measured from the daemon's start, a project that never succeeded goes stale too."""
        report = assess_health(
            project_ids=[1],
            health={1: ProjectHealth()},
            busy=frozenset(),
            now=NOW,
            started_at=NOW - 500,
            stale_limit=100,
        )
        assert False is report.healthy

    def test_busy_projects_are_marked(self) -> None:
        """The per-project entry says whether a cycle is running."""
        report = assess_health(
            project_ids=[1, 2],
            health={1: ProjectHealth(last_success_at=NOW), 2: ProjectHealth(last_success_at=NOW)},
            busy=frozenset({2}),
            now=NOW,
            started_at=NOW,
            stale_limit=100,
        )
        busy = {pid: entry["busy"] for pid, entry in report.projects.items()}  # type: ignore[index]
        assert {"1": False, "2": True} == busy


class TestStaleAfter:
    def test_an_explicit_value_wins(self, tmp_path: Path) -> None:
        """[daemon].stale_after, when set, is the limit."""
        config = make_config(tmp_path)
        config = replace(config, daemon=replace(config.daemon, stale_after=42.0))
        assert 42.0 == stale_after(config)

    def test_the_default_allows_three_polls_and_a_full_cycle(self, tmp_path: Path) -> None:
        """Unset, the limit is three poll intervals plus the cycle timeout."""
        config = make_config(tmp_path, poll_interval=30.0)
        assert 3 * 30.0 + config.daemon.cycle_timeout == stale_after(config)


class TestWatchdogDue:
    def test_a_running_cycle_counts_as_progress(self) -> None:
        """While a cycle runs, the watchdog is fed however long ago the last one ended."""
        assert True is watchdog_due(busy=True, seconds_since_progress=10_000, stale_limit=100)

    def test_a_recent_cycle_counts_as_progress(self) -> None:
        """An idle daemon whose last cycle ended within the limit feeds the watchdog."""
        assert True is watchdog_due(busy=False, seconds_since_progress=50, stale_limit=100)

    def test_no_cycle_for_longer_than_the_limit_withholds_the_ping(self) -> None:
        """An idle daemon that finished nothing within the limit lets systemd restart it."""
        assert False is watchdog_due(busy=False, seconds_since_progress=150, stale_limit=100)


class TestPlanReload:
    def test_added_and_removed_projects_are_listed(self, tmp_path: Path) -> None:
        """Projects only in the new config are added, those only in the old one removed."""
        plan = plan_reload(
            make_config(tmp_path, project_ids=(1, 2)), make_config(tmp_path, project_ids=(2, 3))
        )
        assert ((3,), (1,)) == (plan.added, plan.removed)

    def test_a_new_state_dir_is_refused(self, tmp_path: Path) -> None:
        """Moving the state directory needs a restart, so the reload is refused."""
        plan = plan_reload(make_config(tmp_path), make_config(tmp_path, state_dir="elsewhere"))
        assert "state.dir: changing it needs a restart" == plan.refused

    def test_a_new_dask_scheduler_is_refused(self, tmp_path: Path) -> None:
        """Model jobs may be in flight on the old runner: switching it needs a restart."""
        dask = replace(make_config(tmp_path).daemon, dask_scheduler="tcp://127.0.0.1:8786")
        plan = plan_reload(make_config(tmp_path), replace(make_config(tmp_path), daemon=dask))
        assert "daemon.dask_scheduler: changing it needs a restart" == plan.refused

    def test_a_new_webhook_secret_restarts_the_server(self, tmp_path: Path) -> None:
        """The server is restarted to check webhooks against a changed secret."""
        plan = plan_reload(
            make_config(tmp_path, webhook_secret="old-secret-123"),
            make_config(tmp_path, webhook_secret="new-secret-456"),
        )
        assert True is plan.restart_server

    def test_an_unchanged_listener_keeps_the_server(self, tmp_path: Path) -> None:
        """Same address and same secret: the server keeps running through the reload."""
        plan = plan_reload(
            make_config(tmp_path, webhook_secret="same-secret-1", listen="127.0.0.1:0"),
            make_config(tmp_path, webhook_secret="same-secret-1", listen="127.0.0.1:0"),
        )
        assert False is plan.restart_server


class TestRunProject:
    async def test_a_poll_requested_during_a_cycle_runs_one_more_right_after(
        self, tmp_path: Path
    ) -> None:
        """A webhook for a busy project is not dropped: a second cycle follows the first."""
        daemon, runtime = make_daemon(make_config(tmp_path))
        job = asyncio.create_task(daemon._run_project(1))
        await runtime.cycle_started()

        daemon.poll_now(1)
        runtime.finish_cycles.set()
        await asyncio.wait_for(job, BOUND)

        assert [1, 1] == runtime.finished

    async def test_many_requests_during_a_cycle_make_one_extra_cycle(self, tmp_path: Path) -> None:
        """Five polls requested during one cycle add exactly one cycle."""
        daemon, runtime = make_daemon(make_config(tmp_path))
        job = asyncio.create_task(daemon._run_project(1))
        await runtime.cycle_started()

        for _ in range(5):
            daemon.poll_now(1)
        runtime.finish_cycles.set()
        await asyncio.wait_for(job, BOUND)

        assert 2 == len(runtime.started)

    async def test_only_the_first_cycle_of_a_forced_run_forces_training(
        self, tmp_path: Path
    ) -> None:
        """A cron run forces training once; the extra cycle a webhook asked for does not."""
        daemon, runtime = make_daemon(make_config(tmp_path))
        job = asyncio.create_task(daemon._run_project(1, forced_training=True))
        await runtime.cycle_started()

        daemon.poll_now(1)
        runtime.finish_cycles.set()
        await asyncio.wait_for(job, BOUND)

        assert [(1, True), (1, False)] == runtime.started

    async def test_no_cycle_starts_once_stopping(self, tmp_path: Path) -> None:
        """A scheduled run that comes after a stop does nothing."""
        daemon, runtime = make_daemon(make_config(tmp_path))
        daemon.stop()

        await daemon._run_project(1)

        assert [] == runtime.started

    async def test_a_run_waiting_for_a_busy_project_does_not_start_after_a_stop(
        self, tmp_path: Path
    ) -> None:
        """A cron run queued behind a running cycle gives up when shutdown began meanwhile."""
        daemon, runtime = make_daemon(make_config(tmp_path))
        first = asyncio.create_task(daemon._run_project(1))
        await runtime.cycle_started()
        queued = asyncio.create_task(daemon._run_project(1, forced_training=True))
        await asyncio.sleep(0)

        daemon.stop()
        runtime.finish_cycles.set()
        await asyncio.wait_for(asyncio.gather(first, queued), BOUND)

        assert [(1, False)] == runtime.started

    async def test_a_project_no_longer_configured_is_not_run(self, tmp_path: Path) -> None:
        """A job left for a project the config no longer has runs no cycle."""
        daemon, runtime = make_daemon(make_config(tmp_path, project_ids=(1,)))

        await daemon._run_project(7)

        assert [] == runtime.started


class TestPollNow:
    async def test_an_idle_project_is_polled_at_once(self, tmp_path: Path) -> None:
        """poll_now moves a 300 s poll job to now: its next cycle starts without waiting."""
        daemon, runtime = make_daemon(make_config(tmp_path, poll_interval=300))
        runtime.finish_cycles.set()
        daemon.scheduler.start()
        try:
            daemon._schedule_projects(runtime.config.projects)
            await until(lambda: len(runtime.finished) == 1 and not runtime.busy_projects())

            daemon.poll_now(1)
            await until(lambda: len(runtime.finished) == 2)
        finally:
            daemon.scheduler.shutdown(wait=False)

        assert [1, 1] == runtime.finished

    async def test_a_project_without_a_job_is_ignored(self, tmp_path: Path) -> None:
        """A poll requested for a project that has no job (not scheduled) adds no job."""
        daemon, runtime = make_daemon(make_config(tmp_path))
        daemon.scheduler.start()
        try:
            daemon.poll_now(1)
            jobs = daemon.scheduler.get_jobs()
        finally:
            daemon.scheduler.shutdown(wait=False)

        assert ([], []) == (jobs, runtime.started)


class TestStop:
    async def test_a_running_cycle_may_finish_within_the_grace(self, tmp_path: Path) -> None:
        """On stop, a cycle that ends within shutdown_grace ends normally, and serve returns 0."""
        daemon, runtime = make_daemon(make_config(tmp_path, shutdown_grace=60))
        serving = asyncio.create_task(daemon.serve())
        await runtime.cycle_started()

        await stop_and_wait_for_the_grace(daemon, "test")
        runtime.finish_cycles.set()
        status = await asyncio.wait_for(serving, BOUND)

        assert (0, [1], []) == (status, runtime.finished, runtime.cancelled)

    async def test_a_cycle_still_running_when_the_grace_ends_is_cancelled(
        self, tmp_path: Path
    ) -> None:
        """When shutdown_grace runs out, the cycle is cancelled and serve still returns 0."""
        daemon, runtime = make_daemon(make_config(tmp_path, shutdown_grace=0.2))
        serving = asyncio.create_task(daemon.serve())
        await runtime.cycle_started()

        daemon.stop("test")
        status = await asyncio.wait_for(serving, BOUND)

        assert (0, [], [1]) == (status, runtime.finished, runtime.cancelled)

    async def test_a_second_stop_cuts_the_grace_short(self, tmp_path: Path) -> None:
        """A second SIGTERM cancels running cycles without waiting out a long grace."""
        daemon, runtime = make_daemon(make_config(tmp_path, shutdown_grace=3600))
        serving = asyncio.create_task(daemon.serve())
        await runtime.cycle_started()

        await stop_and_wait_for_the_grace(daemon, "SIGTERM")
        daemon.stop("SIGTERM")
        status = await asyncio.wait_for(serving, BOUND)

        assert (0, [1]) == (status, runtime.cancelled)


class TestReload:
    async def test_a_broken_file_keeps_the_running_config(self, tmp_path: Path) -> None:
        """A config file that no longer parses is rejected and the old config stays in force."""
        path = tmp_path / "config.toml"
        path.write_text(config_text((1,), tmp_path / "state"))
        config = replace(make_config(tmp_path), path=str(path))
        daemon, runtime = make_daemon(config)
        path.write_text("[labelstudio\n")

        with structlog.testing.capture_logs() as logs:
            await daemon.reload()

        events = [entry["event"] for entry in logs]
        assert (config, ["config.reload_rejected"]) == (runtime.config, events)

    async def test_an_added_project_gets_a_poll_job(self, tmp_path: Path) -> None:
        """After a reload that adds project 2, the scheduler has a poll job for it."""
        path = tmp_path / "config.toml"
        path.write_text(config_text((1, 2), tmp_path / "state"))
        config = replace(make_config(tmp_path, project_ids=(1,)), path=str(path))
        daemon, runtime = make_daemon(config)
        daemon.scheduler.start(paused=True)
        try:
            await daemon.reload()
            scheduled = daemon.scheduler.get_job(poll_job_id(2)) is not None
        finally:
            daemon.scheduler.shutdown(wait=False)

        assert (True, (1, 2)) == (scheduled, tuple(p.id for p in runtime.config.projects))

    async def test_a_removed_project_loses_its_jobs(self, tmp_path: Path) -> None:
        """After a reload that drops project 2, neither its poll nor its cron job remains."""
        path = tmp_path / "config.toml"
        path.write_text(config_text((1,), tmp_path / "state"))
        config = make_config(tmp_path, project_ids=(1, 2))
        cron = ProjectConfig(id=2, retrain=RetrainConfig(cron="0 3 * * *"))
        config = replace(config, path=str(path), projects=(config.projects[0], cron))
        daemon, _ = make_daemon(config)
        daemon.scheduler.start(paused=True)
        try:
            daemon._schedule_projects(config.projects)
            await daemon.reload()
            left = sorted(job.id for job in daemon.scheduler.get_jobs())
        finally:
            daemon.scheduler.shutdown(wait=False)

        assert ["poll-1"] == left


@pytest.fixture(autouse=True)
def _no_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """sd_notify stays silent here, whatever environment the tests run in."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
