"""Plain data that crosses module boundaries.

Label Studio payloads are turned into these records at the gateway's edge, so the store,
the reconcile diff and the cycle never see SDK objects or raw JSON. Every record is
frozen: a decision function can hold on to one without fearing it changes underneath.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aldaemon.sync.config_shapes import ServedControl, TextSource


@dataclass(frozen=True)
class AnnotationRecord:
    """One annotation as Label Studio holds it.

    `labels` is the annotation's answer for the project's Choices control: None when it
    has none (a skip, or a single-choice result without a choice), else every selected
    label in the order Label Studio holds them; in a multi-label project an annotation
    that selects nothing answers "none of these", the empty tuple. `label` is the first
    of them (None when there is none); given alone it is the one-label answer.
    """

    id: int
    task_id: int
    label: str | None
    was_cancelled: bool
    updated_at: str  # Label Studio's own ISO timestamp, kept verbatim
    completed_by: int | None = None
    labels: tuple[str, ...] | None = None
    ground_truth: bool = False

    def __post_init__(self) -> None:
        if self.labels is None and self.label is not None:
            object.__setattr__(self, "labels", (self.label,))


@dataclass(frozen=True)
class TaskRecord:
    """One task with every annotation it currently has.

    `text` is the value of the labeling config's text field, or None when the task's data
    lacks it or holds something that is not a string (such tasks are never scored).
    """

    id: int
    updated_at: str
    text: str | None
    annotations: tuple[AnnotationRecord, ...] = ()


@dataclass(frozen=True)
class LabelingSchema:
    """What the daemon needs from a project's labeling config."""

    text_field: str  # key in task.data, e.g. "text" for value="$text"
    from_name: str  # the Choices control's name
    to_name: str  # the Text object's name
    labels: tuple[str, ...]
    multiple: bool = False  # choice="multiple": any subset of labels, one-vs-rest models
    # <Labels> over <Text>: named entities; an answer is span codes (sync.span_answers)
    spans: bool = False
    # How the annotator's text is read from the task (sync.text_of_task); None: the field as is
    source: TextSource | None = None
    # Several <Choices> learned together (one model each); `labels` are then their codes
    # (sync.control_answers) and from_name/to_name those of the first. Empty: one control.
    controls: tuple[ServedControl, ...] = ()


@dataclass(frozen=True)
class ProjectInfo:
    """The project fields the daemon reads."""

    id: int
    title: str
    label_config: str
    model_version: str | None
    sampling: str | None
    show_collab_predictions: bool
    task_count: int | None = None


@dataclass(frozen=True)
class PredictionRecord:
    """One prediction the daemon uploads: the chosen label and its informativeness score.

    `score` is in [0, 1]; LOWER means MORE informative (Label Studio serves ascending).
    `labels` is set for a multi-label project: every label with p >= 0.5 (possibly none);
    `label` is then the first of them, or "" when there is none.
    `result` is set for a project served by an ML backend: the backend's own result list,
    uploaded as is (`label` is then only for display).
    """

    task_id: int
    label: str
    score: float
    cluster: int | None = None
    labels: tuple[str, ...] | None = None
    result: tuple[dict[str, Any], ...] | None = None


@dataclass(frozen=True)
class ViewInfo:
    """A Data Manager view, reduced to what the daemon manages."""

    id: int
    title: str
    data: dict[str, object]
