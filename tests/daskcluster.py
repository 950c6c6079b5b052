"""A real Dask cluster for the suite: one `dask scheduler` and N `dask worker` processes.

The scheduler listens on a free loopback port it picks itself (`--port 0`) and writes
its address to a scheduler file, so there is no race for a port; the workers read that
file. Each worker runs under its nanny (the default of `dask worker`, as in production),
which starts a fresh worker process when one dies. Every process gets PYTHONPATH set to
this checkout, so workers import this checkout's aldaemon and tests. Waits are on
conditions (the file, the number of registered workers), never fixed sleeps.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.lsserver import missing_postgres_outcome

CHECKOUT = Path(__file__).resolve().parents[1]
# A job whose worker dies more often than this fails with KilledWorker. Dask's default is
# 3; 1 keeps the test of that failure short and still lets a job survive one death.
ALLOWED_FAILURES = 1
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
START_TIMEOUT = 120.0  # seconds: the first start imports numpy, pandas, ... cold
STOP_TIMEOUT = 30.0


def require_distributed() -> None:
    """Skip without the distributed package; fail instead in CI (`CI=true`)."""
    if importlib.util.find_spec("distributed") is not None:
        return
    reason = "the Dask tests need the distributed package (pip install -e '.[dev]')"
    if missing_postgres_outcome(os.environ) == "fail":  # the same CI rule as PostgreSQL's
        pytest.fail(f"{reason} (CI=true: Dask tests must not be skipped)")
    pytest.skip(reason)


def checkout_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a process that must import this checkout's aldaemon first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(CHECKOUT), env.get("PYTHONPATH", "")) if part
    )
    env.update(extra or {})
    return env


def _terminate_with_parent() -> None:
    """In the child before exec: SIGTERM it when the test process dies (even by SIGKILL),
    so a killed test run leaves no scheduler or nanny behind (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class DaskCluster:
    """`start()` it, use `address`, `stop()` it; `client` inspects it from the test process."""

    def __init__(self, directory: Path, *, workers: int = 2) -> None:
        self.directory = directory
        self.workers = workers
        self.scheduler_file = directory / "scheduler.json"
        self.address = ""
        self._processes: list[subprocess.Popen[bytes]] = []
        self._client: Any = None

    def start(self) -> None:
        self._spawn(
            "scheduler",
            "distributed.cli.dask_scheduler",
            "--host=127.0.0.1",
            "--port=0",
            "--no-dashboard",
            f"--scheduler-file={self.scheduler_file}",
        )
        self._wait(lambda: self._written_address() is not None, what="the scheduler file")
        self.address = self._written_address() or ""
        for number in range(1, self.workers + 1):
            self._spawn(
                f"worker-{number}",
                "distributed.cli.dask_worker",
                f"--scheduler-file={self.scheduler_file}",
                "--host=127.0.0.1",
                "--nthreads=1",
                "--no-dashboard",
                f"--name=worker-{number}",
                f"--local-directory={self.directory / f'worker-{number}' / 'dask'}",
                "--death-timeout=60",
            )
        self.wait_for_workers()

    @property
    def client(self) -> Any:
        """A synchronous distributed.Client on the cluster, for inspection."""
        if self._client is None:
            from distributed import Client

            self._client = Client(self.address, timeout=START_TIMEOUT, set_as_default=False)
        return self._client

    @property
    def scheduler_pid(self) -> int:
        return self._processes[0].pid

    def worker_pids(self) -> dict[str, int]:
        """Worker address -> the pid of the process that runs its tasks."""
        pids: dict[str, int] = self.client.run(os.getpid)
        return pids

    def finished_jobs(self) -> dict[str, int]:
        """Per kind of aldaemon job (`aldaemon-ScoringRequest`, ...), how many finished on
        this cluster so far (the scheduler's counts outlive the tasks)."""

        def counts(dask_scheduler: Any) -> dict[str, int]:
            return {
                name: prefix.state_counts["memory"]
                for name, prefix in dask_scheduler.task_prefixes.items()
                if name.startswith("aldaemon-")
            }

        finished: dict[str, int] = self.client.run_on_scheduler(counts)
        return finished

    def wait_for_workers(self) -> None:
        """Return once all `workers` are registered (after a start, or a nanny's restart)."""
        self.client.wait_for_workers(self.workers, timeout=START_TIMEOUT)

    def stop(self) -> None:
        """SIGTERM each process group (nanny and worker together), SIGKILL what lingers."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        for process in reversed(self._processes):  # workers first, the scheduler last
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def _written_address(self) -> str | None:
        """The address in the scheduler file, once it is there and whole."""
        try:
            address: str = json.loads(self.scheduler_file.read_text())["address"]
        except (FileNotFoundError, ValueError, KeyError):
            return None
        return address

    def _spawn(self, name: str, module: str, *args: str) -> None:
        """Start `python -m module args` in its own working directory: a relative path
        that reached a worker would resolve somewhere else than in the daemon."""
        cwd = self.directory / name
        cwd.mkdir(exist_ok=True)
        log = (self.directory / f"{name}.log").open("wb")
        settings = {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": str(ALLOWED_FAILURES)}
        self._processes.append(
            subprocess.Popen(
                [sys.executable, "-m", module, *args],
                env=checkout_env(settings),
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends its children
                preexec_fn=_terminate_with_parent,
            )
        )

    def _wait(self, condition: Any, *, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not condition():
            exited = [p.args for p in self._processes if p.poll() is not None]
            if exited:
                raise RuntimeError(f"a Dask process exited while waiting for {what}: {exited}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"gave up after {START_TIMEOUT} s waiting for {what}")
            time.sleep(0.1)
