"""When to retrain: a pure function of counters, configuration and the clock.

Training too often wastes CPU and churns the annotators' queue; too rarely and the queue
is ordered by a stale model. The rules, in the order they are checked:

1. Cold start: no model until every class has `min_per_class` labels. A model that has
   never seen a class cannot rank tasks by how unsure it is about that class.
2. Forced (the cron trigger): train on any change, or when there is no model yet.
3. Threshold: `min_new_annotations` label changes, and `min_interval` seconds since the
   last training (the interval does not apply to the first model).
4. Staleness: once `max_interval` seconds have passed, any single change retrains, so a
   slow trickle of labels still reaches the model.

The reason string is shown in `aldaemon status` and in logs, so it says what is missing.

Intervals are measured on the monotonic clock once the process has seen the training it
counts from (`seconds_since_attempt`): a wall clock stepped back (NTP, a VM restore) must
not hold training back by the size of the step. The stored wall-clock times only start the
measure, and tell how far the wall clock is behind, for the `clock.stepped_back` event.
The periodic full id listing (`resync_interval`) is measured the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

CLOCK_STEP_TOLERANCE_SECONDS = 5.0  # less is scheduling jitter and NTP slewing, not a step


@dataclass(frozen=True)
class IntervalAnchor:
    """At monotonic reading `monotonic`, `elapsed` seconds had passed since `attempt_at`."""

    attempt_at: float  # the stored wall-clock time of the training attempt
    elapsed: float
    monotonic: float


@dataclass(frozen=True)
class Elapsed:
    """Seconds since the last training attempt, and what to measure the next time from."""

    seconds: float
    anchor: IntervalAnchor
    wall_behind: float  # how far the wall clock is behind the measure; 0 when not stepped


def seconds_since_attempt(
    *,
    attempt_at: float,
    wall_now: float,
    monotonic_now: float,
    anchor: IntervalAnchor | None,
) -> Elapsed:
    """Time since the attempt at wall time `attempt_at`, on the monotonic clock when known.

    `anchor` is the previous answer's, for the same project in this process. For the same
    attempt, the measure goes on from it on the monotonic clock, whatever the wall clock
    did meanwhile. For an attempt not seen before (a new one, or a fresh process), the wall
    clock starts it; a negative difference (the clock is behind the stored time) counts
    as 0, so the wait is at most the interval itself.
    """
    wall_elapsed = wall_now - attempt_at
    if anchor is not None and anchor.attempt_at == attempt_at:
        seconds = anchor.elapsed + max(0.0, monotonic_now - anchor.monotonic)
    else:
        seconds = max(0.0, wall_elapsed)
    behind = seconds - wall_elapsed
    return Elapsed(
        seconds=seconds,
        anchor=IntervalAnchor(attempt_at=attempt_at, elapsed=seconds, monotonic=monotonic_now),
        wall_behind=behind if behind > CLOCK_STEP_TOLERANCE_SECONDS else 0.0,
    )


@dataclass(frozen=True)
class TrainingDecision:
    """Whether to train now, and why (or why not yet)."""

    train: bool
    reason: str


def decide_training(
    *,
    label_changes_since_training: int,
    seconds_since_training: float | None,
    class_counts: Mapping[str, int],
    labels: Sequence[str],
    min_new_annotations: int,
    min_interval: float,
    min_per_class: int,
    max_interval: float | None,
    forced: bool = False,
    has_model: bool,
) -> TrainingDecision:
    """Decide whether a project trains now.

    `label_changes_since_training` counts created, updated and deleted labels since the
    last training (all labels when there is none). `seconds_since_training` is None when
    the project never trained; with a model but no known time, the interval counts as
    elapsed, since the training happened before anything we remember.
    """
    short = _classes_short_of(class_counts=class_counts, labels=labels, needed=min_per_class)
    if short:
        return TrainingDecision(False, "cold start: " + ", ".join(short))

    changes = label_changes_since_training
    if forced:
        if not has_model:
            return TrainingDecision(True, "forced: no model yet")
        if changes >= 1:
            return TrainingDecision(True, f"forced: {_labels(changes)} since the last training")
        return TrainingDecision(False, "forced: no new labels since the last training")

    if changes <= 0:
        return TrainingDecision(False, "no new labels since the last training")

    threshold = max(1, min_new_annotations)  # 0 would retrain on every poll with no change
    elapsed = None if not has_model else seconds_since_training
    wait = _seconds_until(elapsed, min_interval)

    if changes >= threshold:
        if not has_model:
            return TrainingDecision(True, f"first model: {_labels(changes)}")
        if wait > 0:
            return TrainingDecision(False, f"next training allowed in {_whole(wait)} s")
        return TrainingDecision(True, f"{_labels(changes)} (threshold {threshold})")

    if max_interval is not None and has_model:
        stale_wait = max(_seconds_until(elapsed, max_interval), wait)
        if stale_wait <= 0:
            return TrainingDecision(
                True, f"{_labels(changes)} and over {_whole(max_interval)} s since training"
            )
        return TrainingDecision(
            False,
            f"{changes} of {threshold} new labels; any change trains in {_whole(stale_wait)} s",
        )
    return TrainingDecision(False, f"{changes} of {threshold} new labels")


def _classes_short_of(
    *, class_counts: Mapping[str, int], labels: Sequence[str], needed: int
) -> list[str]:
    """Each class below `needed`, described as "'neg' has 1 of 2 labels", in schema order."""
    return [
        f"{label!r} has {class_counts.get(label, 0)} of {needed} labels"
        for label in labels
        if class_counts.get(label, 0) < needed
    ]


def _seconds_until(elapsed: float | None, interval: float) -> float:
    """Seconds left before `interval` has passed; 0 when it has, or when never trained."""
    if elapsed is None:
        return 0.0
    return max(0.0, interval - elapsed)


def _whole(seconds: float) -> int:
    """Round up, so "allowed in 0 s" is never shown while training is still refused."""
    return math.ceil(seconds)


def _labels(count: int) -> str:
    return f"{count} new label" if count == 1 else f"{count} new labels"
