"""What "enough labels" means when an annotation may select several labels, or none.

A single-choice project trains one multiclass model: each label needs `min_per_class`
examples. A multi-label project (`<Choices choice="multiple">`) trains one binary model
per label, and a binary model needs both answers: each label needs `min_per_class`
POSITIVES (examples selecting it) AND `min_per_class` NEGATIVES (examples that do not,
"none of these" included). The cold start therefore reads, per label, the smaller of the
two counts, so the policy's message "'x' has 1 of 2 labels" names the side that is short.
A named-entity project (`<Labels>` over `<Text>`) counts annotated SPANS per entity label.
Several controls: each label of each control is counted as that control alone would be.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aldaemon.records import LabelingSchema
from aldaemon.sync.consensus import LATEST
from aldaemon.sync.control_answers import controls_cold_start_counts
from aldaemon.sync.span_answers import decode_spans, entity_counts, keep_config_spans
from aldaemon.sync.versions import (
    AnnotatedTask,
    TrainingExample,
    label_counts,
    split_by_config,
    training_examples,
)


def cold_start_counts(
    tasks: Iterable[AnnotatedTask], schema: LabelingSchema, policy: str = LATEST
) -> dict[str, int]:
    """Per config label, the count `min_per_class` is held against (see the module)."""
    examples = training_examples(tasks, policy)
    if schema.controls:  # several <Choices>: each control its own cold start
        return controls_cold_start_counts([e.labels for e in examples], schema.controls)
    if schema.spans:  # named entities: annotated spans per entity label
        return entity_counts((e.labels for e in examples), schema.labels)
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


def answer_labels(example: TrainingExample, schema: LabelingSchema) -> tuple[str, ...]:
    """The labels an example's answer uses (a span code's label for named entities)."""
    if schema.spans:
        return tuple(span.label for span in decode_spans(example.labels))
    return example.labels


def keep_config_answers(
    examples: Sequence[TrainingExample], schema: LabelingSchema
) -> list[TrainingExample]:
    """Examples with the labels (or spans) outside the config dropped from their answers."""
    if not schema.spans:
        return keep_config_labels(examples, schema.labels)
    kept = []
    for e in examples:
        codes = keep_config_spans(e.labels, schema.labels)
        label = decode_spans(codes[:1])[0].label if codes else ""
        kept.append(TrainingExample(task_id=e.task_id, text=e.text, label=label, labels=codes))
    return kept


def stored_label_counts(
    tasks: Iterable[AnnotatedTask],
    stored_schema: Mapping[str, Any] | None,
    policy: str = LATEST,
) -> dict[str, int]:
    """Training examples per label for `status` (named entities: annotated spans per label),
    counted under the project's label `policy`."""
    if (stored_schema or {}).get("answers") != "spans":
        return label_counts(tasks, policy)
    counts: dict[str, int] = {}
    for example in training_examples(tasks, policy):
        for span in decode_spans(example.labels):
            counts[span.label] = counts.get(span.label, 0) + 1
    return counts


def trainable_label_counts(
    tasks: Iterable[AnnotatedTask],
    stored_schema: Mapping[str, Any] | None,
    policy: str = LATEST,
) -> tuple[dict[str, int], dict[str, int]]:
    """(labels that train, labels the stored labeling config does not have), per label.

    The one count that `status`, the `aldaemon_labels` gauge and the report show: a label
    removed from the config (or never in it) trains nothing, so it is listed apart.
    """
    counts = stored_label_counts(tasks, stored_schema, policy)
    return split_by_config(counts, stored_schema.get("labels") if stored_schema else None)
