"""Train and score a multi-label project: the worker jobs for `<Choices choice="multiple">`.

Kept beside training.py (which re-exports them, so the worker finds them by name) and
apart from it so the single-choice jobs stay as they were. The model is always the
built-in one-vs-rest model (model/multilabel.py): the `model` config key names a
single-label factory, whose `fit(texts, labels)` cannot take label sets.

Cross-validation: plain shuffled K-fold (a label set has no class to stratify on) with
K = min(5, the smallest count of positives or negatives over labels), skipped below 2;
metrics are the micro- and macro-F1 of the pooled out-of-fold label sets.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from sklearn.metrics import f1_score
from sklearn.model_selection import KFold

from aldaemon.errors import ModelError
from aldaemon.model.artifacts import save_trained
from aldaemon.model.label_issues import suspected_multilabel_errors
from aldaemon.model.multilabel import OneVsRestTextModel
from aldaemon.model.requests import MultiLabelTraining
from aldaemon.model.results import TrainingResult
from aldaemon.sync.shape_results import MULTILABEL_THRESHOLD

MULTILABEL_FACTORY = "aldaemon.model.multilabel:make_multilabel_classifier"
MAX_CV_FOLDS = 5


def train_multilabel_and_save(request: MultiLabelTraining) -> TrainingResult:
    """Fit one binary model per config label on every example, and save it atomically.

    An empty label set is an example too: the negative of every label. `class_counts`
    are the positives per label.
    """
    texts, label_sets, labels = request.texts, request.answers, request.labels
    request.require_one_answer_per_text(label_sets, "label sets")
    if not texts or not labels:
        raise ModelError("multi-label training needs at least one example and one label")
    started = time.perf_counter()
    targets = _indicator(label_sets, labels)
    metrics, out_of_sample = _cross_validate(
        texts=texts, targets=targets, labels=labels, seed=request.seed
    )
    return save_trained(
        request,
        model=_fitted(texts, label_sets, labels),
        classes=tuple(labels),
        factory_ref=MULTILABEL_FACTORY,
        class_counts={label: int(targets[:, i].sum()) for i, label in enumerate(labels)},
        metrics=metrics,
        started=started,
        suspects=()
        if out_of_sample is None
        else suspected_multilabel_errors(pred_probs=out_of_sample, targets=targets),
    )


def _fitted(
    texts: Sequence[str], label_sets: Sequence[Sequence[str]], labels: Sequence[str]
) -> OneVsRestTextModel:
    try:
        return OneVsRestTextModel(labels).fit(list(texts), [set(s) for s in label_sets])
    except Exception as exc:
        raise ModelError(
            f"multi-label fit on {len(texts)} examples raised {type(exc).__name__}: {exc}"
        ) from exc


def _indicator(label_sets: Sequence[Sequence[str]], labels: Sequence[str]) -> npt.NDArray[np.bool_]:
    return np.array([[label in s for label in labels] for s in label_sets], dtype=bool).reshape(
        len(label_sets), len(labels)
    )


def _cross_validate(
    *, texts: Sequence[str], targets: npt.NDArray[np.bool_], labels: Sequence[str], seed: int
) -> tuple[dict[str, float], npt.NDArray[np.float64] | None]:
    positives = targets.sum(axis=0)
    smallest = int(min(np.minimum(positives, len(texts) - positives)))
    folds = min(MAX_CV_FOLDS, smallest)
    if folds < 2:
        return {}, None
    predicted = np.zeros_like(targets)
    out_of_sample = np.zeros(targets.shape, dtype=np.float64)
    splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    for train_index, test_index in splitter.split(np.zeros(len(texts))):
        train_sets = [
            [label for label, on in zip(labels, targets[i], strict=True) if on] for i in train_index
        ]
        model = _fitted([texts[i] for i in train_index], train_sets, labels)
        proba = model.predict_proba([texts[i] for i in test_index])
        predicted[test_index] = proba >= MULTILABEL_THRESHOLD
        out_of_sample[test_index] = proba
    return {
        "cv_micro_f1": float(f1_score(targets, predicted, average="micro", zero_division=0)),
        "cv_macro_f1": float(f1_score(targets, predicted, average="macro", zero_division=0)),
    }, out_of_sample
