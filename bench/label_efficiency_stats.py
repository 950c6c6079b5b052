"""Label efficiency over many seeds: paired statistics, pure functions, no I/O.

Every seed fixes the seed labels, so two samplers run on the same seed start from the
same reviews: the fair comparison is PAIRED, seed by seed. Two ratios are reported and
named apart, because they differ when the spread is wide:

- median of per-seed ratios: median over seeds of (sampler's labels needed / random's
  labels needed on the same seed) -- the paired figure, the one a target is judged on;
- ratio of medians: (median labels needed of the sampler) / (median of random) -- what
  the earlier 3-seed tables and issue 14's "0.64x" quote.

`sign_test` says whether a per-seed difference is beyond noise: with 10 seeds, one
configuration must beat the other on 9 of them (two-sided p = 0.021) before chance is
unlikely; 8 of 10 (p = 0.11) is not enough.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Spread:
    """Median, quartiles (inclusive method) and range of a sample."""

    median: float
    q1: float
    q3: float
    low: float
    high: float

    def text(self, digits: int = 3) -> str:
        return (
            f"{self.median:.{digits}g} (IQR {self.q1:.{digits}g}-{self.q3:.{digits}g}, "
            f"range {self.low:.{digits}g}-{self.high:.{digits}g})"
        )


def spread(values: Sequence[float]) -> Spread:
    """Median, quartiles and range; the quartiles of one value are that value."""
    if not values:
        raise ValueError("a spread needs at least one value")
    ordered = sorted(float(v) for v in values)
    if len(ordered) == 1:
        q1 = q3 = ordered[0]
    else:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    return Spread(statistics.median(ordered), q1, q3, ordered[0], ordered[-1])


def needed_or_bound(needed: int | None, *, most_labels: int) -> int:
    """Labels needed, or the most labels a run was given when it never reached the target."""
    return most_labels if needed is None else needed


def sign_test(differences: Sequence[float]) -> tuple[int, int, float]:
    """(wins, losses, two-sided p) of the exact sign test; ties (0) are dropped."""
    wins = sum(1 for d in differences if d > 0)
    losses = sum(1 for d in differences if d < 0)
    n = wins + losses
    if n == 0:
        return 0, 0, 1.0
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2**n
    return wins, losses, min(1.0, 2 * tail)


def paired(
    mine: Mapping[int, float], reference: Mapping[int, float], *, lower_is_better: bool
) -> dict[str, Any]:
    """Per-seed comparison of two configurations on the seeds both have.

    For labels needed (`lower_is_better`) the per-seed figure is mine / reference; for
    an area it is mine - reference. A win is a seed where `mine` is better.
    """
    seeds = sorted(set(mine) & set(reference))
    if not seeds:
        raise ValueError("no seed in common")
    if lower_is_better:
        per_seed = [mine[s] / reference[s] for s in seeds]
        better = [reference[s] - mine[s] for s in seeds]
    else:
        per_seed = [mine[s] - reference[s] for s in seeds]
        better = per_seed
    wins, losses, p_value = sign_test(better)
    return {
        "seeds": seeds,
        "per_seed": [round(v, 4) for v in per_seed],
        "spread": asdict(spread(per_seed)),
        "wins": wins,
        "losses": losses,
        "sign_test_p": round(p_value, 4),
    }


def ratio_of_medians(mine: Sequence[float], reference: Sequence[float]) -> float:
    """median(mine) / median(reference): the unpaired ratio."""
    return statistics.median(mine) / statistics.median(reference)
