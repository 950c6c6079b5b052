"""The pool scoring job: the pool read from the store in chunks, features cached per task.

Every test runs on both store backends (`any_store`: SQLite, then PostgreSQL), since the
job reopens the daemon's store from its address, as a worker process does.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aldaemon.loop.poll import record_poll
from aldaemon.model.pool_scoring import score_store_pool
from aldaemon.model.queue import merge_pool_scores
from aldaemon.model.requests import PoolScoringRequest, ScoringRequest, SingleLabelTraining
from aldaemon.model.training import score, train_and_save
from aldaemon.records import AnnotationRecord, TaskRecord
from aldaemon.store import Store
from aldaemon.sync.reconcile import diff
from aldaemon.sync.scoring import select_queue

P = 3
T0 = "2026-11-29T06:00:00.000000Z"
T1 = "2026-11-29T06:05:00.000000Z"
WORDS = ["great", "awful", "tasty", "bland", "fresh", "stale", "cheap", "pricey", "fine"]


def review(i: int) -> str:
    """A deterministic short text with some variety (no two alike)."""
    picks = [WORDS[(i * k + k) % len(WORDS)] for k in (1, 2, 3, 5)]
    return f"review {i}: " + " ".join(picks)


def put_tasks(store: Store, tasks: list[TaskRecord], *, now: float = 100.0) -> None:
    outcome = diff(tasks, store.known_annotations(P, [t.id for t in tasks]))
    record_poll(store, P, outcome, now=now)


def labeled(task_id: int, label: str) -> TaskRecord:
    annotation = AnnotationRecord(
        id=10_000 + task_id,
        task_id=task_id,
        label=label,
        was_cancelled=False,
        updated_at=T0,
        completed_by=1,
    )
    return TaskRecord(id=task_id, updated_at=T0, text=review(task_id), annotations=(annotation,))


@pytest.fixture
def pool_store(any_store: Store) -> Store:
    """40 labeled tasks, 200 unlabeled ones, two without text."""
    tasks = [labeled(i, "pos" if "great" in review(i) else "neg") for i in range(1, 41)]
    tasks += [TaskRecord(id=i, updated_at=T0, text=review(i)) for i in range(41, 241)]
    tasks += [
        TaskRecord(id=241, updated_at=T0, text=None),
        TaskRecord(id=242, updated_at=T0, text="   "),
    ]
    put_tasks(any_store, tasks)
    return any_store


@pytest.fixture
def artifact(tmp_path: Path) -> str:
    texts = [review(i) for i in range(1, 41)]
    labels = ["pos" if "great" in text else "neg" for text in texts]
    path = str(tmp_path / "v1.joblib")
    train_and_save(
        SingleLabelTraining(
            texts=texts,
            labels=labels,
            artifact_path=path,
            factory_ref="aldaemon.model.default:make_text_classifier",
        )
    )
    return path


def pool_request(store: Store, artifact: str, **fields: object) -> PoolScoringRequest:
    arguments: dict[str, object] = {
        "artifact_path": artifact,
        "store": store.address,
        "project_id": P,
        "strategy": "margin",
        "depth": 25,
        "chunk_size": 17,  # many chunks, the last one short
        "seed": 1,
    }
    arguments.update(fields)
    return PoolScoringRequest(**arguments)  # type: ignore[arg-type]


def whole_pool_queue(artifact: str, task_ids: list[int], depth: int | None) -> list[int]:
    """What scoring the whole pool in one call and keeping the `depth` lowest gives."""
    scored = score(
        ScoringRequest(
            artifact_path=artifact,
            task_ids=task_ids,
            texts=[review(i) for i in task_ids],
            strategy="margin",
        )
    )
    chosen = select_queue(np.asarray(scored.scores), depth=depth)
    return sorted(task_ids[i] for i in chosen)


@pytest.mark.parametrize("depth", [25, None])
def test_the_queue_is_the_one_a_single_pass_over_the_pool_gives(
    pool_store: Store, artifact: str, depth: int | None
) -> None:
    result = score_store_pool(pool_request(pool_store, artifact, depth=depth))

    expected = whole_pool_queue(artifact, list(range(41, 241)), depth)
    assert list(result.queue.task_ids) == expected
    assert result.n_scored == 200
    assert (result.n_skipped, result.skipped_ids) == (2, (241, 242))


def test_scores_from_cached_features_equal_scores_from_texts(
    pool_store: Store, artifact: str
) -> None:
    first = score_store_pool(pool_request(pool_store, artifact, depth=None))
    second = score_store_pool(pool_request(pool_store, artifact, depth=None))

    assert (first.features_computed, first.features_reused) == (200, 0)
    assert (second.features_computed, second.features_reused) == (0, 200)
    assert second.queue.task_ids == first.queue.task_ids
    assert np.allclose(second.queue.scores, first.queue.scores, atol=1e-6)
    assert second.queue.labels == first.queue.labels


def test_a_changed_text_gets_its_features_recomputed(pool_store: Store, artifact: str) -> None:
    score_store_pool(pool_request(pool_store, artifact))
    before = pool_store.feature_digests(P)[100]
    new_text = "great great great tasty fresh"
    put_tasks(pool_store, [TaskRecord(id=100, updated_at=T1, text=new_text)], now=200.0)

    result = score_store_pool(pool_request(pool_store, artifact, depth=None))

    assert (result.features_computed, result.features_reused) == (1, 199)
    after = pool_store.feature_digests(P)[100]
    assert after[0] == before[0]  # the same featurizer
    assert after[1] != before[1]  # a digest of the new text
    alone = score(
        ScoringRequest(artifact_path=artifact, task_ids=[100], texts=[new_text], strategy="margin")
    )
    position = result.queue.task_ids.index(100)
    assert result.queue.scores[position] == pytest.approx(alone.scores[0], abs=1e-6)


def test_labeled_and_deleted_tasks_leave_the_pool(pool_store: Store, artifact: str) -> None:
    put_tasks(pool_store, [labeled(50, "pos")], now=200.0)

    result = score_store_pool(pool_request(pool_store, artifact, depth=None))

    assert 50 not in result.queue.task_ids
    assert result.n_scored == 199


def test_the_same_pool_gives_the_same_random_share(pool_store: Store, artifact: str) -> None:
    request = pool_request(pool_store, artifact, random_fraction=0.2)

    first, second = score_store_pool(request), score_store_pool(request)

    assert first.queue == second.queue
    plain = score_store_pool(pool_request(pool_store, artifact))
    assert first.queue.task_ids != plain.queue.task_ids  # the random share did pick some


def test_clusters_group_the_chosen_tasks(pool_store: Store, artifact: str) -> None:
    result = score_store_pool(pool_request(pool_store, artifact, clusters=4))

    assert result.queue.clusters is not None
    assert len(result.queue.clusters) == 25
    assert set(result.queue.clusters) <= {0, 1, 2, 3}


@pytest.mark.parametrize("shards", [1, 2, 3, 7])
def test_shards_of_the_pool_merge_into_the_single_pass_queue(
    pool_store: Store, artifact: str, shards: int
) -> None:
    bounds = pool_store.pool_shards(P, shards=shards)
    single = score_store_pool(pool_request(pool_store, artifact))

    parts = [score_store_pool(pool_request(pool_store, artifact, shard=shard)) for shard in bounds]
    merged = merge_pool_scores(parts, depth=25)

    assert len(bounds) == shards
    assert bounds[0][0] == 0 and bounds[-1][1] is None
    assert all(u == a for (_, u), (a, _) in itertools.pairwise(bounds))
    assert merged.queue.task_ids == single.queue.task_ids
    assert np.allclose(merged.queue.scores, single.queue.scores, atol=1e-6)
    assert (merged.n_scored, merged.n_skipped) == (200, 2)
    assert sum(p.features_computed + p.features_reused for p in parts) == 200


def test_the_worker_process_writes_json_lines_only(tmp_path: Path) -> None:
    """Under systemd the worker's output lands in the daemon's journal: a pool scoring in
    the worker process (which opens the store, and the store logs) prints nothing but
    JSON lines there."""
    script = f"""
import asyncio
from pathlib import Path
import structlog
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(50))  # silent
from aldaemon.loop.poll import record_poll
from aldaemon.model.requests import PoolScoringRequest, SingleLabelTraining
from aldaemon.model.training import train_and_save
from aldaemon.model.worker import ModelWorker
from aldaemon.records import TaskRecord
from aldaemon.store import Store
from aldaemon.sync.reconcile import diff

state = Path({str(tmp_path / "state")!r})
texts = ["good food", "bad food", "good taste", "bad taste"] * 5
with Store.open(state) as store:
    tasks = [TaskRecord(id=i + 1, updated_at="2026-11-29T06:00:00.000000Z", text=t)
             for i, t in enumerate(texts)]
    record_poll(store, 1, diff(tasks, {{}}), now=1.0)
    address = store.address
artifact = str(state / "v1.joblib")
train_and_save(SingleLabelTraining(texts=texts, labels=[t.split()[0] for t in texts],
    artifact_path=artifact, factory_ref="aldaemon.model.default:make_text_classifier"))
worker = ModelWorker()
request = PoolScoringRequest(artifact_path=artifact, store=address, project_id=1,
    strategy="margin", depth=5)
result = asyncio.run(worker.score_pool(request))
worker.shutdown()
print('{{"scored": %d}}' % result.n_scored)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=300
    )
    assert 0 == done.returncode, done.stderr
    lines = (done.stdout + done.stderr).splitlines()
    assert ['{"scored": 20}'] == lines  # the worker's store.opened (debug) is dropped
