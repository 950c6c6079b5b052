"""How informative each unlabeled task is, as one number in [0, 1].

Label Studio's uncertainty sampling serves the task with the LOWEST prediction score
first, so every strategy here maps a probability row to a score where lower means the
model is less sure, i.e. the label would teach it more:

    margin            p1 - p2           two classes nearly tied -> 0
    least_confidence  max p             the top class barely wins -> 1/K
    entropy           1 - H / ln K      uniform row -> 0

Pure numpy: no I/O, so the cycle and the benchmarks share it, and no scikit-learn, which
would add ~70 MiB to the daemon's main process (bench/million.py found the stop signal's
kappa importing it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

STRATEGIES = ("margin", "least_confidence", "entropy")

# predict_proba rows are normalized in float64, but a float32 model or a softmax with
# rounding may miss 1 by a few ulps; anything further off is a bug upstream.
_ROW_SUM_TOLERANCE = 1e-4

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]


def informativeness(proba: npt.ArrayLike, *, strategy: str) -> FloatArray:
    """Map an (n, K) probability matrix to n scores in [0, 1], LOWER = MORE informative.

    Raises ValueError (not an assert, which `python -O` strips) when K < 2, a row does
    not sum to 1, or a value is outside [0, 1]: a silently wrong score would reorder the
    annotators' queue without anyone noticing.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    matrix = _validated_probabilities(proba)
    if matrix.shape[0] == 0:
        return np.empty(0, dtype=np.float64)
    if strategy == "margin":
        top_two = np.sort(matrix, axis=1)[:, -2:]
        scores = top_two[:, 1] - top_two[:, 0]
    elif strategy == "least_confidence":
        scores = matrix.max(axis=1)
    else:
        scores = 1.0 - _entropy(matrix) / math.log(matrix.shape[1])
    return np.clip(scores, 0.0, 1.0)


def _validated_probabilities(proba: npt.ArrayLike) -> FloatArray:
    matrix = np.asarray(proba, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"expected an (n, K) probability matrix, got shape {matrix.shape}")
    if matrix.shape[1] < 2:
        raise ValueError(f"expected at least 2 classes, got {matrix.shape[1]}")
    if not np.all(np.isfinite(matrix)):
        raise ValueError("probabilities contain NaN or infinity")
    if np.any(matrix < -_ROW_SUM_TOLERANCE) or np.any(matrix > 1 + _ROW_SUM_TOLERANCE):
        raise ValueError("probabilities outside [0, 1]")
    row_sums = matrix.sum(axis=1)
    off = np.abs(row_sums - 1.0) > _ROW_SUM_TOLERANCE
    if np.any(off):
        first = int(np.flatnonzero(off)[0])
        raise ValueError(f"row {first} sums to {row_sums[first]!r}, not 1")
    return np.clip(matrix, 0.0, 1.0)


def _entropy(matrix: FloatArray) -> FloatArray:
    """Shannon entropy per row in nats, with 0 * ln 0 taken as 0."""
    safe = np.where(matrix > 0.0, matrix, 1.0)  # ln 1 = 0 makes the zero terms vanish
    entropy: FloatArray = -(matrix * np.log(safe)).sum(axis=1)
    return entropy


def mix_random(scores: npt.ArrayLike, *, fraction: float, rng: np.random.Generator) -> FloatArray:
    """Give round(fraction * n) randomly chosen rows a uniform random score in [0, 1).

    A queue ordered purely by uncertainty over-samples the decision boundary; a random
    share keeps an unbiased sample flowing in, which also keeps the cross-validated
    metrics honest. The input is not modified.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
    mixed = np.array(scores, dtype=np.float64, copy=True)
    count = round(fraction * mixed.shape[0])
    if count == 0:
        return mixed
    chosen = rng.choice(mixed.shape[0], size=count, replace=False)
    mixed[chosen] = rng.random(count)
    return mixed


def select_queue(scores: npt.ArrayLike, *, depth: int | None) -> IndexArray:
    """Indices of the `depth` lowest scores (all when None), lowest first.

    Ties keep their input order (a stable sort), so the same scores always give the
    same queue and a re-published version does not shuffle tied tasks.
    """
    if depth is not None and depth < 0:
        raise ValueError(f"depth must be >= 0 or None, got {depth!r}")
    order: IndexArray = np.argsort(np.asarray(scores, dtype=np.float64), kind="stable")
    return order if depth is None else order[:depth]


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Agreement between two annotators on the same tasks, beyond chance.

    None when there is nothing to compare, or when kappa is undefined (both annotators
    used one and the same label throughout: chance agreement is already 1).
    """
    if len(a) != len(b):
        raise ValueError(f"need paired labels, got {len(a)} and {len(b)}")
    if len(a) == 0:
        return None
    labels = sorted(set(a) | set(b))
    if len(labels) < 2:
        return None
    index = {label: i for i, label in enumerate(labels)}
    confusion = np.zeros((len(labels), len(labels)), dtype=np.float64)
    np.add.at(confusion, ([index[x] for x in a], [index[y] for y in b]), 1.0)
    observed = np.trace(confusion) / len(a)
    expected = float(confusion.sum(axis=1) @ confusion.sum(axis=0)) / len(a) ** 2
    if expected == 1.0:
        return None
    kappa = (observed - expected) / (1.0 - expected)
    return None if math.isnan(kappa) else float(kappa)
