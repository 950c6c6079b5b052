"""The retrain policy: when a project trains, and what the reason says."""

from __future__ import annotations

from typing import Any

from aldaemon.sync.policy import TrainingDecision, decide_training

LABELS = ("neg", "pos")
ENOUGH = {"neg": 5, "pos": 5}


def decide(**overrides: Any) -> TrainingDecision:
    """A decision for a project with a model, enough labels per class and nothing new."""
    arguments: dict[str, Any] = {
        "label_changes_since_training": 0,
        "seconds_since_training": 1000.0,
        "class_counts": ENOUGH,
        "labels": LABELS,
        "min_new_annotations": 10,
        "min_interval": 60.0,
        "min_per_class": 2,
        "max_interval": None,
        "forced": False,
        "has_model": True,
    }
    arguments.update(overrides)
    return decide_training(**arguments)


class TestColdStart:
    def test_a_class_short_of_min_per_class_blocks_training(self) -> None:
        """No model is trained while one class has fewer than min_per_class labels."""
        decision = decide(
            class_counts={"neg": 1, "pos": 30},
            label_changes_since_training=31,
            has_model=False,
            seconds_since_training=None,
        )
        assert TrainingDecision(False, "cold start: 'neg' has 1 of 2 labels") == decision

    def test_every_short_class_is_named_in_schema_order(self) -> None:
        """The reason lists each class still short, a class never labeled included."""
        decision = decide(class_counts={"pos": 1}, label_changes_since_training=1)
        expected = "cold start: 'neg' has 0 of 2 labels, 'pos' has 1 of 2 labels"
        assert expected == decision.reason

    def test_forced_training_still_respects_cold_start(self) -> None:
        """The cron trigger cannot train a model that has not seen every class."""
        decision = decide(
            class_counts={"neg": 0, "pos": 4},
            forced=True,
            has_model=False,
            seconds_since_training=None,
        )
        assert TrainingDecision(False, "cold start: 'neg' has 0 of 2 labels") == decision

    def test_reaching_min_per_class_and_the_threshold_trains_the_first_model(self) -> None:
        """Once every class has min_per_class labels and the threshold is met, training starts."""
        decision = decide(
            class_counts={"neg": 2, "pos": 8},
            label_changes_since_training=10,
            has_model=False,
            seconds_since_training=None,
        )
        assert TrainingDecision(True, "first model: 10 new labels") == decision


class TestThreshold:
    def test_fewer_changes_than_the_threshold_wait_and_say_how_many(self) -> None:
        """Below min_new_annotations the reason says how many of how many labels are in."""
        assert TrainingDecision(False, "3 of 10 new labels") == decide(
            label_changes_since_training=3
        )

    def test_reaching_the_threshold_trains(self) -> None:
        """Exactly min_new_annotations changes after min_interval trains."""
        decision = decide(label_changes_since_training=10)
        assert TrainingDecision(True, "10 new labels (threshold 10)") == decision

    def test_a_jump_past_the_threshold_trains(self) -> None:
        """A bulk import that jumps from below to far above the threshold trains."""
        assert decide(label_changes_since_training=250).train

    def test_the_first_model_also_waits_for_the_threshold(self) -> None:
        """Without a model, fewer than min_new_annotations labels do not train yet."""
        decision = decide(
            label_changes_since_training=4, has_model=False, seconds_since_training=None
        )
        assert TrainingDecision(False, "4 of 10 new labels") == decision

    def test_no_changes_never_train(self) -> None:
        """With nothing new since the last training there is nothing to learn."""
        decision = decide(label_changes_since_training=0, seconds_since_training=10**6)
        assert TrainingDecision(False, "no new labels since the last training") == decision

    def test_a_zero_threshold_still_needs_one_change(self) -> None:
        """min_new_annotations = 0 does not retrain on every poll without a change."""
        assert not decide(min_new_annotations=0, label_changes_since_training=0).train


class TestMinInterval:
    def test_too_soon_after_the_last_training_waits_and_says_how_long(self) -> None:
        """Within min_interval the reason says in how many seconds training is allowed."""
        decision = decide(label_changes_since_training=12, seconds_since_training=18.0)
        assert TrainingDecision(False, "next training allowed in 42 s") == decision

    def test_the_wait_is_rounded_up(self) -> None:
        """A wait of 0.2 s reads as 1 s, never as 'allowed in 0 s' while refusing."""
        decision = decide(label_changes_since_training=12, seconds_since_training=59.8)
        assert "next training allowed in 1 s" == decision.reason

    def test_exactly_min_interval_after_the_last_training_trains(self) -> None:
        """The interval is inclusive: at min_interval seconds training is allowed."""
        assert decide(label_changes_since_training=12, seconds_since_training=60.0).train

    def test_the_first_model_does_not_wait_for_the_interval(self) -> None:
        """Without a model, min_interval does not apply, even with a recent training time."""
        decision = decide(
            label_changes_since_training=12, seconds_since_training=1.0, has_model=False
        )
        assert decision.train

    def test_a_model_with_an_unknown_training_time_counts_as_old(self) -> None:
        """A model whose training time is unknown does not block training by the interval."""
        assert decide(label_changes_since_training=12, seconds_since_training=None).train


class TestMaxInterval:
    def test_any_change_trains_once_max_interval_has_passed(self) -> None:
        """After max_interval, a single new label is enough to retrain."""
        decision = decide(
            label_changes_since_training=1, seconds_since_training=3600.0, max_interval=3600.0
        )
        assert TrainingDecision(True, "1 new label and over 3600 s since training") == decision

    def test_before_max_interval_the_reason_says_when_any_change_will_train(self) -> None:
        """Below the threshold and before max_interval, the reason says when it will train."""
        decision = decide(
            label_changes_since_training=3, seconds_since_training=3000.0, max_interval=3600.0
        )
        assert "3 of 10 new labels; any change trains in 600 s" == decision.reason

    def test_max_interval_without_changes_does_not_train(self) -> None:
        """A stale model with no new labels is not retrained on the same data."""
        decision = decide(
            label_changes_since_training=0, seconds_since_training=10**6, max_interval=3600.0
        )
        assert not decision.train

    def test_max_interval_does_not_undercut_min_interval(self) -> None:
        """A max_interval shorter than min_interval still waits for min_interval."""
        decision = decide(
            label_changes_since_training=1,
            seconds_since_training=30.0,
            max_interval=10.0,
            min_interval=60.0,
        )
        assert not decision.train


class TestForced:
    def test_forced_trains_on_a_single_change_within_the_interval(self) -> None:
        """The cron trigger ignores the threshold and min_interval when anything changed."""
        decision = decide(label_changes_since_training=1, seconds_since_training=5.0, forced=True)
        assert TrainingDecision(True, "forced: 1 new label since the last training") == decision

    def test_forced_trains_when_there_is_no_model(self) -> None:
        """The cron trigger trains a first model as soon as cold start is over."""
        decision = decide(
            label_changes_since_training=0,
            has_model=False,
            seconds_since_training=None,
            forced=True,
        )
        assert TrainingDecision(True, "forced: no model yet") == decision

    def test_forced_without_changes_does_not_retrain(self) -> None:
        """The cron trigger skips a project whose model already saw every label."""
        decision = decide(label_changes_since_training=0, forced=True)
        assert TrainingDecision(False, "forced: no new labels since the last training") == decision
