"""A named-entity answer as the store and the loop carry it: one code per span.

An NER annotation (`<Labels>` over `<Text>`) answers with spans, not labels. The store,
the reconcile diff and the choice of the training annotation already carry an
annotation's answer as a tuple of strings (`labels`, a JSON array in the store; see
records.AnnotationRecord), so a span travels the same road as a code:

    "start:end:label"    start, end: code-point offsets, [start, end); label as results
                         spell it (a label may itself hold ':'; the first two fields are ints)

The empty tuple is an answer too: "this text has no entity" (every token trains "O").
A skip stays no answer (None). Predictions are stored the same way (predictions.labels).
This module is the only place that writes or reads the code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from aldaemon.sync.shape_results import control_regions


@dataclass(frozen=True)
class SpanAnswer:
    """One annotated or predicted span: [start, end) code points and its label."""

    start: int
    end: int
    label: str


def encode_span(span: SpanAnswer) -> str:
    return f"{span.start}:{span.end}:{span.label}"


def decode_span(code: str) -> SpanAnswer:
    start, end, label = code.split(":", 2)
    return SpanAnswer(start=int(start), end=int(end), label=label)


def decode_spans(codes: Iterable[str]) -> list[SpanAnswer]:
    return [decode_span(code) for code in codes]


def span_codes_of_result(result: object, from_name: str) -> tuple[str, ...]:
    """The spans of control `from_name` in an annotation result, as codes sorted by start.

    Results of other controls, without a label, or with an empty range are skipped; a
    span with several labels keeps its first.
    """
    spans: list[SpanAnswer] = []
    for region in control_regions(result, from_name):
        if region.get("type") != "labels":
            continue
        value = region.get("value")
        if not isinstance(value, Mapping):
            continue
        labels, start, end = value.get("labels"), value.get("start"), value.get("end")
        if not isinstance(labels, list) or not labels or not isinstance(labels[0], str):
            continue
        if not isinstance(start, int) or not isinstance(end, int) or start >= end:
            continue
        spans.append(SpanAnswer(start=start, end=end, label=labels[0]))
    spans.sort(key=lambda s: (s.start, s.end))
    return tuple(encode_span(s) for s in dict.fromkeys(spans))


def entity_counts(answers: Iterable[Sequence[str]], labels: Sequence[str]) -> dict[str, int]:
    """Per config label, the annotated spans carrying it (the NER cold start's count)."""
    counts = dict.fromkeys(labels, 0)
    for codes in answers:
        for span in decode_spans(codes):
            if span.label in counts:
                counts[span.label] += 1
    return counts


def keep_config_spans(codes: Sequence[str], allowed: Iterable[str]) -> tuple[str, ...]:
    """The spans whose label is in the config (a removed label's spans teach nothing)."""
    keep = set(allowed)
    return tuple(code for code in codes if decode_span(code).label in keep)
