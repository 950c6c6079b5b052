"""Label Studio JSON in and out, as pure functions: queries, records, prediction bodies.

Everything Label Studio-shaped is built or read here, so the gateway only moves bytes and
the rest of the daemon only sees records. Each function is pure and tested without a
server; the facts they encode were checked against Label Studio 1.23.2 (see the gateway
tests, which run against a real server).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aldaemon.records import (
    AnnotationRecord,
    LabelingSchema,
    PredictionRecord,
    ProjectInfo,
    TaskRecord,
    ViewInfo,
)
from aldaemon.sync.config_shapes import MultiChoice, ServedControl, TextReading, TextSource
from aldaemon.sync.control_answers import answers_of, decode_choice, encode_choice
from aldaemon.sync.shape_results import choices_results as shape_choices_results
from aldaemon.sync.shape_results import span_results
from aldaemon.sync.span_answers import SpanAnswer, decode_span, decode_spans, span_codes_of_result
from aldaemon.sync.text_of_task import TaskTextError, text_of_task
from aldaemon.sync.timestamps import format_ls_datetime, parse_ls_datetime

# `include` selects task fields AND annotation fields: without result/was_cancelled the
# annotations come back as bare {id, updated_at}.
TASK_INCLUDE = "id,updated_at,data,annotations,result,was_cancelled,completed_by,ground_truth"
TASK_ID_INCLUDE = "id"
# The task's model versions, joined by commas ("aldaemon-v3,aldaemon-v4").
TASK_VERSIONS_INCLUDE = "id,predictions_model_versions"


def task_query(
    *,
    updated_after: str | None,
    after_id: int | None,
    up_to_id: int | None = None,
    model_version: str | None = None,
    highest_first: bool = False,
) -> str:
    """The Data Manager `query` parameter (a JSON string) for one page of the task scan.

    Ordered by id and narrowed by `id > after_id`, so paging never depends on offsets that
    shift while annotators work. `id <= up_to_id` cuts a page into id ranges, which is how
    the gateway reads around a task Label Studio cannot serve and reads a whole project
    in windows; `highest_first` reverses the order (the highest id, where a window scan
    ends). `model_version` keeps the
    tasks holding a prediction of a version whose name CONTAINS it (Label Studio 1.23
    matches substrings: "v1" also finds "v10"; `versions_of_task` tells them apart).
    """
    items: list[dict[str, object]] = []
    if model_version is not None:
        items.append(
            {
                "filter": "filter:tasks:predictions_model_versions",
                "operator": "contains",
                "type": "List",
                "value": [model_version],
            }
        )
    if updated_after is not None:
        items.append(
            {
                "filter": "filter:tasks:updated_at",
                "operator": "greater",
                "type": "Datetime",
                "value": format_ls_datetime(parse_ls_datetime(updated_after)),
            }
        )
    if after_id is not None:
        items.append(
            {
                "filter": "filter:tasks:id",
                "operator": "greater",
                "type": "Number",
                "value": after_id,
            }
        )
    if up_to_id is not None:
        items.append(
            {
                "filter": "filter:tasks:id",
                "operator": "less_or_equal",
                "type": "Number",
                "value": up_to_id,
            }
        )
    ordering = ["-tasks:id" if highest_first else "tasks:id"]
    query = {"filters": {"conjunction": "and", "items": items}, "ordering": ordering}
    return json.dumps(query, separators=(",", ":"))


def first_choice(result: object, from_name: str) -> str | None:
    """The first choice the `from_name` control holds in an annotation result, if any."""
    if not isinstance(result, list):
        return None
    for region in result:
        if not isinstance(region, Mapping) or region.get("from_name") != from_name:
            continue
        value = region.get("value")
        choices = value.get("choices") if isinstance(value, Mapping) else None
        if isinstance(choices, list) and choices and isinstance(choices[0], str):
            return choices[0]
    return None


def all_choices(result: object, from_name: str) -> tuple[str, ...]:
    """Every choice the `from_name` control holds in an annotation result, in order."""
    if not isinstance(result, list):
        return ()
    chosen: list[str] = []
    for region in result:
        if not isinstance(region, Mapping) or region.get("from_name") != from_name:
            continue
        value = region.get("value")
        choices = value.get("choices") if isinstance(value, Mapping) else None
        if isinstance(choices, list):
            chosen += [c for c in choices if isinstance(c, str) and c not in chosen]
    return tuple(chosen)


def _control_answers(result: object, schema: LabelingSchema) -> tuple[str, ...]:
    codes: list[str] = []
    for control in schema.controls:
        chosen = all_choices(result, control.name)
        if not isinstance(control, MultiChoice):
            chosen = chosen[:1]
        codes += [encode_choice(control.name, label) for label in chosen]
    return tuple(codes)


def _first_label(labels: tuple[str, ...] | None, schema: LabelingSchema) -> str | None:
    """The `label` column: the first label of the answer, decoded from its code."""
    if not labels:
        return None
    if schema.spans:
        return decode_span(labels[0]).label
    if schema.controls:
        return decode_choice(labels[0])[1]
    return labels[0]


def parse_annotation(
    raw: Mapping[str, Any], *, task_id: int, schema: LabelingSchema
) -> AnnotationRecord:
    """One annotation from a task listing; a skip never carries a label.

    Single choice: the first choice, or no answer when there is none. Multi-label: every
    choice; a submitted annotation selecting nothing answers "none of these" (empty).
    """
    was_cancelled = bool(raw.get("was_cancelled", False))
    labels: tuple[str, ...] | None
    if was_cancelled:
        labels = None
    elif schema.controls:  # every control's choices as codes (sync/control_answers.py)
        labels = _control_answers(raw.get("result"), schema)
    elif schema.spans:  # every span as a code; none: "no entity in this text"
        labels = span_codes_of_result(raw.get("result"), schema.from_name)
    elif schema.multiple:
        labels = all_choices(raw.get("result"), schema.from_name)
    else:
        first = first_choice(raw.get("result"), schema.from_name)
        labels = (first,) if first is not None else None
    label = _first_label(labels, schema)
    completed_by = raw.get("completed_by")
    if isinstance(completed_by, Mapping):  # some serializers expand the user
        completed_by = completed_by.get("id")
    return AnnotationRecord(
        id=int(raw["id"]),
        task_id=task_id,
        label=label,
        was_cancelled=was_cancelled,
        updated_at=str(raw.get("updated_at") or ""),
        completed_by=int(completed_by) if isinstance(completed_by, int) else None,
        labels=labels,
        ground_truth=bool(raw.get("ground_truth", False)),
    )


def parse_task(raw: Mapping[str, Any], schema: LabelingSchema) -> TaskRecord:
    """One task from a listing made with TASK_INCLUDE."""
    task_id = int(raw["id"])
    data = raw.get("data")
    text = _task_text(data, schema)
    annotations = raw.get("annotations") or []
    return TaskRecord(
        id=task_id,
        updated_at=str(raw.get("updated_at") or ""),
        text=text if isinstance(text, str) else None,
        annotations=tuple(
            parse_annotation(annotation, task_id=task_id, schema=schema)
            for annotation in annotations
        ),
    )


def versions_of_task(raw: Mapping[str, Any]) -> frozenset[str]:
    """The model versions a task holds predictions of, from a TASK_VERSIONS_INCLUDE listing.

    Label Studio joins them with commas; aldaemon's own names hold none (letters, digits,
    "-" and "_"), so splitting gives each of ours back exactly.
    """
    joined = raw.get("predictions_model_versions")
    if not isinstance(joined, str):
        return frozenset()
    return frozenset(name.strip() for name in joined.split(",") if name.strip())


def _task_text(data: object, schema: LabelingSchema) -> object:
    """What the annotator reads: HTML stripped, dialogue lines joined (sync.text_of_task).

    None when the task has no such text (missing field, wrong type, a link): it is then
    never scored, and the scorer says so.
    """
    if not isinstance(data, Mapping):
        return None
    if schema.source is None:
        return data.get(schema.text_field)
    try:
        return text_of_task(data, schema.source)
    except TaskTextError:
        return None


def choices_result(schema: LabelingSchema, *labels: str) -> list[dict[str, object]]:
    """An annotation/prediction result choosing `labels` in the schema's Choices control.

    No label, no result: a multi-label prediction of "none of these" looks exactly like
    an annotation that selects nothing.
    """
    if not labels:
        return []
    return [
        {
            "from_name": schema.from_name,
            "to_name": schema.to_name,
            "type": "choices",
            "value": {"choices": list(labels)},
        }
    ]


def _prediction_result(
    schema: LabelingSchema, labels: Sequence[str], spans: Sequence[SpanAnswer]
) -> list[dict[str, Any]]:
    if schema.spans:
        return span_result(schema, spans)
    if schema.controls:  # one result per control that predicts a label
        return [
            result
            for control in schema.controls
            for result in shape_choices_results(control, answers_of(labels, control.name))
        ]
    return choices_result(schema, *labels)


def span_result(schema: LabelingSchema, spans: Sequence[SpanAnswer]) -> list[dict[str, Any]]:
    """A prediction result holding `spans` in the schema's <Labels> control (shape_results)."""
    source = schema.source or TextSource(
        object_name=schema.to_name, reading=TextReading.TEXT, field=schema.text_field
    )
    control = ServedControl(
        name=schema.from_name, to_name=schema.to_name, source=source, labels=schema.labels
    )
    return span_results(control, [_PredictedSpan(s.start, s.end, s.label) for s in spans])


@dataclass(frozen=True)
class _PredictedSpan:
    """A stored predicted span as shape_results.span_results reads it (text unknown here)."""

    start: int
    end: int
    label: str
    text: str = ""
    score: float | None = None


def prediction_payloads(
    predictions: Sequence[PredictionRecord], *, model_version: str, schema: LabelingSchema
) -> list[dict[str, object]]:
    """Bodies for `import/predictions`, refusing what Label Studio would drop or garble.

    Label Studio silently drops a result whose label is not in the config (created < sent)
    and stores a missing version as "undefined", so both are checked here, before sending.
    A duplicate task would break "one prediction per task and version"; a NaN score is not
    even valid JSON.
    """
    if not model_version:
        raise ValueError("model_version must not be empty")
    allowed = set(schema.labels)
    seen: set[int] = set()
    payloads: list[dict[str, object]] = []
    for prediction in predictions:
        task_id = prediction.task_id
        labels = prediction.labels if prediction.labels is not None else (prediction.label,)
        # A backend's own result was checked against the config when it answered.
        spans = decode_spans(labels) if schema.spans else []
        checked = [span.label for span in spans] if schema.spans else labels
        for label in checked if prediction.result is None else ():
            if label not in allowed:
                raise ValueError(
                    f"prediction for task {task_id} has label {label!r}, which is not "
                    f"in the labeling config ({', '.join(schema.labels)})"
                )
        if not (math.isfinite(prediction.score) and 0.0 <= prediction.score <= 1.0):
            raise ValueError(
                f"prediction for task {task_id} has score {prediction.score!r}, not in [0, 1]"
            )
        if task_id in seen:
            raise ValueError(f"two predictions for task {task_id} in one upload")
        seen.add(task_id)
        payload: dict[str, object] = {
            "task": task_id,
            "model_version": model_version,
            "score": prediction.score,
            "result": (
                _prediction_result(schema, labels, spans)
                if prediction.result is None
                else [dict(region) for region in prediction.result]
            ),
        }
        if prediction.cluster is not None:
            payload["cluster"] = prediction.cluster
        payloads.append(payload)
    return payloads


def parse_project(raw: Mapping[str, Any]) -> ProjectInfo:
    """The project fields the daemon reads; an empty model_version means none."""
    sampling = raw.get("sampling")
    task_number = raw.get("task_number")
    return ProjectInfo(
        id=int(raw["id"]),
        title=str(raw.get("title") or ""),
        label_config=str(raw.get("label_config") or ""),
        model_version=str(raw.get("model_version") or "") or None,
        sampling=str(sampling) if sampling else None,
        show_collab_predictions=bool(raw.get("show_collab_predictions", False)),
        task_count=int(task_number) if isinstance(task_number, int) else None,
    )


def parse_view(raw: Mapping[str, Any]) -> ViewInfo:
    data = raw.get("data")
    view_data = dict(data) if isinstance(data, Mapping) else {}
    return ViewInfo(id=int(raw["id"]), title=str(view_data.get("title") or ""), data=view_data)


def model_version_counts(raw: object) -> dict[str, int]:
    """`GET model-versions/` answers {"v1": 10, ...}; anything else is an empty mapping."""
    if not isinstance(raw, Mapping):
        return {}
    return {str(version): int(count) for version, count in raw.items() if isinstance(count, int)}


def server_message(body: object, *, limit: int = 300) -> str:
    """A short human message out of a Label Studio error body (JSON or an HTML page)."""
    if isinstance(body, Mapping):
        parts: list[str] = []
        detail = body.get("detail")
        if detail:
            parts.append(str(detail))
        validation = body.get("validation_errors")
        if isinstance(validation, Mapping):
            parts.extend(f"{field}: {_join(errors)}" for field, errors in validation.items())
        elif validation:
            parts.append(str(validation))
        text = "; ".join(parts) if parts else json.dumps(body)[:limit]
    elif isinstance(body, list):
        text = _join(body)
    elif isinstance(body, str) and body.lstrip().startswith("<"):
        text = "(an HTML page)"
    else:
        text = str(body or "").strip()
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _join(values: object) -> str:
    if isinstance(values, list):
        return ", ".join(str(value) for value in values)
    return str(values)


def redact(text: str, secrets: Iterable[str]) -> str:
    """Blank out every secret that might have been echoed back into `text`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
