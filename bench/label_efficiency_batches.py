"""Which tasks the annotator labels next: the samplers of the label-efficiency seeds bench.

Each sampler answers `pick(...)`: the next `count` pool rows, in the order the annotator
takes them, given the model just fitted on every label so far.

- random: a fixed uniform permutation of the training reviews per seed, taken in order
  (what Label Studio's "Uniform sampling" serves); it does not depend on the model, the
  retrain cadence or the evaluation grid, so one random run per seed serves every
  comparison on that seed;
- random_legacy: `bench.label_efficiency_offline`'s draw (a fresh `rng.sample` of the
  pool at every retrain, rng = random.Random(seed)), to reproduce that bench's figures;
  its draws change with the cadence, so it is not the baseline here;
- margin (the daemon today): informativeness by margin, `random_fraction` of the scores
  replaced by a uniform draw seeded with the version number (`aldaemon.sync.scoring`,
  as the worker does), lowest score first, ties by row;
- WHAT-IF samplers the daemon does not have (candidates for a daemon change):
  - margin_kmeans: the `pool_factor * count` lowest-margin tasks are clustered with
    k-means into `count` clusters over the model's own TF-IDF rows, and each cluster
    gives its lowest-margin task ("diverse mini-batch" active learning, Zhdanov 2019);
  - margin_dedup: lowest margin first, skipping a task whose cosine similarity to one
    already picked in this batch exceeds `max_cosine`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse
from sklearn.cluster import KMeans
from sklearn.preprocessing import normalize

from aldaemon.sync import scoring
from bench.label_efficiency_features import CachedFeatures, FittedOnRows

IntArray = npt.NDArray[np.intp]


@dataclass(frozen=True)
class PickContext:
    """What a sampler may look at when choosing the next batch."""

    cache: CachedFeatures
    model: FittedOnRows
    pool: Sequence[int]  # unlabeled training rows, ascending
    count: int
    version: int  # retrain number: seeds random_fraction and k-means as the daemon would
    random_order: Sequence[int]  # this seed's permutation of the training rows
    rng: random.Random  # random.Random(seed), one per run: the draws of random_legacy


Picker = Callable[[PickContext], list[int]]


def random_order(seed: int, total: int) -> list[int]:
    """This seed's uniform permutation of rows 0..total-1."""
    order = list(range(total))
    random.Random(f"random-order-{seed}").shuffle(order)
    return order


def take_in_order(order: Sequence[int], pool: Sequence[int], count: int) -> list[int]:
    """The first `count` rows of `order` still in `pool`."""
    left = set(pool)
    return [row for row in order if row in left][:count]


def lowest_first(scores: npt.ArrayLike, pool: Sequence[int], count: int) -> list[int]:
    """The `count` rows with the lowest scores, ties by row (Label Studio's queue)."""
    order = np.lexsort((np.asarray(pool), np.asarray(scores, dtype=np.float64)))
    return [int(pool[i]) for i in order[:count]]


def margin_scores(context: PickContext, *, random_fraction: float) -> npt.NDArray[np.float64]:
    proba = context.model.predict_proba(context.cache.rows(context.pool))
    scores = scoring.informativeness(proba, strategy="margin")
    rng = np.random.default_rng(context.version)
    return scoring.mix_random(scores, fraction=random_fraction, rng=rng)


def margin_picker(random_fraction: float = 0.0) -> Picker:
    def pick(context: PickContext) -> list[int]:
        scores = margin_scores(context, random_fraction=random_fraction)
        return lowest_first(scores, context.pool, context.count)

    return pick


def _candidates(context: PickContext, factor: int) -> tuple[list[int], npt.NDArray[np.float64]]:
    """The `factor * count` lowest-margin rows, lowest first, with their scores."""
    scores = margin_scores(context, random_fraction=0.0)
    rows = lowest_first(scores, context.pool, factor * context.count)
    by_row = dict(zip(context.pool, scores, strict=True))
    return rows, np.array([by_row[r] for r in rows])


def _unit_rows(context: PickContext, rows: Sequence[int]) -> scipy.sparse.csr_matrix:
    """The candidates' TF-IDF rows, L2-normalised, on the columns they use only (so that
    k-means' dense centres stay small even over 2**20 hashed buckets)."""
    features = scipy.sparse.csr_matrix(context.model.features(context.cache.rows(rows)))
    features = features[:, np.flatnonzero(features.getnnz(axis=0))]
    return normalize(features)


def one_per_cluster(
    labels: Sequence[int], scores: Sequence[float], rows: Sequence[int]
) -> list[int]:
    """Each cluster's lowest-score row, lowest score first (ties by row)."""
    best: dict[int, tuple[float, int]] = {}
    for cluster, score, row in zip(labels, scores, rows, strict=True):
        if cluster not in best or (score, row) < best[cluster]:
            best[cluster] = (float(score), int(row))
    return [row for _, row in sorted(best.values())]


def kmeans_picker(pool_factor: int = 5) -> Picker:
    def pick(context: PickContext) -> list[int]:
        rows, scores = _candidates(context, pool_factor)
        if len(rows) <= context.count:
            return rows
        kmeans = KMeans(n_clusters=context.count, n_init=1, random_state=context.version)
        labels = kmeans.fit_predict(_unit_rows(context, rows))
        return one_per_cluster([int(c) for c in labels], list(scores), rows)

    return pick


def greedy_dedup(unit_rows: scipy.sparse.csr_matrix, *, count: int, max_cosine: float) -> IntArray:
    """Positions (rows in given order) kept by a greedy walk that skips near-duplicates.

    A row is skipped when its cosine to any row kept before it exceeds `max_cosine`;
    rows are assumed L2-normalised, so the dot product is the cosine.
    """
    similarity = (unit_rows @ unit_rows.T).toarray()
    kept: list[int] = []
    for position in range(similarity.shape[0]):
        if all(similarity[position, k] <= max_cosine for k in kept):
            kept.append(position)
            if len(kept) == count:
                break
    return np.asarray(kept, dtype=np.intp)


def dedup_picker(max_cosine: float = 0.3, pool_factor: int = 5) -> Picker:
    def pick(context: PickContext) -> list[int]:
        rows, _ = _candidates(context, pool_factor)
        kept = greedy_dedup(_unit_rows(context, rows), count=context.count, max_cosine=max_cosine)
        picks = [rows[i] for i in kept]
        if len(picks) < context.count:  # too many near-duplicates: fill by margin
            taken = set(picks)
            picks += [r for r in rows if r not in taken][: context.count - len(picks)]
        return picks

    return pick


def random_picker(context: PickContext) -> list[int]:
    return take_in_order(context.random_order, context.pool, context.count)


def legacy_random_picker(context: PickContext) -> list[int]:
    """`bench.label_efficiency_offline`'s draw: rng.sample(pool, count) at each retrain."""
    return context.rng.sample(list(context.pool), context.count)


SAMPLERS: dict[str, Picker] = {
    "random": random_picker,
    "random_legacy": legacy_random_picker,
    "margin": margin_picker(),
    "margin+random_fraction_0.1": margin_picker(0.1),
    "margin_kmeans": kmeans_picker(),
    "margin_dedup": dedup_picker(),
}
WHAT_IF = ("margin_kmeans", "margin_dedup")
# The random order a sampler is compared with: the cadence-free permutation when it ran,
# else the legacy draw (of the same cadence when there is one).
BASELINES = ("random", "random_legacy")
