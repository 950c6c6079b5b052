"""Plain data that crosses module boundaries.

Label Studio payloads are turned into these records at the gateway's edge, so the store,
the reconcile diff and the cycle never see SDK objects or raw JSON. Every record is
frozen: a decision function can hold on to one without fearing it changes underneath.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AnnotationRecord:
    """One annotation as Label Studio holds it.

    `label` is the first choice of the project's Choices control, or None when the
    annotation is a skip (`was_cancelled`) or its result carries no choice.
    """

    id: int
    task_id: int
    label: str | None
    was_cancelled: bool
    updated_at: str  # Label Studio's own ISO timestamp, kept verbatim
    completed_by: int | None = None


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
    """

    task_id: int
    label: str
    score: float
    cluster: int | None = None


@dataclass(frozen=True)
class ViewInfo:
    """A Data Manager view, reduced to what the daemon manages."""

    id: int
    title: str
    data: dict[str, object]
