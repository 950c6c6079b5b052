"""A multi-label text model: one binary logistic regression per label (one-vs-rest).

A `<Choices choice="multiple">` annotation selects any subset of labels, so each label
is its own yes/no question and the answers are independent probabilities (a row need not
sum to 1). Training a multiclass model on the first selected label, as a single-choice
model would, silently teaches it that the other selected labels were wrong.

The features are the default model's: every step of
aldaemon.model.default:make_text_classifier but the last (hashed term counts, then TF-IDF),
cloned, fitted once and shared by every label; each label's classifier is a clone of that
pipeline's logistic regression. One vectorizer for
all labels keeps fitting at one pass over the texts, and the same settings mean the same
reasons (see default.py) hold here.

An annotation that selects nothing means "none of these": it is a negative for every
label. A label never selected (or always selected) in training cannot be fitted as a
binary classifier; it gets a constant probability, its share of positives (0.0 or 1.0),
until both answers have been seen.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Self

import numpy as np
import numpy.typing as npt
from sklearn.base import clone

from aldaemon.model.default import make_text_classifier
from aldaemon.sync.shape_results import MULTILABEL_THRESHOLD


class OneVsRestTextModel:
    """fit(texts, label_sets) and predict_proba(texts) -> (n, len(classes_)) probabilities.

    `labels` fixes the column order (pass the config's labels, so a label nobody has
    selected yet still has a column); without it the columns are the sorted labels seen
    in training. A selected label that is not in `labels` is ignored: the config is what
    can be predicted, and Label Studio drops predicted labels it does not know.
    """

    def __init__(self, labels: Sequence[str] | None = None) -> None:
        self.labels = tuple(labels) if labels is not None else None
        self.classes_: tuple[str, ...] = ()
        self._vectorizer: Any = None
        # per label: a fitted classifier, or the constant probability of a one-sided label
        self._per_label: list[Any | float] = []

    def fit(self, texts: Sequence[str], label_sets: Sequence[Collection[str]]) -> Self:
        """Fit one binary model per label; an empty label set trains every label's negative."""
        if len(texts) != len(label_sets):
            raise ValueError(f"need one label set per text, got {len(texts)} and {len(label_sets)}")
        if not texts:
            raise ValueError("cannot fit on zero texts")
        classes = self.labels or tuple(sorted({label for s in label_sets for label in s}))
        if not classes:
            raise ValueError("no labels: pass the config's labels or select at least one")
        pipeline = make_text_classifier()
        self._vectorizer = clone(pipeline[:-1])
        features = self._vectorizer.fit_transform(list(texts))
        template = pipeline[-1]
        per_label: list[Any | float] = []
        for label in classes:
            target = np.fromiter((label in s for s in label_sets), dtype=bool, count=len(texts))
            positives = int(target.sum())
            if positives in (0, len(target)):
                per_label.append(float(positives > 0))
                continue
            per_label.append(clone(template).fit(features, target))
        self.classes_ = classes
        self._per_label = per_label
        return self

    def predict_proba(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        """P(label selected) per text and label, each column independent of the others."""
        if self._vectorizer is None:
            raise ValueError("the model is not fitted")
        features = self._vectorizer.transform(list(texts))
        proba = np.empty((len(texts), len(self.classes_)), dtype=np.float64)
        for column, model in enumerate(self._per_label):
            if isinstance(model, float):
                proba[:, column] = model
            else:
                positive = list(model.classes_).index(True)
                proba[:, column] = model.predict_proba(features)[:, positive]
        return proba

    def predict(self, texts: Sequence[str]) -> list[tuple[str, ...]]:
        """The labels with p >= 0.5 per text, in column order (possibly none)."""
        proba = self.predict_proba(texts)
        return [
            tuple(label for label, on in zip(self.classes_, row, strict=True) if on)
            for row in proba >= MULTILABEL_THRESHOLD
        ]


def make_multilabel_classifier(labels: Sequence[str] | None = None) -> OneVsRestTextModel:
    """A fresh, unfitted model: aldaemon.model.multilabel:make_multilabel_classifier."""
    return OneVsRestTextModel(labels)
