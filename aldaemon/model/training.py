"""Train, score and evaluate: the jobs the worker process runs (`run(request)`).

Each job is a top-level function taking a request (model/requests.py) and returning plain,
picklable data (model/results.py), so `ProcessPoolExecutor` can ship both across the
process boundary; the fitted model itself never crosses it, only its artifact path.
They are also plain functions, callable in-process by tests and benchmarks.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse
from sklearn.cluster import MiniBatchKMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline

from aldaemon.errors import ModelError
from aldaemon.model import requests
from aldaemon.model.artifacts import load_artifact, save_trained
from aldaemon.model.control_jobs import ControlModels, score_controls, train_controls_and_save
from aldaemon.model.label_issues import suspected_label_errors
from aldaemon.model.multilabel import OneVsRestTextModel
from aldaemon.model.multilabel_jobs import train_multilabel_and_save
from aldaemon.model.protocol import TextClassifier, build_model
from aldaemon.model.requests import ScoringRequest, SingleLabelTraining, TrainingRequest
from aldaemon.model.results import PoolScores, ScoredPool, TrainingResult
from aldaemon.model.span_jobs import score_spans, train_spans_and_save
from aldaemon.model.spans import SpanModel
from aldaemon.sync import scoring
from aldaemon.sync.shape_results import MULTILABEL_THRESHOLD
from aldaemon.sync.shape_scoring import multilabel_scores

__all__ = [
    "ScoredPool",
    "TrainingResult",
    "evaluate",
    "run",
    "score",
    "score_pool",
    "train_and_save",
    "train_controls_and_save",
    "train_multilabel_and_save",
    "train_spans_and_save",
]

MAX_CV_FOLDS = 5
# predict_proba on 100k long texts at once builds a 100k x 200k sparse matrix plus its
# dense n x K output; chunks bound the peak and cost nothing in speed.
PREDICT_CHUNK = 4096


def train_and_save(request: SingleLabelTraining) -> TrainingResult:
    """Cross-validate, fit on every label, and save the model atomically to artifact_path.

    Cross-validation is stratified with min(5, smallest class count) folds and skipped
    below 2; its metrics come from the pooled out-of-fold predictions, so every label is
    predicted exactly once by a model that did not see it. `seed` fixes the folds and any
    `random_state` the estimator exposes. Raises ModelError when anything fails; the
    previous artifact at artifact_path is then left as it was.
    """
    request.require_one_answer_per_text(request.labels, "labels")
    class_counts = dict(sorted(Counter(request.labels).items()))
    if len(class_counts) < 2:
        raise ModelError(
            f"training needs at least 2 classes, got {sorted(class_counts) or 'no labels'}"
        )
    started = time.perf_counter()
    metrics, out_of_sample = _cross_validate(request, class_counts=class_counts)
    model = fitted_model(
        factory_ref=request.factory_ref,
        texts=request.texts,
        labels=request.labels,
        seed=request.seed,
    )
    return save_trained(
        request,
        model=model,
        classes=tuple(str(label) for label in model.classes_),
        factory_ref=request.factory_ref,
        class_counts=class_counts,
        metrics=metrics,
        started=started,
        suspects=_suspects(out_of_sample, labels=request.labels, classes=sorted(class_counts)),
    )


def _suspects(
    out_of_sample: npt.NDArray[np.float64] | None, *, labels: Sequence[str], classes: list[str]
) -> tuple[int, ...]:
    if out_of_sample is None:
        return ()
    index = {label: i for i, label in enumerate(classes)}
    return suspected_label_errors(
        pred_probs=out_of_sample, labels=[index[label] for label in labels]
    )


def score_pool(**fields: Any) -> ScoredPool:
    """`score(ScoringRequest(**fields))`: the keyword form, kept for in-process callers
    (views/report.py, tests, benchmarks) until they pass a request."""
    return score(ScoringRequest(**fields))


def score(request: ScoringRequest) -> ScoredPool:
    """Predict every task's label and score it with `strategy` (see aldaemon.sync.scoring).

    `clusters` > 0 groups the tasks with seeded MiniBatchKMeans over the features the
    model itself uses (every pipeline step but the last), which only exist when the model
    is an sklearn Pipeline of two or more steps; for any other model `clusters` is None.
    """
    return score_with(load_artifact(request.artifact_path).model, request)


def score_with(model: Any, request: ScoringRequest) -> ScoredPool:
    """`score` with the model already loaded (the pool job scores chunk after chunk)."""
    if request.strategy not in scoring.STRATEGIES:
        raise ValueError(
            f"unknown strategy {request.strategy!r}; expected one of {scoring.STRATEGIES}"
        )
    if len(request.task_ids) != len(request.texts):
        raise ValueError(f"got {len(request.task_ids)} task ids but {len(request.texts)} texts")
    if request.clusters < 0:
        raise ValueError(f"clusters must be >= 0, got {request.clusters}")
    if isinstance(model, ControlModels):  # several <Choices>: see model/control_jobs.py
        return score_controls(model, request)
    if isinstance(model, SpanModel):  # named entities: see model/span_jobs.py
        return score_spans(model, request)
    use_features = request.clusters > 0 and has_feature_steps(model)
    if not request.task_ids:
        return ScoredPool((), (), (), () if use_features else None)

    proba, features = _predict(
        model, request.texts, keep_features=use_features, first_step_output=request.features
    )
    classes = np.asarray(model.classes_)
    cluster_ids = None
    if features is not None:
        cluster_ids = cluster(features, clusters=request.clusters, seed=request.seed)
    if isinstance(model, OneVsRestTextModel):
        # independent P(label) per column: the label closest to 0.5 decides (shape_scoring)
        label_sets = [
            [str(c) for c, on in zip(classes, row, strict=True) if on]
            for row in proba >= MULTILABEL_THRESHOLD
        ]
        return request.pool(
            multilabel_scores(proba, strategy=request.strategy),
            labels=[chosen[0] if chosen else "" for chosen in label_sets],
            label_sets=label_sets,
            clusters=cluster_ids,
        )
    return request.pool(
        scoring.informativeness(proba, strategy=request.strategy),
        labels=[str(classes[index]) for index in proba.argmax(axis=1)],
        clusters=cluster_ids,
    )


JOBS: dict[type[Any], Callable[[Any], TrainingResult | ScoredPool]] = {
    SingleLabelTraining: train_and_save,
    requests.MultiLabelTraining: train_multilabel_and_save,
    requests.ControlsTraining: train_controls_and_save,
    requests.SpanTraining: train_spans_and_save,
    ScoringRequest: score,
}


def run(
    request: TrainingRequest | ScoringRequest | requests.PoolScoringRequest,
) -> TrainingResult | ScoredPool | PoolScores:
    """The worker's one entry point: the job for this kind of request."""
    if isinstance(request, requests.PoolScoringRequest):
        # pool_scoring builds on this module (score_with), so it is imported here
        from aldaemon.model.pool_scoring import score_store_pool

        return score_store_pool(request)
    return JOBS[type(request)](request)


def evaluate(
    *, artifact_path: str, texts: Sequence[str], labels: Sequence[str]
) -> dict[str, float]:
    """Accuracy and macro-F1 of a saved model on a held-out labeled set (demo, bench)."""
    if len(texts) != len(labels):
        raise ModelError(f"got {len(texts)} texts but {len(labels)} labels")
    if not texts:
        raise ModelError("evaluation needs at least one labeled text")
    model = load_artifact(artifact_path).model
    proba, _ = _predict(model, texts, keep_features=False)
    classes = np.asarray(model.classes_)
    predicted = [str(classes[index]) for index in proba.argmax(axis=1)]
    return _quality(list(labels), predicted)


def _cross_validate(
    request: SingleLabelTraining, *, class_counts: dict[str, int]
) -> tuple[dict[str, float], npt.NDArray[np.float64] | None]:
    """Pooled out-of-fold metrics, and the out-of-fold probabilities (columns: classes
    sorted) that model.label_issues reads; ({}, None) below 2 folds."""
    texts, labels, seed = request.texts, request.labels, request.seed
    folds = min(MAX_CV_FOLDS, min(class_counts.values()))
    if folds < 2:
        return {}, None
    column = {label: i for i, label in enumerate(sorted(class_counts))}
    out_of_sample = np.zeros((len(labels), len(column)), dtype=np.float64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    predicted: list[str] = [""] * len(labels)
    for train_index, test_index in splitter.split(np.zeros(len(labels)), labels):
        model = fitted_model(
            factory_ref=request.factory_ref,
            texts=[texts[i] for i in train_index],
            labels=[labels[i] for i in train_index],
            seed=seed,
        )
        test_texts = [texts[i] for i in test_index]
        proba, _ = _predict(model, test_texts, keep_features=False)
        classes = np.asarray(model.classes_)
        columns = [column[str(c)] for c in classes]
        out_of_sample[np.ix_(test_index, columns)] = proba
        for i, best in zip(test_index, proba.argmax(axis=1), strict=True):
            predicted[i] = str(classes[best])
    quality = _quality(list(labels), predicted)
    metrics = {"cv_accuracy": quality["accuracy"], "cv_macro_f1": quality["macro_f1"]}
    return metrics, out_of_sample


def fitted_model(
    *, factory_ref: str, texts: Sequence[str], labels: Sequence[str], seed: int
) -> TextClassifier:
    model = build_model(factory_ref)
    _seed_estimator(model, seed)
    try:
        model.fit(list(texts), list(labels))
    except Exception as exc:
        raise ModelError(
            f"model = {factory_ref!r}: fit on {len(labels)} labels raised "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return model


def _seed_estimator(model: TextClassifier, seed: int) -> None:
    """Set every `random_state` an sklearn-style estimator exposes (nested ones too)."""
    get_params = getattr(model, "get_params", None)
    set_params = getattr(model, "set_params", None)
    if not callable(get_params) or not callable(set_params):
        return
    names = [
        name
        for name in get_params(deep=True)
        if name == "random_state" or name.endswith("__random_state")
    ]
    if names:
        set_params(**dict.fromkeys(names, seed))


def has_feature_steps(model: object) -> bool:
    return isinstance(model, Pipeline) and len(model.steps) >= 2


def _predict(
    model: TextClassifier,
    texts: Sequence[str],
    *,
    keep_features: bool,
    first_step_output: Any = None,
) -> tuple[npt.NDArray[np.float64], Any]:
    """predict_proba in chunks; with keep_features, also the stacked pipeline features.

    With features kept, each chunk is transformed once and the final step predicts from
    those very features, so clustering costs no second pass over the texts.
    `first_step_output` (a Pipeline's first step applied to `texts`, cached by the pool
    job: model/features.py) replaces the texts: the rest of the pipeline starts from it.
    """
    inputs: Any = texts
    if first_step_output is not None:
        assert isinstance(model, Pipeline)
        model, inputs = model[1:], first_step_output
    proba_chunks: list[npt.NDArray[np.float64]] = []
    feature_chunks: list[Any] = []
    try:
        for start in range(0, len(texts), PREDICT_CHUNK):
            chunk = inputs[start : start + PREDICT_CHUNK]
            if first_step_output is None:
                chunk = list(chunk)
            if keep_features:
                assert isinstance(model, Pipeline)
                features = model[:-1].transform(chunk)
                feature_chunks.append(features)
                proba = model[-1].predict_proba(features)
            else:
                proba = model.predict_proba(chunk)
            proba_chunks.append(np.asarray(proba, dtype=np.float64))
    except Exception as exc:
        raise ModelError(f"predict_proba raised {type(exc).__name__}: {exc}") from exc
    if not proba_chunks:
        return np.empty((0, len(model.classes_)), dtype=np.float64), None
    stacked = np.vstack(proba_chunks)
    if not keep_features:
        return stacked, None
    if any(scipy.sparse.issparse(chunk) for chunk in feature_chunks):
        return stacked, scipy.sparse.vstack(feature_chunks, format="csr")
    return stacked, np.vstack(feature_chunks)


def cluster(features: Any, *, clusters: int, seed: int) -> tuple[int, ...]:
    n_samples = features.shape[0]
    kmeans = MiniBatchKMeans(
        n_clusters=min(clusters, n_samples), random_state=seed, n_init=3, batch_size=1024
    )
    with warnings.catch_warnings():
        # fewer distinct points than clusters is normal on a tiny pool; k-means copes
        warnings.simplefilter("ignore", ConvergenceWarning)
        assignments = kmeans.fit_predict(features)
    return tuple(int(cluster) for cluster in assignments)


def _quality(expected: list[str], predicted: list[str]) -> dict[str, float]:
    return {
        "accuracy": float(accuracy_score(expected, predicted)),
        "macro_f1": float(f1_score(expected, predicted, average="macro", zero_division=0)),
    }
