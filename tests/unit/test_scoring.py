"""Scoring strategies, the random share, the queue and annotator agreement."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.metrics import cohen_kappa_score

from aldaemon.sync.scoring import (
    STRATEGIES,
    cohen_kappa,
    informativeness,
    mix_random,
    select_queue,
)

# 1 - (binary entropy of 0.25 in bits), the entropy score of the row [0.75, 0.25]
ENTROPY_SCORE_OF_75_25 = 1 - 0.8112781244591328


def probability_rows() -> st.SearchStrategy[npt.NDArray[np.float64]]:
    """Random (n, K) probability matrices, zeros and near-ties included."""
    shapes = st.tuples(st.integers(1, 20), st.integers(2, 6))
    weights = shapes.flatmap(
        lambda shape: hnp.arrays(
            np.float64, shape, elements=st.floats(0.0, 1.0).map(lambda x: round(x, 3))
        )
    )
    return weights.filter(lambda w: bool(np.all(w.sum(axis=1) > 0))).map(
        lambda w: w / w.sum(axis=1, keepdims=True)
    )


class TestInformativeness:
    @pytest.mark.parametrize(
        ("strategy", "expected"),
        [("margin", 0.5), ("least_confidence", 0.75), ("entropy", ENTROPY_SCORE_OF_75_25)],
    )
    def test_a_known_row_gives_its_known_score(self, strategy: str, expected: float) -> None:
        """The row [0.75, 0.25] scores p1-p2, max p and 1-H/ln K as computed by hand."""
        actual = informativeness(np.array([[0.75, 0.25]]), strategy=strategy)
        assert expected == pytest.approx(actual[0])

    @pytest.mark.parametrize(
        ("strategy", "expected"), [("margin", 0.0), ("least_confidence", 0.25), ("entropy", 0.0)]
    )
    def test_a_uniform_row_is_the_most_informative(self, strategy: str, expected: float) -> None:
        """A uniform row over 4 classes gets the lowest score each strategy can give."""
        actual = informativeness(np.full((1, 4), 0.25), strategy=strategy)
        assert expected == pytest.approx(actual[0])

    @pytest.mark.parametrize("strategy", STRATEGIES)
    def test_a_certain_row_is_the_least_informative(self, strategy: str) -> None:
        """A one-hot row scores 1, and its zero probabilities cause no NaN."""
        actual = informativeness(np.array([[0.0, 1.0, 0.0]]), strategy=strategy)
        assert [1.0] == actual.tolist()

    @pytest.mark.parametrize("strategy", STRATEGIES)
    def test_a_more_uniform_row_scores_lower(self, strategy: str) -> None:
        """Flattening a row towards uniform lowers its score in every strategy."""
        rows = np.array([[0.8, 0.15, 0.05], [0.5, 0.3, 0.2], [0.4, 0.35, 0.25]])
        scores = informativeness(rows, strategy=strategy)
        assert scores[0] > scores[1] > scores[2]

    @pytest.mark.parametrize("strategy", STRATEGIES)
    @given(proba=probability_rows())
    def test_every_score_is_within_zero_and_one(
        self, strategy: str, proba: npt.NDArray[np.float64]
    ) -> None:
        """For any probability matrix, every score lies in [0, 1]."""
        scores = informativeness(proba, strategy=strategy)
        assert (proba.shape[0], True) == (
            scores.shape[0],
            bool(np.all((scores >= 0) & (scores <= 1))),
        )

    def test_rows_off_by_float_rounding_are_accepted(self) -> None:
        """A row summing to 1 within float error is scored, not rejected."""
        actual = informativeness(np.array([[0.6 + 1e-9, 0.4]]), strategy="margin")
        assert pytest.approx([0.2]) == actual.tolist()

    def test_rows_that_do_not_sum_to_one_are_rejected(self) -> None:
        """A row summing to 0.9 is a bug upstream and raises instead of scoring."""
        with pytest.raises(ValueError, match="sums to"):
            informativeness(np.array([[0.5, 0.4]]), strategy="margin")

    def test_a_single_class_is_rejected(self) -> None:
        """Scoring needs at least two classes."""
        with pytest.raises(ValueError, match="at least 2 classes"):
            informativeness(np.array([[1.0]]), strategy="entropy")

    def test_nan_is_rejected(self) -> None:
        """A NaN probability raises instead of producing a NaN score."""
        with pytest.raises(ValueError, match="NaN"):
            informativeness(np.array([[np.nan, 0.5]]), strategy="margin")

    def test_an_unknown_strategy_is_rejected(self) -> None:
        """A strategy name outside STRATEGIES raises and names the valid ones."""
        with pytest.raises(ValueError, match="least_confidence"):
            informativeness(np.array([[0.5, 0.5]]), strategy="random")

    def test_an_empty_pool_gives_no_scores(self) -> None:
        """Zero rows give zero scores."""
        assert (0,) == informativeness(np.empty((0, 3)), strategy="margin").shape


class TestMixRandom:
    def test_the_given_share_of_rows_gets_a_random_score(self) -> None:
        """With fraction 0.2, exactly 200 of 1000 rows change."""
        scores = np.full(1000, 2.0)  # outside [0, 1): every replaced row is visible
        mixed = mix_random(scores, fraction=0.2, rng=np.random.default_rng(7))
        assert 200 == int(np.count_nonzero(mixed != 2.0))

    def test_random_scores_are_within_zero_and_one(self) -> None:
        """Every replaced score is a valid score."""
        mixed = mix_random(np.full(1000, 2.0), fraction=0.5, rng=np.random.default_rng(7))
        replaced = mixed[mixed != 2.0]
        assert bool(np.all((replaced >= 0) & (replaced < 1)))

    def test_the_same_seed_gives_the_same_mix(self) -> None:
        """A seeded generator makes the mix reproducible."""
        scores = np.linspace(0, 1, 100)
        first = mix_random(scores, fraction=0.3, rng=np.random.default_rng(3))
        second = mix_random(scores, fraction=0.3, rng=np.random.default_rng(3))
        assert first.tolist() == second.tolist()

    def test_the_input_is_not_modified(self) -> None:
        """mix_random returns a new array and leaves the caller's scores alone."""
        scores = np.full(10, 0.5)
        mix_random(scores, fraction=1.0, rng=np.random.default_rng(0))
        assert [0.5] * 10 == scores.tolist()

    def test_a_zero_fraction_changes_nothing(self) -> None:
        """fraction 0 keeps every score."""
        scores = np.linspace(0, 1, 10)
        assert (
            scores.tolist()
            == mix_random(scores, fraction=0.0, rng=np.random.default_rng(0)).tolist()
        )

    def test_a_fraction_outside_zero_and_one_is_rejected(self) -> None:
        """A share above 1 is a configuration bug and raises."""
        with pytest.raises(ValueError, match="fraction"):
            mix_random(np.zeros(3), fraction=1.5, rng=np.random.default_rng(0))


class TestSelectQueue:
    def test_the_lowest_scores_come_first(self) -> None:
        """depth 2 picks the indices of the two lowest scores, lowest first."""
        assert [1, 3] == select_queue(np.array([0.5, 0.1, 0.9, 0.3]), depth=2).tolist()

    def test_no_depth_orders_every_task(self) -> None:
        """depth None returns every index, ascending by score."""
        assert [1, 3, 0, 2] == select_queue(np.array([0.5, 0.1, 0.9, 0.3]), depth=None).tolist()

    def test_ties_keep_their_input_order(self) -> None:
        """Equal scores are ordered by their position, so the queue is reproducible."""
        assert [1, 3, 0, 2] == select_queue(np.array([0.2, 0.1, 0.2, 0.1]), depth=None).tolist()

    def test_a_depth_beyond_the_pool_returns_every_task(self) -> None:
        """Asking for more tasks than exist returns all of them."""
        assert [1, 0] == select_queue(np.array([0.7, 0.2]), depth=10).tolist()

    def test_a_negative_depth_is_rejected(self) -> None:
        """A negative depth raises instead of silently dropping the last tasks."""
        with pytest.raises(ValueError, match="depth"):
            select_queue(np.array([0.1]), depth=-1)


class TestCohenKappa:
    def test_no_pairs_give_none(self) -> None:
        """With no task labeled by both annotators, agreement is unknown."""
        assert None is cohen_kappa([], [])

    def test_full_agreement_is_one(self) -> None:
        """Two annotators who agree on every task have kappa 1."""
        assert 1.0 == cohen_kappa(["a", "b", "a"], ["a", "b", "a"])

    def test_a_known_table_gives_its_known_kappa(self) -> None:
        """Observed agreement 3/4 against chance 1/2 gives kappa 0.5."""
        assert pytest.approx(0.5) == cohen_kappa(["a", "a", "b", "b"], ["a", "b", "b", "b"])

    def test_one_shared_label_throughout_gives_none(self) -> None:
        """When both used a single label, kappa is undefined and reported as None."""
        assert None is cohen_kappa(["a", "a"], ["a", "a"])

    def test_unpaired_labels_are_rejected(self) -> None:
        """Sequences of different lengths raise."""
        with pytest.raises(ValueError, match="paired"):
            cohen_kappa(["a"], ["a", "b"])

    @given(st.lists(st.tuples(st.sampled_from("abcd"), st.sampled_from("abcd")), max_size=40))
    def test_it_equals_scikit_learns_kappa(self, pairs: list[tuple[str, str]]) -> None:
        """The numpy kappa (no scikit-learn in the daemon) is scikit-learn's, or None
        where scikit-learn's is undefined (nan)."""
        a, b = [x for x, _ in pairs], [y for _, y in pairs]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn warns on an undefined kappa
            reference = float(cohen_kappa_score(a, b)) if len(set(a) | set(b)) >= 2 else None
        mine = cohen_kappa(a, b)
        if reference is None or math.isnan(reference):
            assert mine is None
        else:
            assert mine == pytest.approx(reference, abs=1e-12)

    def test_the_daemon_process_does_not_import_scikit_learn_for_it(self) -> None:
        """The stop signal computes kappa in the daemon: that must not load sklearn."""
        code = (
            "import sys, aldaemon.service.runtime\n"
            "from aldaemon.sync.scoring import cohen_kappa\n"
            "cohen_kappa(['a', 'b', 'a'], ['a', 'b', 'b'])\n"
            "print('sklearn' in sys.modules)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert "False" == result.stdout.strip()
