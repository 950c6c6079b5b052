"""Which label a task trains with, from the annotations local state holds for it.

Several annotators may answer the same task, skip it, or edit an answer later; the rule
that picks one training label lives here, beside the stored form it reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aldaemon.sync.timestamps import parse_ls_datetime


@dataclass(frozen=True)
class StoredAnnotation:
    """An annotation as local state holds it: what the diff compares fetched ones against."""

    id: int
    task_id: int
    label: str | None
    was_cancelled: bool
    updated_at: str
    deleted: bool = False
    # The answer (see records.AnnotationRecord.labels); derived from `label` when omitted.
    labels: tuple[str, ...] | None = None
    ground_truth: bool = False  # marked ground truth in Label Studio: it always wins
    completed_by: int | None = None  # the annotator: each votes once (sync.consensus)

    def __post_init__(self) -> None:
        if self.labels is None and self.label is not None:
            object.__setattr__(self, "labels", (self.label,))


def carries_label(*, labels: tuple[str, ...] | None, was_cancelled: bool) -> bool:
    """Whether an annotation contributes a training answer (a skip never does).

    An empty tuple is an answer: a multi-label "none of these" trains every negative.
    """
    return labels is not None and not was_cancelled


def choose_training_label(annotations: Sequence[StoredAnnotation]) -> str | None:
    """The first label of `choose_training_labels`' answer (None when it has none)."""
    labels = choose_training_labels(annotations)
    return labels[0] if labels else None


def choose_training_labels(annotations: Sequence[StoredAnnotation]) -> tuple[str, ...] | None:
    """The answer a task trains with: its newest live annotation that carries one.

    Newest by `updated_at` as an instant, then by id (Label Studio ids grow), so a re-edit
    by any annotator wins over older opinions. Skips, deleted annotations and annotations
    without an answer never decide. None when no annotation carries one.
    """
    candidates = [
        a
        for a in annotations
        if not a.deleted and carries_label(labels=a.labels, was_cancelled=a.was_cancelled)
    ]
    if not candidates:
        return None
    newest = max(candidates, key=lambda a: (parse_ls_datetime(a.updated_at), a.id))
    return newest.labels
