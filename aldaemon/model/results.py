"""What the model jobs return: plain frozen data, picklable across the process boundary.

Kept apart from training.py so the daemon's main process can name these types without
importing scikit-learn (1.2 s and ~135 MB of RSS it never needs: sklearn only runs in
the worker).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainingResult:
    """What a training produced; `metrics` is empty when there were too few labels to CV."""

    classes: tuple[str, ...]
    n_labels: int
    class_counts: dict[str, int]
    metrics: dict[str, float]  # cv_accuracy, cv_macro_f1
    train_seconds: float  # fitting, cross-validation included; saving excluded
    artifact_path: str
    # Example indices whose given label the cross-validation confidently contradicts,
    # most suspect first (model.label_issues); empty without cross-validation.
    suspects: tuple[int, ...] = ()


@dataclass(frozen=True)
class ScoredPool:
    """Per task, in the order given: the predicted label and its informativeness score.

    A multi-label model also gives `label_sets`: per task the labels with p >= 0.5
    (possibly none); `labels` then holds the first of each, or "".
    """

    task_ids: tuple[int, ...]
    labels: tuple[str, ...]
    scores: tuple[float, ...]  # in [0, 1], LOWER = MORE informative
    clusters: tuple[int, ...] | None
    label_sets: tuple[tuple[str, ...], ...] | None = None


@dataclass(frozen=True)
class PoolScores:
    """What a pool scoring job found: the queue it chose, and what it did to get there."""

    queue: ScoredPool  # the chosen tasks, by task id
    n_scored: int  # tasks scored (every pool task with text)
    n_skipped: int  # pool tasks without text, not scored
    skipped_ids: tuple[int, ...]  # the first of them, for the log
    features_computed: int  # tasks whose cached features were missing or stale
    features_reused: int  # tasks scored from their cached features
