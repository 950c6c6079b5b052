"""The Label Studio prediction results for each served shape, one place for their JSON.

    single choice  {"type": "choices", "value": {"choices": [most probable label]}}
    multi-label    {"type": "choices", "value": {"choices": [labels with p >= 0.5]}}
                   or no result at all when no label reaches 0.5, exactly like an
                   annotation that selects nothing ("none of these")
    spans          one {"type": "labels", "value": {"start", "end", "text",
                   "labels": [label]}, "score": ...} per span; offsets are code points,
                   which is what Label Studio's <Text> counts (see model/spans.py)
    several        the results of every control concatenated into one prediction

Every label is checked against the control's labels before it is sent: Label Studio
silently drops a result whose label is not in the config, so a mismatch is raised here
instead. Pure: takes spans by shape (a Protocol), so this module imports no model code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from aldaemon.sync.config_shapes import ServedControl

Result = dict[str, Any]
MULTILABEL_THRESHOLD = 0.5


def control_regions(result: object, from_name: str) -> list[Mapping[str, Any]]:
    """The regions of control `from_name` in an annotation's result, read as Label Studio
    may send it: a result that is not a list has none, a region not an object is skipped."""
    if not isinstance(result, list):
        return []
    return [r for r in result if isinstance(r, Mapping) and r.get("from_name") == from_name]


class SpanLike(Protocol):
    """A predicted span: code-point offsets, label, text and an optional confidence."""

    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...
    @property
    def label(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def score(self) -> float | None: ...


def single_choice_results(control: ServedControl, probabilities: Sequence[float]) -> list[Result]:
    """The most probable label of `control` (probabilities in control.labels order)."""
    _check_width(control, probabilities)
    best = max(range(len(probabilities)), key=lambda i: probabilities[i])
    return [_choices(control, [control.labels[best]])]


def multilabel_results(
    control: ServedControl,
    probabilities: Sequence[float],
    *,
    threshold: float = MULTILABEL_THRESHOLD,
) -> list[Result]:
    """The labels with p >= threshold, in config order; no result when there is none."""
    _check_width(control, probabilities)
    chosen = [
        label for label, p in zip(control.labels, probabilities, strict=True) if p >= threshold
    ]
    return [_choices(control, chosen)] if chosen else []


def choices_results(control: ServedControl, labels: Sequence[str]) -> list[Result]:
    """`labels` chosen in `control`; no result when there is none."""
    return [_choices(control, list(labels))] if labels else []


def span_results(control: ServedControl, spans: Iterable[SpanLike]) -> list[Result]:
    """One "labels" result per span, in the order given."""
    results: list[Result] = []
    for span in spans:
        _check_labels(control, [span.label])
        result: Result = {
            "from_name": control.name,
            "to_name": control.to_name,
            "type": "labels",
            "value": {"start": span.start, "end": span.end, "labels": [span.label]},
        }
        if span.text:  # Label Studio reads the region from the offsets; text is for people
            result["value"]["text"] = span.text
        if span.score is not None:
            result["score"] = float(span.score)
        results.append(result)
    return results


def task_prediction(
    *, task_id: int, results: Iterable[Sequence[Result]], score: float, model_version: str
) -> Result:
    """One entry of POST /api/projects/{id}/import/predictions: every control's results."""
    return {
        "task": task_id,
        "result": [result for control_results in results for result in control_results],
        "score": float(score),
        "model_version": model_version,
    }


def _choices(control: ServedControl, labels: list[str]) -> Result:
    _check_labels(control, labels)
    return {
        "from_name": control.name,
        "to_name": control.to_name,
        "type": "choices",
        "value": {"choices": labels},
    }


def _check_width(control: ServedControl, probabilities: Sequence[float]) -> None:
    if len(probabilities) != len(control.labels):
        raise ValueError(
            f"control {control.name!r} has {len(control.labels)} labels, "
            f"got {len(probabilities)} probabilities"
        )


def _check_labels(control: ServedControl, labels: Sequence[str]) -> None:
    unknown = [label for label in labels if label not in control.labels]
    if unknown:
        raise ValueError(
            f"labels {unknown} are not in control {control.name!r} "
            f"(config labels: {list(control.labels)}); Label Studio would drop them silently"
        )
