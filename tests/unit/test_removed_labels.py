"""Taking a label the labeling config lost out of stored predictions, scores unchanged
(`sync.removed_labels`), for every shape a prediction can have."""

from __future__ import annotations

from aldaemon.records import LabelingSchema, PredictionRecord
from aldaemon.sync.removed_labels import without_labels
from aldaemon.sync.versions import VersionRow, VersionState, removed_model_labels

SINGLE = LabelingSchema(
    text_field="text", from_name="sentiment", to_name="text", labels=("pos", "negative")
)
MULTIPLE = LabelingSchema(
    text_field="text",
    from_name="topic",
    to_name="text",
    labels=("food", "service"),
    multiple=True,
)
SPANS = LabelingSchema(
    text_field="text", from_name="ner", to_name="text", labels=("PER",), spans=True
)


class TestWithoutLabels:
    def test_a_single_choice_of_the_removed_label_shows_none_and_keeps_its_score(self) -> None:
        predictions = [
            PredictionRecord(task_id=1, label="pos", score=0.4),
            PredictionRecord(task_id=2, label="neg", score=0.1),
        ]
        assert (
            [
                PredictionRecord(task_id=1, label="pos", score=0.4),
                PredictionRecord(task_id=2, label="", score=0.1, labels=()),
            ],
            1,
        ) == without_labels(predictions, SINGLE)

    def test_a_multi_label_prediction_keeps_the_labels_left(self) -> None:
        predictions = [
            PredictionRecord(task_id=1, label="price", score=0.2, labels=("price", "food"))
        ]
        assert (
            [PredictionRecord(task_id=1, label="food", score=0.2, labels=("food",))],
            1,
        ) == without_labels(predictions, MULTIPLE)

    def test_spans_of_the_removed_label_go(self) -> None:
        predictions = [
            PredictionRecord(task_id=1, label="LOC", score=0.3, labels=("0:4:LOC", "6:9:PER"))
        ]
        assert (
            [PredictionRecord(task_id=1, label="PER", score=0.3, labels=("6:9:PER",))],
            1,
        ) == without_labels(predictions, SPANS)

    def test_a_backend_region_with_only_the_removed_label_goes(self) -> None:
        """Regions of other controls are left alone."""
        neg = {"from_name": "sentiment", "type": "choices", "value": {"choices": ["neg"]}}
        box = {"from_name": "box", "type": "rectanglelabels", "value": {"labels": ["neg"]}}
        predictions = [PredictionRecord(task_id=1, label="neg", score=0.5, result=(neg, box))]
        assert (
            [PredictionRecord(task_id=1, label="neg", score=0.5, result=(box,))],
            1,
        ) == without_labels(predictions, SINGLE)

    def test_predictions_that_fit_are_unchanged(self) -> None:
        predictions = [PredictionRecord(task_id=1, label="pos", score=0.4)]
        assert (predictions, 0) == without_labels(predictions, SINGLE)


class TestRemovedModelLabels:
    def test_the_labels_a_model_knows_that_the_config_lost(self) -> None:
        version = VersionRow(
            name="aldaemon-v1",
            number=1,
            state=VersionState.ACTIVE,
            created_at=0.0,
            class_counts={"pos": 4, "neg": 4},
        )
        assert ["neg"] == removed_model_labels(version, SINGLE.labels)
