"""The pool scoring job: read the unlabeled pool from the store in chunks, score each, keep
the K most informative.

Run in a worker process (local or on a Dask worker). Memory is one chunk plus the queue
kept so far, whatever the size of the pool, and only the queue goes back to the daemon.
Each chunk is scored by `training.score_with` (the same code as an explicit list of
texts), from the cached first-step features where the model has a cacheable first step
(model/features.py): tasks without them, or whose text changed since, are computed and
stored in the same pass.

The queue is the same as scoring the whole pool at once and taking `select_queue`'s K
lowest scores: ties keep task id order, as they would in one pass (model/queue.py). A
request may cover one id range of the pool (a shard: `after_task_id`, `last_task_id`);
the daemon merges the shards' queues into the same queue. Two things differ by design:
the random share (`random_fraction`) is drawn per chunk, seeded by the request's seed and
the chunk's first task id, so the same pool in the same shards gives the same queue; and
clusters group the chosen tasks, not the whole pool.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.pipeline import Pipeline

from aldaemon.model.artifacts import load_artifact
from aldaemon.model.features import (
    cached_step,
    decode_rows,
    encode_rows,
    featurizer_key,
    text_digest,
)
from aldaemon.model.queue import SKIPPED_IDS_KEPT, Queue
from aldaemon.model.requests import PoolScoringRequest, ScoringRequest
from aldaemon.model.results import PoolScores
from aldaemon.model.training import cluster, has_feature_steps, score_with
from aldaemon.store import FeatureRow, PoolRow, Store


def score_store_pool(request: PoolScoringRequest) -> PoolScores:
    """Score the request's pool chunk by chunk; see the module docstring."""
    if request.chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {request.chunk_size}")
    model = load_artifact(request.artifact_path).model
    step = cached_step(model)
    featurizer = featurizer_key(step) if step is not None else None
    queue = Queue(depth=request.depth)
    counts = _Counts()
    with Store.reopen(request.store) as store:
        after = request.after_task_id
        while rows := store.unlabeled_chunk(
            request.project_id,
            after=after,
            until=request.last_task_id,
            limit=request.chunk_size,
            featurizer=featurizer,
        ):
            after = rows[-1].task_id
            scorable = [row for row in rows if row.text and row.text.strip()]
            counts.skip([row.task_id for row in rows if not (row.text and row.text.strip())])
            if not scorable:
                continue
            features = None
            if step is not None and featurizer is not None:
                features, fresh = _features(step, scorable)
                store.save_task_features(request.project_id, featurizer=featurizer, rows=fresh)
                counts.features(computed=len(fresh), reused=len(scorable) - len(fresh))
            scored = score_with(model, _chunk_request(request, scorable, features))
            queue.add(scored, texts=[str(row.text) for row in scorable])
            counts.n_scored += len(scorable)
    chosen = queue.result()
    wanted = request.clusters > 0 and bool(chosen.task_ids)
    if wanted and isinstance(model, Pipeline) and has_feature_steps(model):
        features_of_chosen = model[:-1].transform(queue.texts)
        clusters = cluster(features_of_chosen, clusters=request.clusters, seed=request.seed)
        chosen = dataclasses.replace(chosen, clusters=clusters)
    return PoolScores(
        queue=chosen,
        n_scored=counts.n_scored,
        n_skipped=counts.n_skipped,
        skipped_ids=tuple(counts.skipped_ids),
        features_computed=counts.features_computed,
        features_reused=counts.features_reused,
    )


def _features(step: Any, rows: list[PoolRow]) -> tuple[Any, list[FeatureRow]]:
    """The chunk's first-step features: stored ones where their text is unchanged, the
    rest computed now (and returned, to be stored)."""
    digests = [text_digest(str(row.text)) for row in rows]
    stale = [
        i
        for i, (row, digest) in enumerate(zip(rows, digests, strict=True))
        if row.features is None or row.text_digest != digest
    ]
    blobs: list[bytes] = [row.features or b"" for row in rows]
    fresh: list[FeatureRow] = []
    if stale:
        computed = encode_rows(step.transform([str(rows[i].text) for i in stale]))
        for i, blob in zip(stale, computed, strict=True):
            blobs[i] = blob
            fresh.append(FeatureRow(rows[i].task_id, digests[i], blob))
    return decode_rows(blobs, n_features=step.n_features), fresh


def _chunk_request(
    request: PoolScoringRequest, rows: list[PoolRow], features: Any
) -> ScoringRequest:
    seed = int(np.random.SeedSequence([request.seed, rows[0].task_id]).generate_state(1)[0])
    return ScoringRequest(
        artifact_path=request.artifact_path,
        task_ids=[row.task_id for row in rows],
        texts=[str(row.text) for row in rows],
        strategy=request.strategy,
        random_fraction=request.random_fraction,
        seed=seed,
        features=features,
    )


@dataclass
class _Counts:
    n_scored: int = 0
    n_skipped: int = 0
    skipped_ids: list[int] = field(default_factory=list)
    features_computed: int = 0
    features_reused: int = 0

    def skip(self, task_ids: list[int]) -> None:
        self.n_skipped += len(task_ids)
        self.skipped_ids.extend(task_ids[: SKIPPED_IDS_KEPT - len(self.skipped_ids)])

    def features(self, *, computed: int, reused: int) -> None:
        self.features_computed += computed
        self.features_reused += reused
