"""Model versions as pure data: their states, names, upload cuts and what counts as trained.

A version moves through these states; each is written to the store BEFORE the next step
touches Label Studio, so a crash resumes exactly where it stopped:

    training -> trained -> scored -> uploading -> uploaded -> active -> superseded -> pruned
        \\___________\\__________\\___________\\___________\\-> failed (never activated)

The enum values are the strings stored in SQLite since the first release: a state
directory written before the enum existed reads back unchanged.

Also here, because they are decisions without I/O: version naming, the fixed upload
batches and where an interrupted upload resumes, the queue view's data, and which labels
a task trains with (`training_examples`).
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aldaemon.records import LabelingSchema
from aldaemon.sync.consensus import LATEST, decide
from aldaemon.sync.labels import StoredAnnotation


class VersionState(enum.StrEnum):
    """Where a version stands; see the module docstring for the transitions."""

    TRAINING = "training"
    TRAINED = "trained"
    SCORED = "scored"
    UPLOADING = "uploading"
    UPLOADED = "uploaded"
    ACTIVE = "active"
    SUPERSEDED = "superseded"
    PRUNED = "pruned"
    FAILED = "failed"


# Left by a crash between starting a training and finishing its upload: resumed next cycle.
UNFINISHED_STATES = (
    VersionState.TRAINING,
    VersionState.TRAINED,
    VersionState.SCORED,
    VersionState.UPLOADING,
    VersionState.UPLOADED,
)
# Versions whose predictions are (or are being) in Label Studio.
LIVE_STATES = (
    VersionState.ACTIVE,
    VersionState.SUPERSEDED,
    VersionState.UPLOADED,
    VersionState.UPLOADING,
)


@dataclass(frozen=True)
class VersionRow:
    """One model version the daemon created, with its progress through the publish steps."""

    name: str
    number: int
    state: VersionState
    created_at: float
    trained_at: float | None = None
    n_labels: int | None = None
    class_counts: dict[str, int] | None = None
    metrics: dict[str, Any] | None = None
    train_seconds: float | None = None
    label_changes_at_training: int | None = None
    artifact_path: str | None = None
    n_predictions: int | None = None
    uploaded_count: int | None = None
    activated_at: float | None = None
    pruned_at: float | None = None
    error: str | None = None
    backend_version: str | None = None  # an ML backend's own model_version behind it


def is_trained(version: VersionRow) -> bool:
    """Whether a version's training finished (whatever happened to it since).

    The one definition that `status`, `report` and the retrain policy share.
    """
    return version.trained_at is not None and version.state != VersionState.FAILED


def trained_versions(versions: Iterable[VersionRow]) -> list[VersionRow]:
    """The trained ones among `versions`, in the given order."""
    return [version for version in versions if is_trained(version)]


def last_trained(versions: Sequence[VersionRow]) -> VersionRow | None:
    """The newest trained version of `versions` (listed oldest number first)."""
    trained = trained_versions(versions)
    return trained[-1] if trained else None


def label_changes_since_training(*, label_changes: int, versions: Sequence[VersionRow]) -> int:
    """Label changes recorded since the last finished training: what the policy counts."""
    last = last_trained(versions)
    at_training = (last.label_changes_at_training or 0) if last else 0
    return label_changes - at_training


def version_name(prefix: str, number: int) -> str:
    return f"{prefix}-v{number}"


def own_version_number(prefix: str, name: str) -> int | None:
    """The n of "<prefix>-v<n>", or None when the name is not one of ours."""
    match = re.fullmatch(re.escape(prefix) + r"-v(\d+)", name)
    return int(match.group(1)) if match else None


def batches(total: int, size: int) -> list[tuple[int, int]]:
    """Fixed [start, end) cuts of the stored predictions; the same after any restart."""
    return [(start, min(start + size, total)) for start in range(0, total, size)]


def resume_position(
    *, uploaded_count: int, server_count: int, cuts: Sequence[tuple[int, int]]
) -> int | None:
    """Where an interrupted upload resumes, judged from Label Studio's count for the version.

    The batch after `uploaded_count` was in flight when the process died. Label Studio's
    import is one transaction, so the server holds either `uploaded_count` predictions (it
    did not land) or `uploaded_count + len(batch)` (it did). Anything else means someone
    else touched the version: None, and the caller falls back to listing predictions.
    """
    if server_count == uploaded_count:
        return uploaded_count
    for start, end in cuts:
        if start == uploaded_count and server_count == end:
            return end
    return None


def queue_view_data(*, title: str, version: str) -> dict[str, object]:
    """The whole `data` of the queue view (PATCH replaces it, so always send all of it)."""
    return {
        "title": title,
        "type": "list",
        "target": "tasks",
        "filters": {
            "conjunction": "and",
            "items": [
                {
                    "filter": "filter:tasks:total_annotations",
                    "operator": "equal",
                    "type": "Number",
                    "value": 0,
                },
                {
                    "filter": "filter:tasks:predictions_model_versions",
                    "operator": "contains",
                    "type": "List",
                    "value": [version],
                },
                # "contains" matches substrings ("-v1" matches "-v10"). The score column is
                # the task's score under the project's active version only, so requiring
                # one keeps out tasks that the active version did not score.
                {
                    "filter": "filter:tasks:predictions_score",
                    "operator": "greater_or_equal",
                    "type": "Number",
                    "value": 0,
                },
            ],
        },
        "ordering": ["tasks:predictions_score"],
        "hiddenColumns": {"explore": [], "labeling": []},
    }


# --- training data ------------------------------------------------------------------------


@dataclass(frozen=True)
class AnnotatedTask:
    """A live task with text and its live, non-skip, labeled annotations, as stored."""

    task_id: int
    text: str
    annotations: tuple[StoredAnnotation, ...]


@dataclass(frozen=True)
class TrainingExample:
    """One task a model trains on: its text and the answer `choose_training_labels` picked.

    `labels` is the whole answer (a multi-label one may be empty: "none of these");
    `label` is its first label, or "" when it has none.
    """

    task_id: int
    text: str
    label: str
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.labels and self.label:
            object.__setattr__(self, "labels", (self.label,))


def training_examples(
    tasks: Iterable[AnnotatedTask], policy: str = LATEST
) -> list[TrainingExample]:
    """The example each task trains with under the label `policy` (sync.consensus); tasks
    whose annotations carry no answer, or that the policy withholds, drop out."""
    examples = []
    for task in tasks:
        labels = decide(task.annotations, policy).labels
        if labels is not None:
            examples.append(
                TrainingExample(
                    task_id=task.task_id,
                    text=task.text,
                    label=labels[0] if labels else "",
                    labels=labels,
                )
            )
    return examples


def label_counts(tasks: Iterable[AnnotatedTask], policy: str = LATEST) -> dict[str, int]:
    """Training examples per label (a label's positives when an example has several),
    counted exactly as `training_examples` yields them."""
    examples = training_examples(tasks, policy)
    return dict(Counter(label for example in examples for label in example.labels))


def withheld_tasks(tasks: Iterable[AnnotatedTask], policy: str) -> dict[int, str]:
    """{task id: reason} of the tasks the label `policy` withholds from training."""
    withheld: dict[int, str] = {}
    if policy == LATEST:  # the newest answer always decides: nothing to read
        return withheld
    for task in tasks:
        reason = decide(task.annotations, policy).withheld
        if reason is not None:
            withheld[task.task_id] = reason
    return withheld


def split_by_config(
    counts: Mapping[str, int], config_labels: Collection[str] | None
) -> tuple[dict[str, int], dict[str, int]]:
    """(labels the config has, labels it does not): only the first train a model.

    With no known config (`None`: never read yet) every label counts as the config's.
    """
    if config_labels is None:
        return dict(counts), {}
    kept = {label: n for label, n in counts.items() if label in config_labels}
    rest = {label: n for label, n in counts.items() if label not in config_labels}
    return kept, rest


# --- labeling-config changes --------------------------------------------------------------


@dataclass(frozen=True)
class SchemaChange:
    """What changed in the labeling config since the daemon last acted on it."""

    added_labels: tuple[str, ...] = ()
    removed_labels: tuple[str, ...] = ()
    text_field_before: str | None = None  # both set only when the text field was renamed
    text_field_after: str | None = None
    # the answer shape changed (e.g. <Choices> to <Labels>): stored answers must be re-read
    answers_reshaped: bool = False

    @property
    def text_field_changed(self) -> bool:
        return self.text_field_before is not None


def schema_change(
    previous: Mapping[str, Any] | None, schema: LabelingSchema
) -> SchemaChange | None:
    """How `schema` differs from the stored one in what the daemon must redo; None: nothing.

    A reordered label list or a renamed control is no change here: predictions are built
    from the current schema at upload time, and the model does not care.
    """
    if previous is None:
        return None
    before_labels = [str(label) for label in previous.get("labels", [])]
    added = tuple(label for label in schema.labels if label not in before_labels)
    removed = tuple(label for label in before_labels if label not in schema.labels)
    before_field = previous.get("text_field")
    field_changed = before_field is not None and before_field != schema.text_field
    reshaped = previous.get("answers", PLAIN_ANSWERS) != answer_shape(schema)
    if not (added or removed or field_changed or reshaped):
        return None
    return SchemaChange(
        added_labels=added,
        removed_labels=removed,
        text_field_before=str(before_field) if field_changed else None,
        text_field_after=schema.text_field if field_changed else None,
        answers_reshaped=reshaped,
    )


def schema_change_notices(
    change: SchemaChange, *, min_per_class: int, label_counts: Mapping[str, int]
) -> list[tuple[str, str]]:
    """(what changed, what happens and what to do) for each part of `change`, for the log."""
    notices: list[tuple[str, str]] = []
    for label in change.added_labels:
        have = label_counts.get(label, 0)
        notices.append(
            (
                f"label {label!r} added",
                f"retraining with {label!r} once it has {min_per_class} annotations "
                f"(min_per_class; it has {have}); until then the current model stays active: "
                f"annotate tasks as {label!r}",
            )
        )
    for label in change.removed_labels:
        notices.append(
            (
                f"label {label!r} removed",
                f"its {label_counts.get(label, 0)} annotation(s) are left out of training and "
                f"no prediction Label Studio serves carries {label!r} (the active version is "
                "republished without it until a retrained one replaces it); relabel those "
                "annotations in Label Studio if they should count",
            )
        )
    if change.text_field_changed:
        notices.append(
            (
                f"text field renamed from {change.text_field_before!r} to "
                f"{change.text_field_after!r}",
                f"re-reading every task's text from data.{change.text_field_after}, then "
                "retraining; tasks without that field are skipped",
            )
        )
    if change.answers_reshaped:
        notices.append(
            (
                "the shape of an answer changed (choices, entity spans or several controls)",
                "re-reading every task's annotations in the new shape, then retraining",
            )
        )
    return notices


def model_misfit(
    *, model_labels: Collection[str] | None, schema_labels: Sequence[str]
) -> str | None:
    """Why the last model's labels no longer match the labeling config's; None when they do.

    Read from the versions table (the labels a model was trained on), so a label added
    while it is short of examples still retrains the moment its cold start ends.
    """
    if model_labels is None:
        return None
    added = [f"label {label!r} added" for label in schema_labels if label not in model_labels]
    removed = [
        f"label {label!r} removed" for label in sorted(model_labels) if label not in schema_labels
    ]
    return ", ".join(added + removed) or None


def removed_model_labels(version: VersionRow, schema_labels: Collection[str]) -> list[str]:
    """Labels the version's model knows that the labeling config no longer has, sorted."""
    return sorted(set(version.class_counts or {}) - set(schema_labels))


def outdated_version_reason(
    version: VersionRow, *, schema_labels: Sequence[str], text_field_changed: bool
) -> str | None:
    """Why a labeling-config change made an unfinished version wrong; None: it still fits.

    Its model predicts a removed label (Label Studio would drop those predictions, and
    annotators must never see them), or it read the old text field.
    """
    removed = removed_model_labels(version, schema_labels)
    if removed:
        return (
            f"labeling config changed: it predicts removed label(s) {', '.join(map(repr, removed))}"
        )
    if text_field_changed:
        return "labeling config changed: it was trained on the old text field"
    return None


def schema_to_json(
    schema: LabelingSchema,
    *,
    previous: Mapping[str, Any] | None = None,
    change: SchemaChange | None = None,
) -> dict[str, Any]:
    """The stored form, with every label ever removed from the config (announced once)."""
    removed = [str(label) for label in (previous or {}).get("removed_labels", [])]
    removed += [
        label for label in (change.removed_labels if change else ()) if label not in removed
    ]
    return {
        "text_field": schema.text_field,
        "from_name": schema.from_name,
        "to_name": schema.to_name,
        "labels": list(schema.labels),
        "removed_labels": [label for label in removed if label not in schema.labels],
        # how an annotation's answer is stored, said only when it is not plain labels
        **({"answers": shape} if (shape := answer_shape(schema)) != PLAIN_ANSWERS else {}),
    }


PLAIN_ANSWERS = "labels"


def answer_shape(schema: LabelingSchema) -> str:
    """How answers are stored: plain labels, span codes (sync/span_answers.py), or
    control codes (sync/control_answers.py). A change means every stored answer is stale."""
    if schema.spans:
        return "spans"
    if schema.controls:
        return "controls"
    return PLAIN_ANSWERS
