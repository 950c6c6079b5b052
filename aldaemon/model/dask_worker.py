"""Model jobs on a Dask distributed cluster (`[daemon] dask_scheduler`), like the local pool.

The daemon keeps one asynchronous `distributed.Client`, connected on the first job (a
daemon whose projects are all in cold start never connects), and submits each request
to `run_on_cluster`, which calls the same entry point as the local pool,
`worker.run_job`. So a job gives the same result wherever it runs, and a new request
type needs nothing here.

    daemon (event loop)          scheduler                 Dask worker (a thread)
    submit(run_on_cluster, req) ---> picks a worker ---> run_job(req): fit or score,
    await future  <------------- result, directly from the worker ---- reads/writes
                                                                      the artifact

What can go wrong, and what the caller sees:
- The scheduler cannot be reached, or is lost mid-job (the client then cancels its
  futures, "scheduler-connection-lost"): ModelClusterUnreachable naming the address,
  `model.dask_unreachable` once per outage; the next job connects again
  (`model.dask_connected`).
- A Dask worker dies under a job (SIGKILL, out of memory): the scheduler runs the job
  again on another worker; the result is the same, since a job is a function of its
  request and the artifact it reads, and an artifact is only ever replaced whole. After
  `distributed.scheduler.allowed-failures` deaths (default 3) the scheduler gives up
  (KilledWorker): ModelWorkerLost, as when the local worker process dies.
- The job itself fails (ModelError: the data, the model, an artifact it cannot read):
  raised here as on the worker, with the worker's address and host added, since with a
  cluster "the file does not exist" depends on which machine looked.
- The caller gives up (cycle_timeout) or the daemon stops with `kill_running`: the
  future is cancelled. Dask cannot stop a running Python thread: a job already running
  finishes on its worker and its result is dropped; a job still queued never starts.

The request travels inside the task, through the scheduler, not scattered to a worker
beforehand: a scattered input lives on one worker only and dies with it, while the
scheduler can hand a task it holds to another worker. A pool scoring request is small:
it names the store (the SQLite state dir, or the PostgreSQL DSN with its password, so
keep the cluster's network private or use tls://) and the worker reads the pool itself;
the loop splits the pool in `parallelism` shards, one per thread of the cluster, which
run side by side. Results come straight from the worker (`direct_to_workers`), so the
daemon must reach the workers' ports.

Artifacts: a training writes its artifact under `[state] dir` on whichever worker ran
it, and a scoring job on another worker reads it, so `[state] dir` must be the same path
on storage every worker (and the daemon) can read and write (deploy/README.md, "Model
jobs on Dask").
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
import warnings
from typing import Any

import structlog
from distributed import Client, Future, get_worker
from distributed.client import FutureCancelledError
from distributed.scheduler import KilledWorker

from aldaemon.errors import ModelClusterUnreachable, ModelError, ModelWorkerLost
from aldaemon.model.jobs import ModelJobs
from aldaemon.model.worker import run_job

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT = 10.0  # seconds to reach the scheduler before a job fails
SHARED_STATE_HINT = (
    "every Dask worker must read and write [state] dir at the same path "
    "(deploy/README.md, 'Model jobs on Dask')"
)


def run_on_cluster(request: object) -> Any:
    """Dask-worker-side entry point: `worker.run_job`, its ModelError naming this worker."""
    try:
        return run_job(request)
    except ModelError as exc:
        hint = f"; {SHARED_STATE_HINT}" if isinstance(exc.__cause__, OSError) else ""
        raise type(exc)(f"{exc} (on Dask worker {_this_worker()}{hint})") from None


def _this_worker() -> str:
    """`tcp://10.0.0.7:40123 on host gpu-3`: the worker's address and its machine."""
    try:
        address = get_worker().address
    except ValueError:  # called outside a worker (a test calling it in-process)
        address = f"pid {os.getpid()}"
    return f"{address} on host {socket.gethostname()}"


class DaskModelWorker(ModelJobs):
    """Model jobs on the Dask cluster at `address`; one per daemon, shared by its projects.

    Implements ModelJobs (model/jobs.py) like the local ModelWorker.
    """

    def __init__(self, address: str, *, connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self.address = address
        self._connect_timeout = connect_timeout
        self._client: Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting = asyncio.Lock()
        self._futures: set[Future[Any]] = set()
        self._cancels: set[asyncio.Task[None]] = set()
        self._reachable = True  # logs the unreachable/connected transitions once each
        self._closed = False

    @property
    def parallelism(self) -> int:
        """The cluster's threads, as the scheduler last reported them (1 before the first
        connection): a pool scoring is split in that many shards, one job each."""
        if self._client is None:
            return 1
        threads = self._client.scheduler_info().get("total_threads")
        return max(1, int(threads or 1))

    def shutdown(self, *, wait: bool = True, kill_running: bool = False) -> None:
        """Take no more jobs; `kill_running` (or `wait=False`) cancels those in flight.

        Callable from any thread: the cancellation is handed to the client's loop.
        """
        self._closed = True
        if (kill_running or not wait) and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._cancel_in_flight, "the daemon is stopping")

    async def aclose(self) -> None:
        """Close the connection to the scheduler (the cluster itself runs on)."""
        self._closed = True
        if self._cancels:
            await asyncio.gather(*self._cancels, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def _run(self, request: object) -> Any:
        job = type(request).__name__
        client = await self._ensure_client()
        with warnings.catch_warnings():
            # A pool's texts make a "large graph" by Dask's measure: expected (see the
            # module docstring), and a plain stderr line in the daemon's JSON log.
            warnings.filterwarnings("ignore", "Sending large graph", UserWarning)
            future = client.submit(
                run_on_cluster, request, pure=False, key=f"aldaemon-{job}-{uuid.uuid4().hex}"
            )
        self._futures.add(future)
        try:
            return await future
        except KilledWorker as exc:
            log.warning("model.worker_died", job=job, runner="dask", address=self.address)
            raise ModelWorkerLost(
                f"model job {job} failed: the Dask workers running it died "
                f"{exc.allowed_failures + 1} times (killed, or out of memory?)"
            ) from None
        except FutureCancelledError as exc:
            if self._closed:
                raise ModelError(f"model job {job} stopped: the worker was shut down") from None
            self._note_unreachable(f"lost mid-job ({exc.reason})")
            raise ModelClusterUnreachable(
                f"model job {job} failed: lost the Dask scheduler at {self.address}"
            ) from None
        except asyncio.CancelledError:
            if not future.done():
                log.warning(
                    "model.job_stopped",
                    job=job,
                    runner="dask",
                    reason="its caller gave up waiting",
                )
                self._cancel([future], reason="its caller gave up waiting")
            raise
        finally:
            self._futures.discard(future)

    async def connect(self) -> None:
        """Connect now rather than at the first job (then `parallelism` knows the cluster);
        ModelClusterUnreachable when the scheduler cannot be reached."""
        await self._ensure_client()

    async def _ensure_client(self) -> Client:
        if self._closed:
            raise ModelError("the model worker is shut down")
        async with self._connecting:
            client = self._client
            if client is not None and client.status == "running":
                return client
            self._client = None
            if client is not None:
                await client.close()
            self._client = await self._connect()
            return self._client

    async def _connect(self) -> Client:
        try:
            client: Client = await Client(
                self.address,
                asynchronous=True,
                timeout=self._connect_timeout,
                set_as_default=False,
                direct_to_workers=True,
                name="aldaemon",
            )
        except (OSError, TimeoutError) as exc:
            self._note_unreachable(f"{type(exc).__name__}: {exc}")
            raise ModelClusterUnreachable(
                f"cannot reach the Dask scheduler at {self.address} "
                f"within {self._connect_timeout:g} s ([daemon] dask_scheduler)"
            ) from None
        self._loop = asyncio.get_running_loop()
        self._reachable = True
        workers = client.scheduler_info().get("n_workers")  # cached at connect: no round trip
        log.info("model.dask_connected", address=self.address, workers=workers)
        return client

    def _note_unreachable(self, error: str) -> None:
        if self._reachable:
            log.warning("model.dask_unreachable", address=self.address, error=error)
        self._reachable = False

    def _cancel_in_flight(self, reason: str) -> None:
        self._cancel(list(self._futures), reason=reason)

    def _cancel(self, futures: list[Future[Any]], *, reason: str) -> None:
        """Cancel `futures` on the cluster, in the background (the caller may be unwinding)."""
        client = self._client
        if client is None or not futures:
            return
        task = asyncio.ensure_future(client.cancel(futures, reason=reason))
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)
