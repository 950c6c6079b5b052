"""What the loop asks of whatever runs its model jobs: one interface, two runners.

    ModelJobs (this base class)
    +-- ModelWorker       (worker.py)       a local process pool: the default
    +-- DaskModelWorker   (dask_worker.py)  a Dask cluster: `[daemon] dask_scheduler`

Both ship a request (model/requests.py) to the same entry point, `worker.run_job`, in
another process, and return what it returned (`_run`); neither looks inside the
request, so a new request type needs no change there. The loop types against this class,
so it never knows which runner the service chose.
"""

from __future__ import annotations

import abc
from typing import Any, cast

from aldaemon.model.requests import PoolScoringRequest, ScoringRequest, TrainingRequest
from aldaemon.model.results import PoolScores, ScoredPool, TrainingResult


class ModelJobs(abc.ABC):
    """Runs training and scoring jobs away from the event loop; shared by every project."""

    async def train(self, request: TrainingRequest) -> TrainingResult:
        """The request's training job; ModelError when it fails (ModelWorkerLost when the
        process running it died, ModelClusterUnreachable when the cluster is gone)."""
        return cast(TrainingResult, await self._run(request))

    async def score(self, request: ScoringRequest) -> ScoredPool:
        """The request's scoring job, with the same errors as `train`."""
        return cast(ScoredPool, await self._run(request))

    async def score_pool(self, request: PoolScoringRequest) -> PoolScores:
        """The pool scoring job: it reads the pool from the store itself."""
        return cast(PoolScores, await self._run(request))

    @abc.abstractmethod
    async def _run(self, request: object) -> Any:
        """Run `worker.run_job(request)` in another process and return its result."""

    @property
    @abc.abstractmethod
    def parallelism(self) -> int:
        """How many jobs run at once: a pool scoring is split in that many shards."""

    @abc.abstractmethod
    def shutdown(self, *, wait: bool = True, kill_running: bool = False) -> None:
        """Take no more jobs; `kill_running` also stops the jobs in progress (SIGTERM).

        Safe to call from another thread than the event loop's (the daemon does)."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """After `shutdown`: release what only the event loop can (network connections)."""
