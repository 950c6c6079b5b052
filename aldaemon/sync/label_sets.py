"""What "enough labels" means when an annotation may select several labels, or none.

A single-choice project trains one multiclass model: each label needs `min_per_class`
examples. A multi-label project (`<Choices choice="multiple">`) trains one binary model
per label, and a binary model needs both answers: each label needs `min_per_class`
POSITIVES (examples selecting it) AND `min_per_class` NEGATIVES (examples that do not,
"none of these" included). The cold start therefore reads, per label, the smaller of the
two counts, so the policy's message "'x' has 1 of 2 labels" names the side that is short.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from aldaemon.records import LabelingSchema
from aldaemon.sync.consensus import LATEST
from aldaemon.sync.versions import AnnotatedTask, TrainingExample, training_examples


def cold_start_counts(
    tasks: Iterable[AnnotatedTask], schema: LabelingSchema, policy: str = LATEST
) -> dict[str, int]:
    """Per config label, the count `min_per_class` is held against (see the module)."""
    examples = training_examples(tasks, policy)
    if not schema.multiple:
        return {label: sum(1 for e in examples if e.label == label) for label in schema.labels}
    return {
        label: min(positives, len(examples) - positives)
        for label, positives in positive_counts(examples, schema.labels).items()
    }


def positive_counts(examples: Sequence[TrainingExample], labels: Sequence[str]) -> dict[str, int]:
    """Per label, the examples selecting it (a multi-label model's `class_counts`)."""
    return {label: sum(1 for e in examples if label in e.labels) for label in labels}


def keep_config_labels(
    examples: Sequence[TrainingExample], allowed: Iterable[str]
) -> list[TrainingExample]:
    """Multi-label examples with labels outside the config dropped from their sets.

    The example itself stays: its other answers (and "not selected") still teach.
    """
    keep = set(allowed)
    return [
        TrainingExample(
            task_id=e.task_id,
            text=e.text,
            label=next((label for label in e.labels if label in keep), ""),
            labels=tuple(label for label in e.labels if label in keep),
        )
        for e in examples
    ]
