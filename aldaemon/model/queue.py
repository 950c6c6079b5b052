"""The queue a scoring keeps: the `depth` lowest scores of what it has seen, by task id.

Kept apart from pool_scoring.py (which runs in the worker) because the daemon merges the
queues of the shards of one pool with it, and the daemon never imports scikit-learn.
Merging queues of id-ordered shards, in shard order, gives the queue one pass over the
whole pool gives: `select_queue` keeps ties in input order, and input order is id order.
"""

from __future__ import annotations

from collections.abc import Sequence

from aldaemon.model.results import PoolScores, ScoredPool
from aldaemon.sync.scoring import select_queue

SKIPPED_IDS_KEPT = 50  # task ids named in `score.tasks_skipped`


class Queue:
    """The `depth` lowest scores added so far, kept in task id order (every task when None);
    with `keep_texts`, the kept tasks' texts beside them."""

    def __init__(self, *, depth: int | None) -> None:
        if depth is not None and depth < 0:
            raise ValueError(f"depth must be >= 0 or None, got {depth!r}")
        self._depth = depth
        self._kept = ScoredPool((), (), (), None)
        self.texts: list[str] = []

    def add(self, scored: ScoredPool, *, texts: Sequence[str] = ()) -> None:
        merged = _concatenate(self._kept, scored)
        merged_texts = self.texts + list(texts)
        keep = sorted(int(i) for i in select_queue(merged.scores, depth=self._depth))
        self._kept = _take(merged, keep)
        if merged_texts:
            self.texts = [merged_texts[i] for i in keep]

    def result(self) -> ScoredPool:
        return self._kept


def merge_pool_scores(shards: Sequence[PoolScores], *, depth: int | None) -> PoolScores:
    """One pool's answer from its shards' answers (given in task id order)."""
    queue = Queue(depth=depth)
    skipped: list[int] = []
    for shard in shards:
        queue.add(shard.queue)
        skipped.extend(shard.skipped_ids)
    return PoolScores(
        queue=queue.result(),
        n_scored=sum(s.n_scored for s in shards),
        n_skipped=sum(s.n_skipped for s in shards),
        skipped_ids=tuple(skipped[:SKIPPED_IDS_KEPT]),
        features_computed=sum(s.features_computed for s in shards),
        features_reused=sum(s.features_reused for s in shards),
    )


def _concatenate(first: ScoredPool, second: ScoredPool) -> ScoredPool:
    if not first.task_ids:
        return second
    if not second.task_ids:
        return first
    label_sets = None
    if first.label_sets is not None and second.label_sets is not None:
        label_sets = first.label_sets + second.label_sets
    clusters = None
    if first.clusters is not None and second.clusters is not None:
        clusters = first.clusters + second.clusters
    return ScoredPool(
        task_ids=first.task_ids + second.task_ids,
        labels=first.labels + second.labels,
        scores=first.scores + second.scores,
        clusters=clusters,
        label_sets=label_sets,
    )


def _take(pool: ScoredPool, indices: list[int]) -> ScoredPool:
    return ScoredPool(
        task_ids=tuple(pool.task_ids[i] for i in indices),
        labels=tuple(pool.labels[i] for i in indices),
        scores=tuple(pool.scores[i] for i in indices),
        clusters=None if pool.clusters is None else tuple(pool.clusters[i] for i in indices),
        label_sets=None if pool.label_sets is None else tuple(pool.label_sets[i] for i in indices),
    )
