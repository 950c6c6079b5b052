"""The one-vs-rest multi-label text model."""

from __future__ import annotations

import numpy as np
import pytest

from aldaemon.model.multilabel import OneVsRestTextModel, make_multilabel_classifier

SPORT = ["the match ended with a late goal", "the striker scored twice in the match"]
POLITICS = ["parliament voted on the new budget", "the minister resigned after the vote"]
BOTH = ["the minister watched the match and the goal", "parliament debated the match budget"]
NEITHER = ["my cat sleeps on the sofa", "the weather is mild today"]


def trained() -> OneVsRestTextModel:
    texts = SPORT + POLITICS + BOTH + NEITHER
    label_sets: list[set[str]] = (
        [{"sport"}] * 2 + [{"politics"}] * 2 + [{"sport", "politics"}] * 2 + [set()] * 2
    )
    return OneVsRestTextModel(["sport", "politics", "weather"]).fit(texts, label_sets)


class TestFit:
    def test_columns_follow_the_given_labels(self) -> None:
        """classes_ is the label order passed in, unseen labels included."""
        assert ("sport", "politics", "weather") == trained().classes_

    def test_columns_default_to_sorted_seen_labels(self) -> None:
        """Without labels, the columns are the sorted labels seen in training."""
        model = make_multilabel_classifier().fit(["red blue", "green tea"], [{"z"}, {"a", "z"}])
        assert ("a", "z") == model.classes_

    def test_an_annotation_with_two_labels_trains_both(self) -> None:
        """A text selected as sport and politics raises both probabilities above 0.5."""
        texts = ["goal budget", "goal", "budget", "cat sofa", "rain cloud"]
        label_sets = [{"sport", "politics"}, {"sport"}, {"politics"}, set(), set()]
        model = OneVsRestTextModel(["sport", "politics"]).fit(texts, label_sets)
        assert [("sport", "politics")] == model.predict(["goal budget"])

    def test_an_empty_annotation_trains_every_negative(self) -> None:
        """Texts annotated with no label are predicted with no label."""
        assert [()] == trained().predict(["my cat sleeps on the sofa"])

    def test_one_sided_label_gets_a_constant_probability(self) -> None:
        """A label never selected predicts 0.0 everywhere instead of crashing."""
        proba = trained().predict_proba(["anything at all", "the match"])
        assert [0.0, 0.0] == proba[:, 2].tolist()

    def test_a_label_always_selected_predicts_one(self) -> None:
        """A label selected on every text predicts 1.0 everywhere."""
        model = OneVsRestTextModel(["x", "y"]).fit(["red blue", "green tea"], [{"x"}, {"x", "y"}])
        assert [1.0] == model.predict_proba(["other words"])[:, 0].tolist()

    def test_mismatched_lengths_are_refused(self) -> None:
        """One label set per text, or a ValueError."""
        with pytest.raises(ValueError, match="one label set per text"):
            OneVsRestTextModel(["x"]).fit(["a", "b"], [{"x"}])


class TestPredictProba:
    def test_shape_is_texts_by_labels(self) -> None:
        """predict_proba gives one row per text and one column per label."""
        assert (3, 3) == trained().predict_proba(["a", "b", "c"]).shape

    def test_probabilities_are_independent(self) -> None:
        """A row need not sum to 1: both labels can be likely at once."""
        row = trained().predict_proba(["the minister watched the match and the goal"])[0]
        assert True is bool(row[0] + row[1] > 1.0)

    def test_unfitted_model_refuses(self) -> None:
        """predict_proba before fit is a ValueError, not an AttributeError."""
        with pytest.raises(ValueError, match="not fitted"):
            OneVsRestTextModel(["x"]).predict_proba(["a"])

    def test_probabilities_are_within_bounds(self) -> None:
        """Every probability is in [0, 1]."""
        proba = trained().predict_proba(SPORT + NEITHER)
        assert True is bool(np.all((proba >= 0) & (proba <= 1)))
