"""Learning-curve arithmetic for the label-efficiency benchmark: pure functions, no I/O.

A curve is a list of (labels, accuracy) points measured after each retrain, labels
ascending. Two figures summarise it:

- labels needed: the first label count whose accuracy reaches `target` (99 % of the
  accuracy of the model trained on every training review); None when the curve never
  gets there within the label cap (a censored run: "more than the cap");
- area under the curve: the trapezoid area over the labels axis divided by its width,
  i.e. the mean accuracy over the label budget. It rewards being good early, and does
  not hinge on one lucky point the way a threshold crossing does.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

Point = tuple[int, float]


def labels_needed(curve: Sequence[Point], *, target: float) -> int | None:
    """The first label count at which accuracy >= target; None if it never does."""
    for labels, accuracy in curve:
        if accuracy >= target:
            return labels
    return None


def normalized_area(curve: Sequence[Point]) -> float:
    """Trapezoid area under accuracy over labels, divided by the labels spanned."""
    if len(curve) < 2:
        raise ValueError("an area needs at least two points")
    area = 0.0
    for (x0, y0), (x1, y1) in itertools.pairwise(curve):
        if x1 <= x0:
            raise ValueError(f"label counts must ascend, got {x0} then {x1}")
        area += (x1 - x0) * (y0 + y1) / 2.0
    return area / (curve[-1][0] - curve[0][0])


@dataclass(frozen=True)
class Comparison:
    """One sampler against random over the same seeds: medians and per-seed ratios."""

    ratios: tuple[float | None, ...]  # labels needed / random's labels needed, per seed
    median_ratio: float | None
    censored: bool  # some run never reached the target, so some ratio is only a bound


def compare_to_random(
    needed: Sequence[int | None], random_needed: Sequence[int | None], *, cap: int
) -> Comparison:
    """Per-seed ratio of labels needed; a run that never reached the target counts as `cap`.

    `cap` is the most labels a run was given. A censored run's true need is larger, so
    its ratio is only a bound, and the comparison is flagged as censored.
    """
    if len(needed) != len(random_needed):
        raise ValueError(f"need paired seeds, got {len(needed)} and {len(random_needed)}")
    ratios: list[float | None] = []
    censored = False
    for mine, theirs in zip(needed, random_needed, strict=True):
        censored = censored or mine is None or theirs is None
        mine_or_cap = cap if mine is None else mine
        theirs_or_cap = cap if theirs is None else theirs
        ratios.append(mine_or_cap / theirs_or_cap if theirs_or_cap else None)
    known = [r for r in ratios if r is not None]
    median_ratio = float(statistics.median(known)) if known else None
    return Comparison(ratios=tuple(ratios), median_ratio=median_ratio, censored=censored)
