"""Run training and scoring in worker processes, awaited from the event loop.

Fitting TF-IDF + logistic regression holds the GIL for seconds to minutes; in a thread
it would stall polling, webhooks and health checks. So the daemon keeps one pool of
worker processes, by default ONE process: jobs of several projects then queue instead of
multiplying peak memory. The caller keeps each project to one training at a time.

Start method "spawn", not fork or forkserver:
- fork copies a process that runs threads (the loop's default executor, httpx, the SDK's
  token refresh, apscheduler): a lock held by one of them at fork time stays held
  forever in the child. It also duplicates open SQLite handles and sockets, and Python
  3.14 no longer uses it by default.
- forkserver is safe too and starts new workers faster, but this pool keeps its
  workers for the daemon's lifetime, so the ~1 s spawn start (importing sklearn) is paid
  once per worker. spawn behaves the same on every platform and gives each worker a
  clean interpreter.

A worker that dies (OOM killer, segfault in native code) breaks a ProcessPoolExecutor
for good; the ModelWorker reports that job as a ModelError and starts a fresh pool for
the next one.

A worker also ends soon after the daemon dies (see exit_with_parent): a `kill -9` of
the main pid alone would otherwise leave it, and the resource tracker, running forever.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import structlog

from aldaemon.errors import ModelError, ModelWorkerLost
from aldaemon.model.jobs import ModelJobs

log = structlog.get_logger(__name__)

START_METHOD = "spawn"
_JOBS_MODULE = "aldaemon.model.training"
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
PARENT_POLL_SECONDS = 1.0


def run_job(request: object) -> Any:
    """Worker-side entry point: import the jobs module there, run the request's job.

    The same function runs in the local pool's processes and on a Dask cluster's workers
    (model/dask_worker.py); the request's type picks the job (`training.run`).

    Naming the job instead of passing the function keeps scikit-learn out of the main
    process, which never imports aldaemon.model.training itself.
    """
    return importlib.import_module(_JOBS_MODULE).run(request)


def start_worker(parent_pid: int) -> None:
    """Pool initializer: end with the daemon (`exit_with_parent`), and log like it.

    A spawned process starts with structlog's default console output; the store a pool
    scoring job opens logs through it, and under systemd those lines would land in the
    daemon's journal as plain text among its JSON lines. The worker logs warnings and
    errors as JSON lines on stderr; its debug and info lines (`store.opened`) are the
    daemon's business and are dropped.
    """
    exit_with_parent(parent_pid)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def exit_with_parent(parent_pid: int) -> None:
    """Pool initializer: end this worker process soon after `parent_pid` (the daemon) dies.

    An orphaned worker never ends by itself: it waits on its call queue, whose pipe it
    holds both ends of, so it never sees EOF. The resource tracker, in turn, lives until
    the last holder of its pipe is gone, and that is the worker; it ends on its own then.

    On Linux the kernel sends SIGKILL when the parent dies (PR_SET_PDEATHSIG). SIGKILL,
    because a model's code can catch or ignore SIGTERM, and a killed job loses nothing:
    artifacts are only replaced whole. The "parent" there is the spawning *thread*: the
    pool spawns from the event loop's thread (submit) and from its manager thread
    (max_tasks_per_child), both alive as long as the pool. Without prctl a daemon
    thread polls getppid() instead; it needs the GIL, so a job in native code that holds
    the GIL delays it until the job lets go.
    """
    if not _set_parent_death_signal(signal.SIGKILL):
        threading.Thread(
            target=exit_when_orphaned, args=(parent_pid,), name="parent-watch", daemon=True
        ).start()
    # The parent may have died before prctl: then no signal will ever come.
    if os.getppid() != parent_pid:
        os._exit(1)


def _set_parent_death_signal(signum: int) -> bool:
    """True if the kernel will send `signum` to this process when its parent dies."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return False
    status: int = prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signum), 0, 0, 0)
    return status == 0


def exit_when_orphaned(parent_pid: int) -> None:
    """Exit once this process's parent is no longer `parent_pid` (the fallback to prctl).

    It compares with the pid, not with 1, since an orphan may be adopted by a subreaper.
    """
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)


class ModelWorker(ModelJobs):
    """The daemon's model process pool; create once, share across projects, shut down last.

    The default runner of model jobs (model/jobs.py: ModelJobs); `[daemon] dask_scheduler`
    picks DaskModelWorker instead.

    Processes start on the first job, not in __init__, so a daemon whose projects are
    all in cold start never pays for it.
    """

    def __init__(self, *, max_workers: int = 1, max_tasks_per_child: int | None = None) -> None:
        # max_workers > 1 lets projects train side by side, each process adding its own
        # peak memory. max_tasks_per_child recycles a process after that many jobs,
        # handing the memory of large fits back to the OS (glibc keeps freed arenas).
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self._max_workers = max_workers
        self._max_tasks_per_child = max_tasks_per_child
        self._executor: ProcessPoolExecutor | None = None
        self._closed = False

    @property
    def parallelism(self) -> int:
        """How many jobs run at once: a pool scoring is split in that many shards."""
        return self._max_workers

    def shutdown(self, *, wait: bool = True, kill_running: bool = False) -> None:
        """Stop the worker; queued jobs are cancelled, later calls raise ModelError.

        `kill_running` terminates a job in progress instead of letting it finish: for a
        SIGTERM that must beat systemd's stop timeout. Nothing is lost by it, since the
        artifact is only ever replaced whole and the cycle resumes an unfinished training.
        """
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is None:
            return
        if kill_running:
            _terminate_processes(executor)
        executor.shutdown(wait=wait, cancel_futures=True)

    async def aclose(self) -> None:
        """Nothing to release beyond what `shutdown` did (ModelJobs asks every runner)."""

    async def _run(self, request: object) -> Any:
        job = type(request).__name__
        executor = self._ensure_executor()
        future = executor.submit(run_job, request)
        try:
            return await asyncio.wrap_future(future)
        except BrokenProcessPool as exc:
            self._discard(executor)
            if self._closed:
                raise ModelError(f"model job {job} stopped: the worker was shut down") from exc
            log.warning("model.worker_died", job=job)
            raise ModelWorkerLost(
                f"model job {job} failed: the worker process died (killed, or out of memory?)"
            ) from exc
        except asyncio.CancelledError:
            # shutdown(cancel_futures=True) cancels queued jobs; that is not a cancellation
            # of the awaiting task, so report it as the failure it is for the caller.
            task = asyncio.current_task()
            if self._closed and task is not None and task.cancelling() == 0:
                raise ModelError(f"model job {job} cancelled: the worker was shut down") from None
            if future.running():
                self._stop_running_job(executor, job)
            raise

    def _ensure_executor(self) -> ProcessPoolExecutor:
        if self._closed:
            raise ModelError("the model worker is shut down")
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self._max_workers,
                mp_context=multiprocessing.get_context(START_METHOD),
                max_tasks_per_child=self._max_tasks_per_child,
                initializer=start_worker,
                initargs=(os.getpid(),),
            )
        return self._executor

    def _stop_running_job(self, executor: ProcessPoolExecutor, job: str) -> None:
        """The caller gave up on a job in progress (cycle_timeout): kill its process.

        A process pool cannot cancel a running call, and an abandoned fit would keep the
        worker busy, queueing every later job of every project behind it; a model that
        hangs would stall them all for good. Killing the pool's processes ends it; jobs
        of other projects running in the same pool fail with ModelError and are retried
        by their next cycle. The next job starts a fresh process.
        """
        log.warning("model.job_stopped", job=job, reason="its caller gave up waiting")
        _terminate_processes(executor)
        self._discard(executor)

    def _discard(self, executor: ProcessPoolExecutor) -> None:
        """Drop a broken pool so the next job starts a fresh process."""
        if self._executor is executor:
            self._executor = None
        executor.shutdown(wait=False, cancel_futures=True)


def _terminate_processes(executor: ProcessPoolExecutor) -> None:
    """SIGKILL the pool's processes: a model's code may catch or ignore SIGTERM."""
    # ProcessPoolExecutor gained terminate_workers() only in Python 3.14.
    for process in list((getattr(executor, "_processes", None) or {}).values()):
        process.kill()
