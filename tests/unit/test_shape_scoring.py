"""Informativeness for multi-label, spans and several controls, on one [0, 1] scale."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aldaemon.sync.scoring import STRATEGIES
from aldaemon.sync.shape_scoring import (
    combine_controls,
    multilabel_scores,
    single_choice_scores,
    span_scores,
    strategy_refusal,
)


class TestSingleChoice:
    def test_least_confidence_is_rescaled_so_uniform_scores_zero(self) -> None:
        """A uniform row over K classes scores 0 and a certain one 1, whatever K."""
        proba = [[1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]
        assert [0.0, 1.0, 0.25] == pytest.approx(
            single_choice_scores(proba, strategy="least_confidence").tolist()
        )

    def test_margin_is_unchanged(self) -> None:
        """margin is aldaemon.scoring's margin: top-two difference."""
        assert [0.5] == pytest.approx(
            single_choice_scores([[0.75, 0.25]], strategy="margin").tolist()
        )


class TestMultilabel:
    def test_the_label_closest_to_one_half_decides(self) -> None:
        """margin: the task scores min over labels of 2 * |p - 0.5|."""
        proba = [[0.9, 0.55, 0.0], [0.99, 0.01, 0.8]]
        assert [0.1, 0.6] == pytest.approx(multilabel_scores(proba, strategy="margin").tolist())

    def test_least_confidence_equals_margin_for_binary_labels(self) -> None:
        """Rescaled least confidence of [p, 1-p] is 2 * |p - 0.5| too."""
        proba = [[0.9, 0.55], [0.3, 0.99]]
        assert multilabel_scores(proba, strategy="margin").tolist() == pytest.approx(
            multilabel_scores(proba, strategy="least_confidence").tolist()
        )

    def test_entropy_is_one_minus_binary_entropy(self) -> None:
        """entropy: min over labels of 1 - H2(p) / ln 2."""
        h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)
        assert [1 - h] == pytest.approx(
            multilabel_scores([[0.25, 1.0]], strategy="entropy").tolist()
        )

    @pytest.mark.parametrize("strategy", STRATEGIES)
    def test_every_strategy_orders_tasks_the_same(self, strategy: str) -> None:
        """Each strategy is increasing in |p - 0.5|: the queue order does not change."""
        proba = [[0.9, 0.2], [0.5, 0.99], [0.7, 0.0], [1.0, 1.0]]
        assert [1, 2, 0, 3] == np.argsort(multilabel_scores(proba, strategy=strategy)).tolist()

    def test_scores_are_lower_for_more_informative_tasks(self) -> None:
        """p = 0.5 scores 0, p in {0, 1} scores 1."""
        assert [0.0, 1.0] == multilabel_scores([[0.5], [1.0]], strategy="margin").tolist()

    def test_unknown_strategy_is_refused_with_a_message(self) -> None:
        """A strategy name outside the known ones raises a ValueError naming the shape."""
        with pytest.raises(ValueError, match="cannot score a multi-label control"):
            multilabel_scores([[0.5]], strategy="density")

    def test_no_rows_give_no_scores(self) -> None:
        """An empty pool scores nothing."""
        assert (0,) == multilabel_scores(np.empty((0, 3)), strategy="margin").shape


class TestSpans:
    def test_least_confident_token_decides(self) -> None:
        """The text scores its least confident token, rescaled against the tag count."""
        marginals = [[[1.0, 0.0, 0.0], [0.6, 0.2, 0.2]], [[0.9, 0.05, 0.05]]]
        expected = [(0.6 - 1 / 3) / (2 / 3), (0.9 - 1 / 3) / (2 / 3)]
        assert expected == pytest.approx(
            span_scores(marginals, strategy="least_confidence").tolist()
        )

    def test_a_uniform_token_scores_zero(self) -> None:
        """A token whose marginal is uniform over the tags makes the text score 0."""
        assert [0.0] == pytest.approx(
            span_scores([[[0.25] * 4, [1.0, 0, 0, 0]]], strategy="least_confidence").tolist()
        )

    def test_a_text_without_entities_is_not_pushed_to_the_end(self) -> None:
        """An all-"O" text with an unsure token scores below a confident text with entities."""
        unsure_no_entity = [[0.55, 0.45, 0.0], [0.99, 0.01, 0.0]]
        confident_entity = [[0.02, 0.97, 0.01], [0.98, 0.01, 0.01]]
        scores = span_scores([confident_entity, unsure_no_entity], strategy="margin")
        assert True is bool(scores[1] < scores[0])

    def test_a_text_without_tokens_scores_one(self) -> None:
        """Nothing to be unsure about: an empty text is least informative."""
        assert [1.0] == span_scores([np.empty((0, 3))], strategy="entropy").tolist()


class TestCombineControls:
    def test_the_least_sure_control_decides(self) -> None:
        """A task's score is the minimum of its controls' scores."""
        assert [0.2, 0.1] == combine_controls([[0.2, 0.9], [0.7, 0.1]]).tolist()

    def test_no_control_is_an_error(self) -> None:
        """Combining nothing is refused."""
        with pytest.raises(ValueError, match="no control"):
            combine_controls([])


class TestStrategyRefusal:
    @pytest.mark.parametrize("strategy", STRATEGIES)
    @pytest.mark.parametrize("shape", ["single choice", "multi-label", "spans"])
    def test_known_strategies_apply_to_every_shape(self, shape: str, strategy: str) -> None:
        """margin, least_confidence and entropy all score every shape."""
        assert None is strategy_refusal(shape, strategy)

    def test_other_names_get_a_sentence(self) -> None:
        """An unknown name is refused with the names that work."""
        expected = (
            "strategy 'bald' cannot score a spans control; "
            "use one of margin, least_confidence, entropy"
        )
        assert expected == strategy_refusal("spans", "bald")
