"""Model jobs on a real Dask cluster (a scheduler and 2 workers the suite starts).

The jobs must give what the local worker gives, survive a Dask worker killed under them,
stop when their caller gives up, and fail with errors that say where and why.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from aldaemon.errors import ModelClusterUnreachable, ModelError, ModelWorkerLost
from aldaemon.loop.poll import record_poll
from aldaemon.model import training
from aldaemon.model.artifacts import load_artifact, save_artifact
from aldaemon.model.protocol import DEFAULT_FACTORY
from aldaemon.model.requests import PoolScoringRequest, ScoringRequest, SingleLabelTraining
from aldaemon.model.worker import ModelWorker
from aldaemon.records import TaskRecord
from aldaemon.store import Store
from aldaemon.sync.reconcile import diff
from tests.daskcluster import DaskCluster, require_distributed
from tests.helpers import captured_events, events, make_tasks
from tests.lsserver import free_port
from tests.unit.test_model import WrappedClassifier

THIS_MODULE = __name__
GATE_TIMEOUT = 300.0  # seconds a gated predict_proba waits for "go" before it gives up
WAIT_TIMEOUT = 120.0  # seconds a test waits for a job to reach its gate

TASKS, LABELS = make_tasks(120, seed=7)
TEXTS = [str(task["text"]) for task in TASKS]
TRAIN_TEXTS, TRAIN_LABELS = TEXTS[:40], LABELS[:40]
POOL_IDS, POOL_TEXTS = list(range(1000, 1080)), TEXTS[40:]
POOL_PROJECT = 5


# Factories named by reference, as a config would: module level, so a Dask worker
# (PYTHONPATH: this checkout) imports them.


class GatedClassifier(WrappedClassifier):
    """Once given a gate dir (after training: cross-validation predicts too), predict_proba
    announces each run (a file holding its pid) and waits until the file "go" exists."""

    def __init__(self) -> None:
        super().__init__()
        self.gate_dir: str | None = None

    def predict_proba(self, texts: Sequence[str]) -> Any:
        if self.gate_dir is None:
            return super().predict_proba(texts)
        gate = Path(self.gate_dir)
        (gate / f"run-{os.getpid()}-{uuid.uuid4().hex}").write_text(str(os.getpid()))
        deadline = time.monotonic() + GATE_TIMEOUT
        while not (gate / "go").exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the gate never opened")
            time.sleep(0.05)
        return super().predict_proba(texts)


def make_gated_classifier() -> GatedClassifier:
    return GatedClassifier()


class SelfKillingClassifier(WrappedClassifier):
    """Dies like a process the OOM killer picked, every time it is fitted."""

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> SelfKillingClassifier:
        os.kill(os.getpid(), signal.SIGKILL)
        return self


def make_self_killing_classifier() -> SelfKillingClassifier:
    return SelfKillingClassifier()


def training_request(path: Path, factory_ref: str = DEFAULT_FACTORY) -> SingleLabelTraining:
    return SingleLabelTraining(
        factory_ref=factory_ref,
        texts=TRAIN_TEXTS,
        labels=TRAIN_LABELS,
        artifact_path=str(path),
        seed=3,
    )


def scoring_request(artifact: Path) -> ScoringRequest:
    return ScoringRequest(
        artifact_path=str(artifact),
        task_ids=POOL_IDS,
        texts=POOL_TEXTS,
        strategy="margin",
        random_fraction=0.1,
        clusters=2,
        seed=5,
    )


def put_pool(store: Store) -> None:
    """POOL_TEXTS as unlabeled tasks of project POOL_PROJECT, through a recorded poll."""
    tasks = [
        TaskRecord(id=task_id, updated_at="2026-11-29T06:00:00.000000Z", text=text)
        for task_id, text in zip(POOL_IDS, POOL_TEXTS, strict=True)
    ]
    record_poll(store, POOL_PROJECT, diff(tasks, {}), now=100.0)


@pytest.fixture
def cluster(dask_cluster: DaskCluster) -> Iterator[DaskCluster]:
    """The session's cluster, with both workers registered before and after the test."""
    dask_cluster.wait_for_workers()
    yield dask_cluster
    dask_cluster.wait_for_workers()


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Path]:
    """A gate dir for GatedClassifier; opened ("go") at the end so no worker stays blocked."""
    directory = tmp_path / "gate"
    directory.mkdir()
    yield directory
    (directory / "go").touch()


def gated_artifact(tmp_path: Path, gate: Path) -> Path:
    """A GatedClassifier trained in this process, then given `gate` and saved again."""
    path = tmp_path / "models" / "gated.joblib"
    training.run(training_request(path, f"{THIS_MODULE}:make_gated_classifier"))
    artifact = load_artifact(str(path))
    artifact.model.gate_dir = str(gate)  # type: ignore[attr-defined]
    save_artifact(
        model=artifact.model,
        classes=artifact.classes,
        factory_ref=artifact.factory_ref,
        path=str(path),
    )
    return path


def gate_runs(gate: Path) -> list[int]:
    """The pid of each predict_proba run that reached the gate, oldest first."""
    runs = sorted(gate.glob("run-*"), key=lambda path: path.stat().st_mtime_ns)
    return [int(path.read_text()) for path in runs]


async def wait_for_runs(gate: Path, count: int, job: asyncio.Task[Any]) -> list[int]:
    deadline = time.monotonic() + WAIT_TIMEOUT
    while len(gate_runs(gate)) < count:
        if job.done():
            job.result()  # raises what ended it
            raise AssertionError(f"the job ended before {count} run(s) reached the gate")
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {WAIT_TIMEOUT} s waiting for {count} run(s)")
        await asyncio.sleep(0.05)
    return gate_runs(gate)


def aldaemon_tasks_on_scheduler(cluster: DaskCluster) -> list[str]:
    """Keys of the aldaemon jobs the scheduler still holds."""

    def keys(dask_scheduler: Any) -> list[str]:
        return [str(key) for key in dask_scheduler.tasks if str(key).startswith("aldaemon-")]

    found: list[str] = cluster.client.run_on_scheduler(keys)
    return found


def dask_worker(cluster: DaskCluster) -> Any:
    from aldaemon.model.dask_worker import DaskModelWorker

    return DaskModelWorker(cluster.address)


class TestSameResultsAsTheLocalWorker:
    async def test_training_and_scoring_equal_the_local_workers(
        self, cluster: DaskCluster, tmp_path: Path
    ) -> None:
        """Same requests, same seeds: the same training result and the same scored pool."""
        local, remote = ModelWorker(), dask_worker(cluster)
        try:
            local_trained = await local.train(training_request(tmp_path / "local.joblib"))
            remote_trained = await remote.train(training_request(tmp_path / "dask.joblib"))
            local_pool = await local.score(scoring_request(tmp_path / "local.joblib"))
            remote_pool = await remote.score(scoring_request(tmp_path / "dask.joblib"))
        finally:
            local.shutdown()
            remote.shutdown()
            await remote.aclose()
        ignored = {"train_seconds": 0.0, "artifact_path": ""}
        assert dataclasses.replace(local_trained, **ignored) == dataclasses.replace(
            remote_trained, **ignored
        )
        assert local_pool == remote_pool
        assert len(POOL_IDS) == len(remote_pool.scores)

    async def test_the_model_is_fitted_in_a_dask_worker_process(
        self, cluster: DaskCluster, tmp_path: Path
    ) -> None:
        """The fit runs in one of the cluster's worker processes, not in the daemon's."""
        remote = dask_worker(cluster)
        path = tmp_path / "recorded.joblib"
        try:
            wrapped = "tests.unit.test_model:make_wrapped_classifier"  # records its fit pid
            await remote.train(training_request(path, wrapped))
        finally:
            remote.shutdown()
            await remote.aclose()
        fit_pid = load_artifact(str(path)).model.fit_pid  # type: ignore[attr-defined]
        assert fit_pid in cluster.worker_pids().values()


class TestPoolScoring:
    async def test_a_pool_scored_from_the_store_equals_the_local_workers(
        self, cluster: DaskCluster, tmp_path: Path, any_store: Store
    ) -> None:
        """The worker reads the pool from the store itself (the SQLite file, or PostgreSQL
        through the DSN in the request): the same queue as the local worker's."""
        put_pool(any_store)
        artifact = tmp_path / "v1.joblib"
        training.run(training_request(artifact))
        request = PoolScoringRequest(
            artifact_path=str(artifact),
            store=any_store.address,
            project_id=POOL_PROJECT,
            strategy="margin",
            depth=30,
            seed=4,
        )
        remote, local = dask_worker(cluster), ModelWorker()
        try:
            remote_scores = await remote.score_pool(request)
            local_scores = await local.score_pool(request)
        finally:
            local.shutdown()
            remote.shutdown()
            await remote.aclose()
        assert (len(POOL_TEXTS), 30) == (remote_scores.n_scored, len(remote_scores.queue.task_ids))
        assert local_scores.queue == remote_scores.queue

    async def test_the_pool_is_split_in_one_shard_per_cluster_thread(
        self, cluster: DaskCluster
    ) -> None:
        """`parallelism`: 1 before the first connection, then the cluster's 2 threads."""
        remote = dask_worker(cluster)
        try:
            before = remote.parallelism
            await remote.connect()
            after = remote.parallelism
        finally:
            remote.shutdown()
            await remote.aclose()
        assert (1, 2) == (before, after)


class TestWorkerLost:
    async def test_a_worker_killed_mid_score_changes_no_score(
        self, cluster: DaskCluster, tmp_path: Path, gate: Path
    ) -> None:
        """SIGKILL of the worker process scoring: the job runs again elsewhere, same scores."""
        artifact = gated_artifact(tmp_path, gate)
        remote = dask_worker(cluster)
        try:
            job = asyncio.create_task(remote.score(scoring_request(artifact)))
            [first_pid] = await wait_for_runs(gate, 1, job)
            assert first_pid in cluster.worker_pids().values()
            os.kill(first_pid, signal.SIGKILL)
            (gate / "go").touch()
            remote_pool = await job
        finally:
            remote.shutdown()
            await remote.aclose()
        runs = gate_runs(gate)
        assert 2 == len(runs)  # ran, was killed, ran again: not a result from the first run
        assert first_pid == runs[0] != runs[1]
        local = ModelWorker()
        try:
            local_pool = await local.score(scoring_request(artifact))
        finally:
            local.shutdown()
        assert local_pool == remote_pool

    async def test_a_job_that_keeps_killing_its_workers_is_reported_lost(
        self, cluster: DaskCluster, tmp_path: Path
    ) -> None:
        """Past the scheduler's allowed failures: ModelWorkerLost, like the local worker."""
        remote = dask_worker(cluster)
        request = training_request(
            tmp_path / "never.joblib", f"{THIS_MODULE}:make_self_killing_classifier"
        )
        try:
            with captured_events() as logs, pytest.raises(ModelWorkerLost, match="died"):
                await remote.train(request)
        finally:
            remote.shutdown()
            await remote.aclose()
        assert 1 == len(events(logs, "model.worker_died"))


class TestStopping:
    async def test_a_job_its_caller_gave_up_on_is_cancelled_on_the_cluster(
        self, cluster: DaskCluster, tmp_path: Path, gate: Path
    ) -> None:
        """cycle_timeout: the awaiting task is cancelled, and so is the Dask future."""
        artifact = gated_artifact(tmp_path, gate)
        remote = dask_worker(cluster)
        earlier = set(aldaemon_tasks_on_scheduler(cluster))  # other tests' may linger a moment
        try:
            job = asyncio.create_task(remote.score(scoring_request(artifact)))
            await wait_for_runs(gate, 1, job)
            ours = set(aldaemon_tasks_on_scheduler(cluster)) - earlier
            assert 1 == len(ours)
            job.cancel()
            with pytest.raises(asyncio.CancelledError):
                await job
            await wait_async(lambda: not ours & set(aldaemon_tasks_on_scheduler(cluster)))
        finally:
            remote.shutdown()
            await remote.aclose()

    async def test_shutdown_with_kill_running_fails_the_job_in_flight(
        self, cluster: DaskCluster, tmp_path: Path, gate: Path
    ) -> None:
        """SIGTERM's shutdown(kill_running=True), from another thread: the job ends at once."""
        artifact = gated_artifact(tmp_path, gate)
        remote = dask_worker(cluster)
        try:
            job = asyncio.create_task(remote.score(scoring_request(artifact)))
            await wait_for_runs(gate, 1, job)
            await asyncio.to_thread(remote.shutdown, kill_running=True)
            with pytest.raises(ModelError, match="shut down"):
                await job
            with pytest.raises(ModelError, match="shut down"):
                await remote.score(scoring_request(artifact))
        finally:
            await remote.aclose()


class TestErrors:
    async def test_an_artifact_the_worker_cannot_read_names_the_path_and_the_worker(
        self, cluster: DaskCluster, tmp_path: Path
    ) -> None:
        """A missing artifact: ModelError naming the path, the worker, its host, the fix."""
        missing = tmp_path / "elsewhere" / "v1.joblib"
        remote = dask_worker(cluster)
        try:
            with pytest.raises(ModelError) as raised:
                await remote.score(scoring_request(missing))
        finally:
            remote.shutdown()
            await remote.aclose()
        message = str(raised.value)
        assert str(missing) in message
        assert "on Dask worker tcp://127.0.0.1:" in message
        assert f"on host {socket.gethostname()}" in message
        assert "[state] dir" in message

    async def test_an_unreachable_scheduler_is_a_clear_error_logged_once(self) -> None:
        """Nothing listens there: ModelClusterUnreachable naming the address, no traceback
        in the message, `model.dask_unreachable` once for two failed jobs."""
        require_distributed()
        from aldaemon.model.dask_worker import DaskModelWorker

        address = f"tcp://127.0.0.1:{free_port()}"
        remote = DaskModelWorker(address, connect_timeout=1.0)
        try:
            with captured_events() as logs:
                for _ in range(2):
                    with pytest.raises(ModelClusterUnreachable) as raised:
                        await remote.train(training_request(Path("/nonexistent/m.joblib")))
        finally:
            remote.shutdown()
            await remote.aclose()
        assert (
            f"cannot reach the Dask scheduler at {address} within 1 s ([daemon] dask_scheduler)"
            == str(raised.value)
        )
        assert [address] == [e["address"] for e in events(logs, "model.dask_unreachable")]


async def wait_async(condition: Any, *, timeout: float = WAIT_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout} s")
        await asyncio.sleep(0.1)
