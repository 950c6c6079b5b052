"""The labeling-team decisions without a server: label policy, stop signal, team views."""

from __future__ import annotations

import numpy as np
import pytest

from aldaemon.model.label_issues import suspected_label_errors, suspected_multilabel_errors
from aldaemon.sync.consensus import (
    LATEST,
    MAJORITY,
    NO_MAJORITY,
    NOT_UNANIMOUS,
    TIE,
    UNANIMOUS,
    decide,
    withheld_counts,
)
from aldaemon.sync.labels import StoredAnnotation
from aldaemon.sync.stopping import (
    Agreement,
    choose_stop_set,
    consecutive_agreements,
    reopens,
    stable_since,
)
from aldaemon.sync.team_views import MAX_VIEW_TASKS, task_list_view_data
from aldaemon.sync.versions import AnnotatedTask, training_examples, withheld_tasks


def votes(*labels: str | tuple[str, ...], truth: int | None = None) -> list[StoredAnnotation]:
    """One annotation per annotator, newest last; `truth` marks one as ground truth."""
    return [
        StoredAnnotation(
            id=i + 1,
            task_id=1,
            label=None,
            was_cancelled=False,
            updated_at=f"2026-01-01T00:00:0{i}Z",
            labels=label if isinstance(label, tuple) else (label,),
            completed_by=100 + i,
            ground_truth=i == truth,
        )
        for i, label in enumerate(labels)
    ]


class TestLabelPolicy:
    def test_latest_takes_the_newest(self) -> None:
        assert decide(votes("a", "b"), LATEST).labels == ("b",)

    @pytest.mark.parametrize(
        ("answers", "labels", "withheld"),
        [
            (("a", "a", "b"), ("a",), None),
            (("a", "b"), None, TIE),
            (("a", "b", "c"), None, TIE),
            (("a", "a", "b", "c", "d"), None, NO_MAJORITY),
            (("a", "a", "b", "b"), None, TIE),
            (("a",), ("a",), None),
        ],
    )
    def test_majority(self, answers: tuple[str, ...], labels: object, withheld: object) -> None:
        verdict = decide(votes(*answers), MAJORITY)
        assert (verdict.labels, verdict.withheld) == (labels, withheld)

    def test_unanimous(self) -> None:
        assert decide(votes("a", "a"), UNANIMOUS).labels == ("a",)
        assert decide(votes("a", "a", "b"), UNANIMOUS).withheld == NOT_UNANIMOUS

    def test_ground_truth_wins_under_every_policy(self) -> None:
        for policy in (LATEST, MAJORITY, UNANIMOUS):
            assert decide(votes("a", "b", "b", truth=0), policy).labels == ("a",)

    def test_ground_truth_on_every_answer_tells_nothing(self) -> None:
        every = [
            StoredAnnotation(i, 1, y, False, f"2026-01-01T00:00:0{i}Z", ground_truth=True)
            for i, y in enumerate(["a", "b"])
        ]
        assert decide(every, MAJORITY).withheld == TIE

    def test_each_annotator_votes_once_with_their_newest_answer(self) -> None:
        same_user = [
            StoredAnnotation(1, 1, "b", False, "2026-01-01T00:00:00Z", completed_by=7),
            StoredAnnotation(2, 1, "a", False, "2026-01-01T00:00:05Z", completed_by=7),
            StoredAnnotation(3, 1, "a", False, "2026-01-01T00:00:01Z", completed_by=8),
        ]
        assert decide(same_user, UNANIMOUS).labels == ("a",)

    def test_skips_never_vote(self) -> None:
        skip = StoredAnnotation(9, 1, None, True, "2026-01-01T00:00:09Z", completed_by=9)
        assert decide([*votes("a", "a"), skip], UNANIMOUS).labels == ("a",)

    def test_multilabel_votes_per_label(self) -> None:
        assert decide(votes(("x", "y"), ("x",), ("x", "y")), MAJORITY).labels == ("x", "y")
        assert decide(votes(("x", "y"), ("x",)), MAJORITY).withheld == TIE
        assert decide(votes((), (), ("x",)), MAJORITY).labels == ()
        assert decide(votes(("x", "y"), ("y", "x")), UNANIMOUS).labels == ("x", "y")

    def test_withheld_tasks_drop_out_of_training_and_are_counted(self) -> None:
        tasks = [
            AnnotatedTask(1, "t1", tuple(votes("a", "a", "b"))),
            AnnotatedTask(2, "t2", tuple(votes("a", "b"))),
        ]
        assert [e.task_id for e in training_examples(tasks, MAJORITY)] == [1]
        withheld = withheld_tasks(tasks, MAJORITY)
        assert withheld == {2: TIE}
        assert withheld_counts(withheld) == {TIE: 1, NO_MAJORITY: 0, NOT_UNANIMOUS: 0}


class TestStopSignal:
    def test_stop_set_is_fixed_by_its_seed(self) -> None:
        ids = list(range(1000))
        first = choose_stop_set(ids, size=50, seed=3)
        assert first == choose_stop_set(list(reversed(ids)), size=50, seed=3)
        assert len(first) == 50 and first == sorted(first)
        assert choose_stop_set(ids[:10], size=50, seed=3) == ids[:10]

    def test_stable_since_the_version_completing_k_agreements(self) -> None:
        run = [Agreement(f"v{n}", k) for n, k in [(2, 0.5), (3, 0.99), (4, 1.0), (5, 0.995)]]
        assert stable_since(run, threshold=0.99, k=3) == "v5"
        assert stable_since([*run, Agreement("v6", 1.0)], threshold=0.99, k=3) == "v5"
        assert stable_since([*run, Agreement("v6", 0.9)], threshold=0.99, k=3) is None
        assert stable_since(run[:3], threshold=0.99, k=3) is None

    def test_agreements_compare_consecutive_versions_on_common_tasks(self) -> None:
        history = [
            ("v1", {"1": "a", "2": "b", "3": "a"}),
            ("v2", {"1": "a", "2": "b", "3": "a", "4": "b"}),
            ("v3", {"1": "b", "2": "a", "3": "b"}),
            ("v4", {"1": "b", "2": "b"}),
            ("v5", {"1": "b", "2": "b"}),
        ]
        kappas = consecutive_agreements(history)
        assert [a.version for a in kappas] == ["v2", "v3", "v4", "v5"]
        assert kappas[0].kappa == 1.0 and kappas[1].kappa is not None and kappas[1].kappa < 0
        assert kappas[3].kappa == 1.0  # one class in both: undefined kappa, total agreement

    def test_reopens_after_a_share_of_the_trained_labels_changes(self) -> None:
        assert not reopens(label_changes_since_training=9, trained_on=100, fraction=0.1, min_new=4)
        assert reopens(label_changes_since_training=10, trained_on=100, fraction=0.1, min_new=4)
        assert not reopens(label_changes_since_training=3, trained_on=10, fraction=0.1, min_new=4)


class TestViewsAndSuspects:
    def test_a_view_lists_exactly_its_tasks_and_an_empty_one_none(self) -> None:
        data = task_list_view_data(title="Conflicting labels", task_ids=[5, 3, 5])
        items = data["filters"]["items"]  # type: ignore[index]
        assert [item["value"] for item in items] == [5, 3]
        empty = task_list_view_data(title="x", task_ids=[])
        assert [i["value"] for i in empty["filters"]["items"]] == [0]  # type: ignore[index]
        many = task_list_view_data(title="x", task_ids=range(1, 2000))
        assert len(many["filters"]["items"]) == MAX_VIEW_TASKS  # type: ignore[index]

    def test_a_confidently_contradicted_label_is_suspected_first(self) -> None:
        rng = np.random.default_rng(0)
        labels = [0] * 30 + [1] * 30
        proba = np.array([[0.9, 0.1] if y == 0 else [0.1, 0.9] for y in labels])
        proba += rng.uniform(-0.05, 0.05, size=proba.shape)
        proba = np.clip(proba, 0.01, 0.99)
        proba /= proba.sum(axis=1, keepdims=True)
        labels[4] = 1  # flipped: the model is surer than usual that it is a 0
        proba[4] = [0.99, 0.01]
        assert suspected_label_errors(pred_probs=proba, labels=labels)[:1] == (4,)
        targets = np.array([[y == 0, y == 1] for y in labels])
        assert 4 in suspected_multilabel_errors(pred_probs=proba, targets=targets)

    def test_too_few_examples_suspect_nothing(self) -> None:
        proba = np.array([[0.9, 0.1], [0.2, 0.8]])
        assert suspected_label_errors(pred_probs=proba, labels=[0, 1]) == ()
