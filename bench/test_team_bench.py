"""The team benchmarks' own arithmetic (bench.team_noise, bench.stop_signal)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from aldaemon.sync.consensus import LATEST, MAJORITY
from aldaemon.sync.stopping import Agreement
from bench import common, parts
from bench.stop_signal import first_firing, stopping_cost
from bench.team_noise import NOISY, Answer, make_plan, suspect_quality, trained_labels
from demo.data import Review


class TestTeamNoisePlan:
    def test_every_task_gets_two_different_annotators_and_only_the_noisy_one_errs(self) -> None:
        """Overlap 2 with distinct annotators; the careful ones always give the truth."""
        train = [Review(i, f"t{i}", "great" if i % 3 else "other") for i in range(300)]
        plan = make_plan(seed=1, train=train, tasks=200, step=50, noise=0.3)
        answers = [a for step in plan.steps for a in step]
        per_task = Counter(a.task for a in answers)
        assert set(per_task.values()) == {2} and len(per_task) == 200
        for task in per_task:
            assert len({a.annotator for a in answers if a.task == task}) == 2
        wrong = [a for a in answers if a.label != train[plan.reviews[a.task]].label]
        assert {a.annotator for a in wrong} == {NOISY}
        noisy = [a for a in answers if a.annotator == NOISY]
        assert 0.2 < len(wrong) / len(noisy) < 0.4


class TestTrainedLabels:
    def test_latest_takes_the_last_answer_and_majority_drops_a_split(self) -> None:
        """Two answers: `latest` trusts the later one; `majority` trains only agreement."""
        answers = [Answer(0, 0, "great"), Answer(1, 0, "great"), Answer(0, 2, "other")]
        answers.append(Answer(1, 1, "great"))
        assert {0: "other", 1: "great"} == trained_labels(answers, LATEST)
        assert {1: "great"} == trained_labels(answers, MAJORITY)


class TestSuspectQuality:
    def test_precision_and_recall_count_suspects_with_a_wrong_trained_label(self) -> None:
        """2 of 4 suspects are wrong trained labels, of 3 wrong ones; 1 wrong was overridden."""
        truth = {t: "great" for t in range(10)}
        trained = {t: ("other" if t in (1, 2, 3) else "great") for t in range(10)}
        quality = suspect_quality(
            suspects=[1, 2, 5, 6], trained=trained, truth=truth, noisy_wrong={1, 2, 3, 4}
        )
        assert (quality["precision"], quality["recall"]) == (0.5, 0.6667)
        assert quality["recall_of_all_wrong"] == 0.5
        assert quality["base_rate"] == 0.3


class TestStopSignalCost:
    def test_fires_where_the_run_of_high_agreement_reaches_k(self) -> None:
        """Index of the version completing the first run of k agreements >= the threshold."""
        kappas = [0.9, 0.995, 0.999, 0.97, 0.99, 0.995, 0.999]
        agreements = [Agreement(f"v{i + 2}", k) for i, k in enumerate(kappas)]
        assert 7 == first_firing(agreements, kappa=0.99, versions=3)
        assert first_firing(agreements, kappa=0.99, versions=4) is None

    def test_the_cost_compares_with_the_first_version_at_twice_the_labels(self) -> None:
        """Loss = accuracy at >= 2x labels minus accuracy where it fired; censored past the end."""
        curve = [{"labels": 50 * (i + 1), "accuracy": 0.70 + 0.01 * i} for i in range(8)]
        cost = stopping_cost(curve, 1, max_loss=0.01)
        assert (cost["labels"], cost["labels_2x"], cost["loss"]) == (100, 200, 0.02)
        assert cost["lost_more"] is True
        assert stopping_cost(curve, 5, max_loss=0.01)["labels_2x"] is None
        assert stopping_cost(curve, None, max_loss=0.01) == {"fired": False, "labels": None}


class TestJoinParts:
    def test_seeds_of_separate_runs_are_pooled_and_summarized_together(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Runs are sorted by seed, the summary sees all of them, each part is recorded."""
        monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
        monkeypatch.setattr(common, "REPO_ROOT", tmp_path)
        for name, seed in (("a", 2), ("b", 0)):
            document = {
                "benchmark": "x",
                "finished_at": "then",
                "command": f"run {name}",
                "mode": "offline",
                "settings": {"cap": 10, "seeds": [seed]},
                "runs": [{"seed": seed}],
            }
            (tmp_path / f"{name}.json").write_text(json.dumps(document))
        joined = parts.join_parts(
            ["a", "b"],
            name="joined",
            module="bench.x",
            same_settings=("cap",),
            summarize=lambda runs: {"seeds": [r["seed"] for r in runs]},
        )
        assert joined["summary"] == {"seeds": [0, 2]}
        assert [p["command"] for p in joined["parts"]] == ["run a", "run b"]
        assert json.loads((tmp_path / "joined.json").read_text())["settings"]["seeds"] == [0, 2]

    def test_parts_run_with_other_settings_are_refused(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Joining runs of another cap would mix two experiments: refused, naming the key."""
        monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
        for name, cap in (("a", 10), ("b", 20)):
            document = {"mode": "offline", "settings": {"cap": cap}, "runs": [{"seed": cap}]}
            (tmp_path / f"{name}.json").write_text(json.dumps(document))
        with pytest.raises(SystemExit, match="cap"):
            parts.join_parts(
                ["a", "b"], name="j", module="m", same_settings=("cap",), summarize=lambda runs: {}
            )
