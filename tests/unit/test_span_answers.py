"""Named-entity answers: span codes, annotation parsing, cold start, payloads, scoring."""

from __future__ import annotations

from aldaemon.labelstudio.payloads import parse_annotation, prediction_payloads
from aldaemon.model.requests import ScoringRequest
from aldaemon.model.span_jobs import entity_f1, score_spans
from aldaemon.model.spans import Span, SpanModel
from aldaemon.records import LabelingSchema, PredictionRecord
from aldaemon.sync.label_sets import cold_start_counts, stored_label_counts
from aldaemon.sync.labels import StoredAnnotation
from aldaemon.sync.span_answers import SpanAnswer, decode_span, encode_span
from aldaemon.sync.versions import AnnotatedTask, schema_to_json

SCHEMA = LabelingSchema(
    text_field="text", from_name="ner", to_name="text", labels=("PER", "LOC"), spans=True
)


def labels_result(start: int, end: int, label: str, from_name: str = "ner") -> dict[str, object]:
    return {
        "from_name": from_name,
        "to_name": "text",
        "type": "labels",
        "value": {"start": start, "end": end, "labels": [label]},
    }


def test_a_code_round_trips_even_when_the_label_holds_a_colon() -> None:
    span = SpanAnswer(start=3, end=9, label="ORG:sub")
    assert span == decode_span(encode_span(span))


def test_an_annotation_answers_with_its_spans_sorted_and_no_span_is_an_answer() -> None:
    raw = {
        "id": 1,
        "updated_at": "2026-01-01T00:00:00Z",
        "result": [
            labels_result(10, 16, "LOC"),
            labels_result(0, 4, "PER"),
            labels_result(1, 2, "PER", "x"),
        ],
    }
    record = parse_annotation(raw, task_id=7, schema=SCHEMA)
    assert ("0:4:PER", "10:16:LOC") == record.labels
    assert "PER" == record.label
    empty = parse_annotation({**raw, "result": []}, task_id=7, schema=SCHEMA)
    assert () == empty.labels  # "no entity here": it trains, every token "O"
    skipped = parse_annotation({**raw, "was_cancelled": True}, task_id=7, schema=SCHEMA)
    assert skipped.labels is None


def test_cold_start_counts_annotated_spans_per_entity_label() -> None:
    def task(task_id: int, *codes: str) -> AnnotatedTask:
        annotation = StoredAnnotation(
            id=task_id,
            task_id=task_id,
            label=None,
            was_cancelled=False,
            updated_at="2026-01-01T00:00:00Z",
            labels=codes,
        )
        return AnnotatedTask(task_id=task_id, text="t", annotations=(annotation,))

    tasks = [task(1, "0:4:PER", "5:9:PER"), task(2, "0:3:LOC"), task(3)]
    assert {"PER": 2, "LOC": 1} == cold_start_counts(tasks, SCHEMA)


def test_a_span_prediction_uploads_labels_results_at_its_offsets() -> None:
    prediction = PredictionRecord(task_id=5, label="PER", score=0.25, labels=("2:6:PER",))
    [payload] = prediction_payloads([prediction], model_version="v1", schema=SCHEMA)
    assert [
        {
            "from_name": "ner",
            "to_name": "text",
            "type": "labels",
            "value": {"start": 2, "end": 6, "labels": ["PER"]},
        }
    ] == payload["result"]


def test_a_text_predicted_without_entities_is_not_pushed_to_the_end() -> None:
    texts = ["Anna lives in Oslo", "Bert lives in Rome", "Carl lives in Lund", "the cat sat"]
    spans = [[Span(0, 4, "PER", ""), Span(14, len(t), "LOC", "")] for t in texts[:3]] + [[]]
    model = SpanModel().fit(texts, spans)
    pool = ["nothing here whatsoever", "Dora lives in Bonn"]
    request = ScoringRequest(
        artifact_path="(in memory)", task_ids=[1, 2], texts=pool, strategy="least_confidence"
    )
    scored = score_spans(model, request)
    assert scored.label_sets is not None
    no_entity = scored.label_sets.index(())
    assert scored.scores[no_entity] < 1.0  # scored by its tokens, like any other text


def test_entity_f1_counts_exact_matches_only() -> None:
    gold = [[Span(0, 4, "PER", "")], [Span(1, 3, "LOC", "")]]
    predicted = [[Span(0, 4, "PER", "")], [Span(1, 4, "LOC", "")]]
    assert 0.5 == entity_f1(gold, predicted)


def test_status_counts_spans_per_entity_label_for_a_named_entity_project() -> None:
    annotation = StoredAnnotation(
        id=1,
        task_id=1,
        label="PER",
        was_cancelled=False,
        updated_at="2026-01-01T00:00:00Z",
        labels=("0:4:PER", "5:9:PER", "10:12:LOC"),
    )
    tasks = [AnnotatedTask(task_id=1, text="t", annotations=(annotation,))]
    stored = schema_to_json(SCHEMA)
    assert {"PER": 2, "LOC": 1} == stored_label_counts(tasks, stored)
