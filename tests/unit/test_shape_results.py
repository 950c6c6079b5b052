"""The Label Studio prediction results built for each served shape."""

from __future__ import annotations

import pytest

from aldaemon.model.spans import Span
from aldaemon.sync.config_shapes import (
    MultiChoice,
    SingleChoice,
    Spans,
    TextReading,
    TextSource,
)
from aldaemon.sync.shape_results import (
    multilabel_results,
    single_choice_results,
    span_results,
    task_prediction,
)

SOURCE = TextSource(object_name="text", reading=TextReading.TEXT, field="text")
TOPIC = MultiChoice(
    name="topic", to_name="text", source=SOURCE, labels=("sport", "politics", "arts")
)
SENTIMENT = SingleChoice(name="sentiment", to_name="text", source=SOURCE, labels=("pos", "neg"))
NER = Spans(name="ner", to_name="text", source=SOURCE, labels=("PER", "LOC"))


class TestChoices:
    def test_multilabel_carries_labels_at_or_above_one_half(self) -> None:
        """Labels with p >= 0.5, in config order, in one choices result."""
        expected = [
            {
                "from_name": "topic",
                "to_name": "text",
                "type": "choices",
                "value": {"choices": ["sport", "arts"]},
            }
        ]
        assert expected == multilabel_results(TOPIC, [0.5, 0.49, 0.9])

    def test_multilabel_with_no_label_has_no_result(self) -> None:
        """Nothing at 0.5 or above: no result, like an annotation selecting nothing."""
        assert [] == multilabel_results(TOPIC, [0.1, 0.2, 0.3])

    def test_single_choice_carries_the_most_probable_label(self) -> None:
        """A single-choice control predicts its argmax label."""
        assert {"choices": ["neg"]} == single_choice_results(SENTIMENT, [0.3, 0.7])[0]["value"]

    def test_probabilities_must_match_the_labels(self) -> None:
        """A probability row of the wrong width is refused."""
        with pytest.raises(ValueError, match="has 3 labels, got 2"):
            multilabel_results(TOPIC, [0.5, 0.5])


class TestSpans:
    def test_one_labels_result_per_span_with_its_score(self) -> None:
        """Each span becomes a labels result with offsets, text, label and score."""
        expected = [
            {
                "from_name": "ner",
                "to_name": "text",
                "type": "labels",
                "value": {"start": 2, "end": 6, "text": "Hugo", "labels": ["PER"]},
                "score": 0.8,
            }
        ]
        assert expected == span_results(NER, [Span(2, 6, "PER", "Hugo", 0.8)])

    def test_a_label_outside_the_config_is_refused(self) -> None:
        """Label Studio would drop it silently, so it raises here."""
        with pytest.raises(ValueError, match="drop them silently"):
            span_results(NER, [Span(0, 1, "ORG", "x")])


class TestTaskPrediction:
    def test_one_prediction_carries_every_controls_results(self) -> None:
        """Several controls: their results concatenated, with the task's score."""
        prediction = task_prediction(
            task_id=7,
            results=[
                single_choice_results(SENTIMENT, [0.9, 0.1]),
                multilabel_results(TOPIC, [0.6, 0.0, 0.0]),
            ],
            score=0.2,
            model_version="v3",
        )
        assert (7, ["sentiment", "topic"], 0.2, "v3") == (
            prediction["task"],
            [result["from_name"] for result in prediction["result"]],
            prediction["score"],
            prediction["model_version"],
        )
