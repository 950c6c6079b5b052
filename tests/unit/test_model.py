"""The model: factories, training with cross-validation, atomic artifacts, scoring, and
the worker process. Real scikit-learn on a small synthetic corpus; no Label Studio."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from aldaemon.errors import ModelError
from aldaemon.model import training
from aldaemon.model.artifacts import load_artifact
from aldaemon.model.default import make_text_classifier
from aldaemon.model.protocol import DEFAULT_FACTORY, build_model, load_factory
from aldaemon.model.requests import ScoringRequest, SingleLabelTraining
from aldaemon.model.training import evaluate, score_pool, train_and_save
from aldaemon.model.worker import ModelWorker, exit_when_orphaned, exit_with_parent
from aldaemon.sync.scoring import informativeness

POSITIVE_WORDS = ("great", "lovely", "excellent", "superb", "delightful", "wonderful")
NEGATIVE_WORDS = ("awful", "terrible", "dreadful", "horrible", "nasty", "disgusting")
FILLER_WORDS = ("the", "food", "service", "was", "place", "really", "quite", "and", "staff")
THIS_MODULE = __name__
SLOW_FIT_MARKER_ENV = "ALDAEMON_TEST_SLOW_FIT_MARKER"
RENDEZVOUS_DIR_ENV = "ALDAEMON_TEST_RENDEZVOUS_DIR"


def synthetic_corpus(size: int, *, seed: int) -> tuple[list[str], list[str]]:
    """`size` short reviews, half 'pos' and half 'neg', each with two words of its class."""
    rng = random.Random(seed)
    texts: list[str] = []
    labels: list[str] = []
    for index in range(size):
        label = "pos" if index % 2 == 0 else "neg"
        words = POSITIVE_WORDS if label == "pos" else NEGATIVE_WORDS
        sentence = rng.sample(FILLER_WORDS, 3) + rng.sample(words, 2)
        rng.shuffle(sentence)
        texts.append(" ".join(sentence))
        labels.append(label)
    return texts, labels


TRAIN_TEXTS, TRAIN_LABELS = synthetic_corpus(40, seed=1)
HELD_OUT_TEXTS, HELD_OUT_LABELS = synthetic_corpus(40, seed=2)


# Factories that tests name by reference, as a config would. They live at module level
# so a spawned worker process can import them.


class WrappedClassifier:
    """A custom model that is not an sklearn Pipeline and records where it was fitted."""

    def __init__(self) -> None:
        self.pipeline = make_text_classifier()
        self.fit_pid: int | None = None

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> WrappedClassifier:
        self.fit_pid = os.getpid()
        self.pipeline.fit(texts, labels)
        return self

    def predict_proba(self, texts: Sequence[str]) -> Any:
        return self.pipeline.predict_proba(texts)

    @property
    def classes_(self) -> Any:
        return self.pipeline.classes_


def make_wrapped_classifier() -> WrappedClassifier:
    return WrappedClassifier()


class UnpicklableClassifier(WrappedClassifier):
    """Trains fine but cannot be saved: a lock does not pickle."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()


def make_unpicklable_classifier() -> UnpicklableClassifier:
    return UnpicklableClassifier()


class FailingClassifier(WrappedClassifier):
    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> FailingClassifier:
        raise RuntimeError("the GPU caught fire")


def make_failing_classifier() -> FailingClassifier:
    return FailingClassifier()


class SelfKillingClassifier(WrappedClassifier):
    """Dies like a process the OOM killer picked."""

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> SelfKillingClassifier:
        os.kill(os.getpid(), signal.SIGKILL)
        return self


def make_self_killing_classifier() -> SelfKillingClassifier:
    return SelfKillingClassifier()


class SlowClassifier(WrappedClassifier):
    """Announces its fit by creating a marker file, then takes a minute."""

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> SlowClassifier:
        Path(os.environ[SLOW_FIT_MARKER_ENV]).write_text(str(os.getpid()))
        time.sleep(60)
        return self


def make_slow_classifier() -> SlowClassifier:
    return SlowClassifier()


class RendezvousClassifier(WrappedClassifier):
    """Fits only once a second process has started fitting too: proves parallel workers."""

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> RendezvousClassifier:
        meeting_point = Path(os.environ[RENDEZVOUS_DIR_ENV])
        (meeting_point / str(os.getpid())).touch()
        for _ in range(600):
            if len(os.listdir(meeting_point)) >= 2:
                super().fit(texts, labels)
                return self
            time.sleep(0.1)
        raise RuntimeError("no second worker process showed up")


def make_rendezvous_classifier() -> RendezvousClassifier:
    return RendezvousClassifier()


def make_not_a_classifier() -> dict[str, str]:
    return {}


def train_default(path: Path, **overrides: Any) -> training.TrainingResult:
    arguments: dict[str, Any] = {
        "factory_ref": DEFAULT_FACTORY,
        "texts": TRAIN_TEXTS,
        "labels": TRAIN_LABELS,
        "artifact_path": str(path),
    }
    arguments.update(overrides)
    return train_and_save(SingleLabelTraining(**arguments))


@pytest.fixture(scope="module")
def trained_artifact(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One default model trained on the synthetic corpus, shared by the scoring tests."""
    path = tmp_path_factory.mktemp("artifact") / "model.joblib"
    train_default(path)
    return str(path)


class TestLoadFactory:
    def test_the_default_reference_resolves_to_the_default_classifier(self) -> None:
        """aldaemon.model.default:make_text_classifier names the shipped factory."""
        factory: object = load_factory(DEFAULT_FACTORY)
        assert make_text_classifier is factory

    def test_a_custom_reference_resolves_to_its_factory(self) -> None:
        """A factory in any importable module is found by 'module:attribute'."""
        factory: object = load_factory(f"{THIS_MODULE}:make_wrapped_classifier")
        assert make_wrapped_classifier is factory

    def test_a_dotted_attribute_is_followed(self) -> None:
        """'module:Class.attribute' walks the attribute path."""
        ref = f"{THIS_MODULE}:WrappedClassifier.fit"
        attribute: object = load_factory(ref)
        assert WrappedClassifier.fit is attribute

    def test_a_missing_attribute_is_named(self) -> None:
        """A factory the module lacks gives a ModelError naming module and attribute."""
        with pytest.raises(ModelError) as raised:
            load_factory("aldaemon.model.default:nope")
        expected = (
            "model = 'aldaemon.model.default:nope': "
            "module aldaemon.model.default has no attribute nope"
        )
        assert expected == str(raised.value)

    def test_a_missing_module_is_named(self) -> None:
        """A module that cannot be imported gives a ModelError naming it."""
        with pytest.raises(ModelError, match=r"cannot import module no_such_package\.models"):
            load_factory("no_such_package.models:make")

    def test_a_reference_without_a_colon_is_rejected(self) -> None:
        """'module.factory' without the colon says which form is expected."""
        with pytest.raises(ModelError, match=r"expected 'package\.module:factory'"):
            load_factory("aldaemon.model.default.make_text_classifier")

    def test_a_non_callable_is_rejected(self) -> None:
        """A reference to a constant is not a factory."""
        with pytest.raises(ModelError, match="HASHED_FEATURES is not callable"):
            load_factory("aldaemon.model.default:HASHED_FEATURES")

    def test_a_factory_returning_no_classifier_is_rejected(self) -> None:
        """What the factory returns must have fit and predict_proba."""
        with pytest.raises(ModelError, match="has no fit or predict_proba"):
            build_model(f"{THIS_MODULE}:make_not_a_classifier")


class TestTrainAndSave:
    def test_the_artifact_is_written_and_loads(self, tmp_path: Path) -> None:
        """A training leaves an artifact that loads with the classes it learned."""
        train_default(tmp_path / "model.joblib")
        assert ("neg", "pos") == load_artifact(str(tmp_path / "model.joblib")).classes

    def test_the_result_counts_the_labels_per_class(self, tmp_path: Path) -> None:
        """The result reports how many labels of each class went in."""
        result = train_default(tmp_path / "model.joblib")
        assert (40, {"neg": 20, "pos": 20}) == (result.n_labels, result.class_counts)

    def test_held_out_predictions_are_well_above_chance(self, trained_artifact: str) -> None:
        """On unseen texts with the same class words, accuracy is far above 0.5."""
        metrics = evaluate(
            artifact_path=trained_artifact, texts=HELD_OUT_TEXTS, labels=HELD_OUT_LABELS
        )
        assert metrics["accuracy"] >= 0.9

    def test_enough_labels_give_cross_validated_metrics(self, tmp_path: Path) -> None:
        """With at least 2 labels per class, cv_accuracy and cv_macro_f1 are reported."""
        result = train_default(tmp_path / "model.joblib")
        assert {"cv_accuracy", "cv_macro_f1"} == set(result.metrics)

    def test_cross_validated_metrics_reflect_a_learnable_corpus(self, tmp_path: Path) -> None:
        """Out-of-fold accuracy on a corpus with distinct class words is far above chance."""
        result = train_default(tmp_path / "model.joblib")
        assert result.metrics["cv_accuracy"] >= 0.9

    def test_a_class_with_one_label_gives_no_metrics(self, tmp_path: Path) -> None:
        """With a single label in some class no 2-fold split exists, so metrics are empty."""
        texts = [*TRAIN_TEXTS[0:20:2], TRAIN_TEXTS[1]]
        labels = [*TRAIN_LABELS[0:20:2], TRAIN_LABELS[1]]
        result = train_default(tmp_path / "model.joblib", texts=texts, labels=labels)
        assert {} == result.metrics

    def test_a_single_class_is_refused(self, tmp_path: Path) -> None:
        """A classifier needs at least two classes to learn from."""
        with pytest.raises(ModelError, match="at least 2 classes"):
            train_default(tmp_path / "model.joblib", texts=["a", "b"], labels=["pos", "pos"])

    def test_a_failing_fit_becomes_a_model_error(self, tmp_path: Path) -> None:
        """An exception inside fit is reported as a ModelError naming the factory."""
        ref = f"{THIS_MODULE}:make_failing_classifier"
        with pytest.raises(ModelError, match="the GPU caught fire"):
            train_default(tmp_path / "model.joblib", factory_ref=ref)

    def test_a_custom_factory_is_the_one_trained(self, tmp_path: Path) -> None:
        """The model saved is the one the configured factory made."""
        ref = f"{THIS_MODULE}:make_wrapped_classifier"
        train_default(tmp_path / "model.joblib", factory_ref=ref)
        artifact = load_artifact(str(tmp_path / "model.joblib"))
        model: object = artifact.model
        assert (ref, WrappedClassifier) == (artifact.factory_ref, type(model))


class TestAtomicSave:
    def test_a_successful_save_leaves_no_temp_file(self, tmp_path: Path) -> None:
        """After saving, the directory holds the artifact and nothing else."""
        train_default(tmp_path / "model.joblib")
        assert ["model.joblib"] == sorted(os.listdir(tmp_path))

    def test_a_failed_save_leaves_the_previous_artifact_intact(self, tmp_path: Path) -> None:
        """A model that cannot be saved raises and leaves the earlier artifact loadable."""
        path = tmp_path / "model.joblib"
        train_default(path)
        with pytest.raises(ModelError, match="cannot save model artifact"):
            train_default(path, factory_ref=f"{THIS_MODULE}:make_unpicklable_classifier")
        assert DEFAULT_FACTORY == load_artifact(str(path)).factory_ref

    def test_a_failed_save_leaves_no_temp_file(self, tmp_path: Path) -> None:
        """The half-written temp file of a failed save is removed."""
        with pytest.raises(ModelError):
            train_default(
                tmp_path / "model.joblib",
                factory_ref=f"{THIS_MODULE}:make_unpicklable_classifier",
            )
        assert [] == os.listdir(tmp_path)

    def test_a_temp_file_left_by_a_crash_is_removed_by_the_next_save(self, tmp_path: Path) -> None:
        """A temp file from a save killed midway does not pile up."""
        (tmp_path / ".model.joblib.k2j3h4.tmp").write_bytes(b"half a pickle")
        train_default(tmp_path / "model.joblib")
        assert ["model.joblib"] == sorted(os.listdir(tmp_path))

    def test_a_missing_artifact_is_a_model_error(self, tmp_path: Path) -> None:
        """Loading an artifact that does not exist says so."""
        with pytest.raises(ModelError, match="does not exist"):
            load_artifact(str(tmp_path / "nope.joblib"))

    def test_a_foreign_pickle_is_refused(self, tmp_path: Path) -> None:
        """A file that is not an aldaemon artifact is refused rather than used."""
        joblib.dump(make_text_classifier(), tmp_path / "bare.joblib")
        with pytest.raises(ModelError, match="not an aldaemon model artifact"):
            load_artifact(str(tmp_path / "bare.joblib"))


class TestScorePool:
    def test_every_task_gets_a_label_and_a_score_in_zero_to_one(
        self, trained_artifact: str
    ) -> None:
        """Each task of the pool gets a known class and a score within [0, 1]."""
        pool = score_pool(
            artifact_path=trained_artifact,
            task_ids=range(100, 140),
            texts=HELD_OUT_TEXTS,
            strategy="margin",
        )
        in_bounds = all(0.0 <= score <= 1.0 for score in pool.scores)
        assert (tuple(range(100, 140)), {"neg", "pos"}, True) == (
            pool.task_ids,
            set(pool.labels),
            in_bounds,
        )

    def test_the_label_is_the_most_likely_class(self, trained_artifact: str) -> None:
        """A text full of positive words is labeled 'pos'."""
        pool = score_pool(
            artifact_path=trained_artifact,
            task_ids=[1],
            texts=["great lovely excellent superb"],
            strategy="margin",
        )
        assert ("pos",) == pool.labels

    def test_an_ambiguous_text_scores_lower_than_a_clear_one(self, trained_artifact: str) -> None:
        """A text mixing both classes' words is more informative than a one-sided one."""
        pool = score_pool(
            artifact_path=trained_artifact,
            task_ids=[1, 2],
            texts=["great lovely excellent superb", "great awful the food"],
            strategy="entropy",
        )
        assert pool.scores[1] < pool.scores[0]

    def test_scores_follow_the_chosen_strategy(self, trained_artifact: str) -> None:
        """The scores are the strategy applied to the model's probabilities."""
        model = load_artifact(trained_artifact).model
        expected = informativeness(model.predict_proba(HELD_OUT_TEXTS), strategy="entropy")
        pool = score_pool(
            artifact_path=trained_artifact,
            task_ids=range(40),
            texts=HELD_OUT_TEXTS,
            strategy="entropy",
        )
        assert pytest.approx(expected.tolist()) == list(pool.scores)

    def test_without_clusters_asked_there_are_none(self, trained_artifact: str) -> None:
        """clusters = 0 leaves the cluster field empty."""
        pool = score_pool(
            artifact_path=trained_artifact, task_ids=[1], texts=["great"], strategy="margin"
        )
        assert None is pool.clusters

    def test_clusters_are_given_when_asked(self, trained_artifact: str) -> None:
        """clusters = 3 assigns every task one of 3 cluster numbers."""
        pool = score_pool(
            artifact_path=trained_artifact,
            task_ids=range(40),
            texts=HELD_OUT_TEXTS,
            strategy="margin",
            clusters=3,
        )
        assert pool.clusters is not None
        assert (40, True) == (len(pool.clusters), set(pool.clusters) <= {0, 1, 2})

    def test_more_clusters_than_tasks_still_clusters(self, trained_artifact: str) -> None:
        """A pool smaller than the cluster count gives each task a cluster, no error."""
        pool = score_pool(
            artifact_path=trained_artifact,
            task_ids=[1, 2],
            texts=["great food", "awful food"],
            strategy="margin",
            clusters=8,
        )
        assert pool.clusters is not None
        assert 2 == len(pool.clusters)

    def test_a_model_that_is_no_pipeline_gives_no_clusters(self, tmp_path: Path) -> None:
        """Without pipeline features to cluster on, clusters stay None."""
        path = tmp_path / "model.joblib"
        train_default(path, factory_ref=f"{THIS_MODULE}:make_wrapped_classifier")
        pool = score_pool(
            artifact_path=str(path),
            task_ids=range(40),
            texts=HELD_OUT_TEXTS,
            strategy="margin",
            clusters=3,
        )
        assert None is pool.clusters

    def test_chunked_prediction_matches_one_pass(
        self, trained_artifact: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Predicting in chunks of 7 gives the same labels, scores and clusters as one pass."""

        def run() -> training.ScoredPool:
            return score_pool(
                artifact_path=trained_artifact,
                task_ids=range(40),
                texts=HELD_OUT_TEXTS,
                strategy="margin",
                clusters=3,
            )

        one_pass = run()
        monkeypatch.setattr(training, "PREDICT_CHUNK", 7)
        chunked = run()
        assert (one_pass.labels, one_pass.clusters) == (chunked.labels, chunked.clusters)
        assert pytest.approx(one_pass.scores) == chunked.scores

    def test_a_random_fraction_replaces_that_share_of_scores(self, trained_artifact: str) -> None:
        """random_fraction 0.5 gives 20 of 40 tasks a score other than their own."""
        arguments: dict[str, Any] = {
            "artifact_path": trained_artifact,
            "task_ids": range(40),
            "texts": HELD_OUT_TEXTS,
            "strategy": "margin",
        }
        plain = score_pool(**arguments)
        mixed = score_pool(**arguments, random_fraction=0.5, seed=3)
        changed = np.count_nonzero(np.array(plain.scores) != np.array(mixed.scores))
        assert 20 == changed

    def test_an_empty_pool_gives_an_empty_result(self, trained_artifact: str) -> None:
        """Scoring no tasks returns empty tuples."""
        pool = score_pool(artifact_path=trained_artifact, task_ids=[], texts=[], strategy="margin")
        assert ((), (), ()) == (pool.task_ids, pool.labels, pool.scores)

    def test_an_unknown_strategy_is_rejected(self, trained_artifact: str) -> None:
        """A strategy outside STRATEGIES raises before any work is done."""
        with pytest.raises(ValueError, match="unknown strategy"):
            score_pool(artifact_path=trained_artifact, task_ids=[1], texts=["x"], strategy="bald")


class TestModelWorker:
    async def test_training_runs_in_another_process(self, tmp_path: Path) -> None:
        """The model is fitted in the worker process, not in the event loop's process."""
        worker = ModelWorker()
        try:
            await worker.train(
                SingleLabelTraining(
                    factory_ref=f"{THIS_MODULE}:make_wrapped_classifier",
                    texts=TRAIN_TEXTS,
                    labels=TRAIN_LABELS,
                    artifact_path=str(tmp_path / "model.joblib"),
                )
            )
        finally:
            worker.shutdown()
        model = load_artifact(str(tmp_path / "model.joblib")).model
        assert isinstance(model, WrappedClassifier)
        assert model.fit_pid not in (None, os.getpid())

    async def test_training_returns_its_result(self, tmp_path: Path) -> None:
        """The TrainingResult comes back from the worker intact."""
        worker = ModelWorker()
        try:
            result = await worker.train(
                SingleLabelTraining(
                    factory_ref=DEFAULT_FACTORY,
                    texts=TRAIN_TEXTS,
                    labels=TRAIN_LABELS,
                    artifact_path=str(tmp_path / "model.joblib"),
                )
            )
        finally:
            worker.shutdown()
        assert (("neg", "pos"), 40) == (result.classes, result.n_labels)

    async def test_scoring_in_the_worker_matches_scoring_in_process(
        self, trained_artifact: str
    ) -> None:
        """score() gives the same pool as score_pool called directly."""
        arguments: dict[str, Any] = {
            "artifact_path": trained_artifact,
            "task_ids": list(range(40)),
            "texts": HELD_OUT_TEXTS,
            "strategy": "least_confidence",
            "clusters": 2,
        }
        worker = ModelWorker()
        try:
            remote = await worker.score(ScoringRequest(**arguments))
        finally:
            worker.shutdown()
        assert score_pool(**arguments) == remote

    async def test_a_model_error_in_the_worker_reaches_the_caller(self, tmp_path: Path) -> None:
        """A failed fit in the worker is raised to the awaiting caller as a ModelError."""
        worker = ModelWorker()
        try:
            with pytest.raises(ModelError, match="the GPU caught fire"):
                await worker.train(
                    SingleLabelTraining(
                        factory_ref=f"{THIS_MODULE}:make_failing_classifier",
                        texts=TRAIN_TEXTS,
                        labels=TRAIN_LABELS,
                        artifact_path=str(tmp_path / "model.joblib"),
                    )
                )
        finally:
            worker.shutdown()

    async def test_a_dead_worker_fails_its_job_and_the_next_job_runs(self, tmp_path: Path) -> None:
        """A worker killed mid-training gives a ModelError; a fresh process takes the next job."""
        worker = ModelWorker()
        arguments: dict[str, Any] = {
            "texts": TRAIN_TEXTS,
            "labels": TRAIN_LABELS,
            "artifact_path": str(tmp_path / "model.joblib"),
        }
        try:
            with pytest.raises(ModelError, match="worker process died"):
                await worker.train(
                    SingleLabelTraining(
                        factory_ref=f"{THIS_MODULE}:make_self_killing_classifier", **arguments
                    )
                )
            result = await worker.train(
                SingleLabelTraining(factory_ref=DEFAULT_FACTORY, **arguments)
            )
        finally:
            worker.shutdown()
        assert ("neg", "pos") == result.classes

    async def test_two_workers_train_side_by_side(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With max_workers=2, two trainings run at the same time in two processes."""
        meeting_point = tmp_path / "meeting-point"
        meeting_point.mkdir()
        monkeypatch.setenv(RENDEZVOUS_DIR_ENV, str(meeting_point))
        worker = ModelWorker(max_workers=2)
        try:
            results = await asyncio.gather(
                *(
                    worker.train(
                        SingleLabelTraining(
                            factory_ref=f"{THIS_MODULE}:make_rendezvous_classifier",
                            texts=TRAIN_TEXTS,
                            labels=TRAIN_LABELS,
                            artifact_path=str(tmp_path / f"model-{number}.joblib"),
                        )
                    )
                    for number in (1, 2)
                )
            )
        finally:
            worker.shutdown()
        assert [("neg", "pos")] * 2 == [result.classes for result in results]

    async def test_a_shut_down_worker_refuses_jobs(self, tmp_path: Path) -> None:
        """After shutdown, a new job raises ModelError instead of starting a process."""
        worker = ModelWorker()
        worker.shutdown()
        with pytest.raises(ModelError, match="shut down"):
            await worker.train(
                SingleLabelTraining(
                    factory_ref=DEFAULT_FACTORY,
                    texts=TRAIN_TEXTS,
                    labels=TRAIN_LABELS,
                    artifact_path=str(tmp_path / "model.joblib"),
                )
            )

    async def test_shutdown_can_kill_a_running_training(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """kill_running ends a training in progress; its caller gets a ModelError at once."""
        worker = ModelWorker()
        job, _ = await start_slow_training(worker, tmp_path, monkeypatch)
        worker.shutdown(kill_running=True)
        with pytest.raises(ModelError, match="shut down"):
            await job

    async def test_a_job_its_caller_gave_up_on_is_killed_and_the_next_job_runs(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A cycle_timeout kills the fit in progress rather than queueing every later job."""
        worker = ModelWorker()
        try:
            job, fitting_pid = await start_slow_training(worker, tmp_path, monkeypatch)
            job.cancel()
            with pytest.raises(asyncio.CancelledError):
                await job
            # The slow fit sleeps 60 s: a process still there after 20 s was not killed.
            assert await process_gone(fitting_pid, within=20.0)
            result = await worker.train(
                SingleLabelTraining(
                    factory_ref=DEFAULT_FACTORY,
                    texts=TRAIN_TEXTS,
                    labels=TRAIN_LABELS,
                    artifact_path=str(tmp_path / "next.joblib"),
                )
            )
        finally:
            worker.shutdown()
        assert ("neg", "pos") == result.classes


async def start_slow_training(
    worker: ModelWorker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[asyncio.Task[training.TrainingResult], int]:
    """A training of SlowClassifier, returned once its fit has begun, with the fitting pid."""
    marker = tmp_path / "fitting"
    monkeypatch.setenv(SLOW_FIT_MARKER_ENV, str(marker))  # inherited by the spawned worker
    job = asyncio.create_task(
        worker.train(
            SingleLabelTraining(
                factory_ref=f"{THIS_MODULE}:make_slow_classifier",
                texts=TRAIN_TEXTS,
                labels=TRAIN_LABELS,
                artifact_path=str(tmp_path / "slow.joblib"),
            )
        )
    )
    while not marker.exists() and not job.done():
        await asyncio.sleep(0.05)
    return job, int(marker.read_text()) if marker.exists() else -1


async def process_gone(pid: int, *, within: float) -> bool:
    """True once `pid` no longer runs (reaped or a zombie), polling up to `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        await asyncio.sleep(0.1)
    return False


# --- worker processes outliving their parent -----------------------------------------------

ORPHAN_WAIT_SECONDS = 20.0

# Run with `python -c`, so the spawned worker does not re-import a main module.
PARENT_OF_A_MODEL_WORKER = """
import asyncio, multiprocessing, sys
from aldaemon.model.requests import ScoringRequest, SingleLabelTraining
from aldaemon.model.worker import ModelWorker

async def main():
    worker = ModelWorker()
    await worker.train(SingleLabelTraining(
        factory_ref="aldaemon.model.default:make_text_classifier",
        texts=["good great", "great fine", "bad awful", "awful poor"],
        labels=["pos", "pos", "neg", "neg"],
        artifact_path=sys.argv[1],
    ))
    print(*[child.pid for child in multiprocessing.active_children()], flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""

CHILD_WATCHING_ITS_PARENT = f"""
import os, threading, time
from aldaemon.model.worker import {exit_when_orphaned.__name__}
threading.Thread(target={exit_when_orphaned.__name__}, args=(os.getppid(),), daemon=True).start()
print(os.getpid(), flush=True)
time.sleep(600)
"""

PARENT_OF_A_WATCHING_CHILD = f"""
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", {CHILD_WATCHING_ITS_PARENT!r}])
time.sleep(600)
"""


@dataclass(frozen=True)
class Proc:
    """A process identified by pid AND start time, so a reused pid is never mistaken for it."""

    pid: int
    started: str

    @classmethod
    def of(cls, pid: int) -> Proc:
        fields = _proc_stat_fields(pid)
        assert fields is not None, f"process {pid} is not running"
        return cls(pid, fields[19])  # field 22: starttime

    def alive(self) -> bool:
        """Running, and not a zombie waiting for its new parent to reap it."""
        fields = _proc_stat_fields(self.pid)
        return fields is not None and fields[19] == self.started and fields[0] != "Z"

    def kill(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)


def _proc_stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name, or None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _children(pid: int) -> list[Proc]:
    """The processes whose parent is `pid`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        fields = _proc_stat_fields(int(entry.name)) if entry.name.isdigit() else None
        if fields and int(fields[1]) == pid:  # field 4: ppid
            found.append(Proc(int(entry.name), fields[19]))
    return found


def _command_line(process: Proc) -> str:
    try:
        return Path(f"/proc/{process.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _first_line(output: Path, process: subprocess.Popen[bytes]) -> str:
    """The first line `process` (or a child of it) writes, waiting up to two minutes."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = output.read_text()
        if "\n" in text:
            return text.split("\n", 1)[0]
        assert process.poll() is None, f"the parent exited early:\n{text}"
        time.sleep(0.1)
    raise AssertionError(f"no line written by the parent in 2 minutes:\n{output.read_text()}")


def _survivors(processes: Sequence[Proc]) -> list[Proc]:
    """The processes still alive after waiting up to ORPHAN_WAIT_SECONDS for them to end."""
    deadline = time.monotonic() + ORPHAN_WAIT_SECONDS
    while any(p.alive() for p in processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [p for p in processes if p.alive()]


@dataclass(frozen=True)
class OrphanedPool:
    """What a SIGKILL of a process owning a ModelWorker left behind."""

    workers: list[Proc]
    trackers: list[Proc]
    survivors: list[Proc]


@pytest.fixture(scope="class")
def orphaned_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrphanedPool]:
    """A parent runs one job in a ModelWorker and is SIGKILLed alone, not with its group."""
    tmp_path = tmp_path_factory.mktemp("orphaned-pool")
    output = tmp_path / "output.txt"
    with output.open("wb") as sink:
        parent = subprocess.Popen(
            [sys.executable, "-c", PARENT_OF_A_MODEL_WORKER, str(tmp_path / "model.joblib")],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    left_behind: list[Proc] = []
    try:
        workers = [Proc.of(int(pid)) for pid in _first_line(output, parent).split()]
        trackers = [
            child for child in _children(parent.pid) if "resource_tracker" in _command_line(child)
        ]
        assert (1, 1) == (len(workers), len(trackers)), _children(parent.pid)
        left_behind = workers + trackers
        parent.kill()
        parent.wait()
        yield OrphanedPool(workers, trackers, _survivors(left_behind))
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for process in left_behind:
            process.kill()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
class TestWorkerOutlivingItsParent:
    def test_the_worker_exits_when_its_parent_is_killed(self, orphaned_pool: OrphanedPool) -> None:
        """A `kill -9` of the daemon's main pid alone leaves no model worker running."""
        assert [] == [p for p in orphaned_pool.workers if p in orphaned_pool.survivors]

    def test_the_resource_tracker_exits_with_the_worker(self, orphaned_pool: OrphanedPool) -> None:
        """The resource tracker ends once the worker, last holder of its pipe, is gone."""
        assert [] == [p for p in orphaned_pool.trackers if p in orphaned_pool.survivors]

    def test_a_worker_whose_parent_died_before_the_initializer_exits(self) -> None:
        """A worker whose parent is already gone when the initializer runs exits at once."""
        # No process is its own parent: it looks like a worker whose parent has died.
        script = (
            f"import os, time; from aldaemon.model.worker import {exit_with_parent.__name__}; "
            f"{exit_with_parent.__name__}(os.getpid()); time.sleep(600)"
        )
        process = subprocess.Popen([sys.executable, "-c", script])
        try:
            exit_code = process.wait(timeout=ORPHAN_WAIT_SECONDS)
        finally:
            process.kill()
            process.wait()
        assert 1 == exit_code

    def test_the_polling_fallback_ends_an_orphan(self, tmp_path: Path) -> None:
        """Where prctl is missing, the thread watching getppid() ends a process orphaned."""
        output = tmp_path / "output.txt"
        with output.open("wb") as sink:
            parent = subprocess.Popen(
                [sys.executable, "-c", PARENT_OF_A_WATCHING_CHILD], stdout=sink
            )
        child: list[Proc] = []
        try:
            child.append(Proc.of(int(_first_line(output, parent))))
            parent.kill()
            parent.wait()
            survivors = _survivors(child)
        finally:
            parent.kill()
            parent.wait()
            for process in child:
                process.kill()
        assert [] == survivors
