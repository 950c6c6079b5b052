"""Label-efficiency bench helpers: candidate models, and their features computed once.

A learning curve over 10 seeds refits the model ~40-90 times per run and re-scores the
pool after each retrain; re-tokenizing 5,000 reviews every time made one run take a
minute or more. `CachedFeatures` tokenizes every text ONCE and then fits and predicts
from rows of that count matrix, giving the very model the factory's pipeline would:

- a HashingVectorizer is stateless, so its output for a text never changes: the rest of
  the pipeline (TfidfTransformer, classifier) is fitted on the cached rows;
- a TfidfVectorizer (min_df = 1, max_df = 1.0) keeps every term seen in the labeled
  texts, in alphabetical order, so its matrix is the full-vocabulary count matrix
  (alphabetical too) restricted to the columns the labeled rows use, followed by
  TfidfTransformer with the same idf settings. When the labeled texts have more terms
  than `max_features` the cut depends on sklearn's tie order, so that case is refused.

`matches_pipeline` checks the equivalence on real data at the start of every run.

The candidates below are the hashed models the daemon may switch to (issue 14): they are
referenced as "bench.label_efficiency_features:make_hashed_2_20" and "..._2_18".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.feature_extraction.text import (
    CountVectorizer,
    HashingVectorizer,
    TfidfTransformer,
    TfidfVectorizer,
)
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from aldaemon.model.protocol import build_model

# The daemon's default model until issue 14 (a TF-IDF vocabulary), which these runs were
# measured against; the default now hashes (aldaemon/model/default.py), which is what
# make_hashed_2_20_seen_only builds.
TFIDF_REFERENCE = "bench.label_efficiency_features:make_tfidf_reference"
HASHED_2_20 = "bench.label_efficiency_features:make_hashed_2_20"
HASHED_2_18 = "bench.label_efficiency_features:make_hashed_2_18"
MODELS = {TFIDF_REFERENCE: "tfidf", HASHED_2_20: "hashed_2_20", HASHED_2_18: "hashed_2_18"}
FEATURE_WHAT_IFS = {
    "bench.label_efficiency_features:make_hashed_unigrams": "hashed_unigrams",
    "bench.label_efficiency_features:make_hashed_char_wb": "hashed_char_wb_2_5",
    "bench.label_efficiency_features:make_hashed_2_20_seen_only": "hashed_2_20_seen_only",
}
NAMES = {**MODELS, **FEATURE_WHAT_IFS}  # short names in the results


def make_hashed(
    n_features: int, *, analyzer: str = "word", ngram_range: tuple[int, int] = (1, 2)
) -> Pipeline:
    """Today's default with its vocabulary replaced by `n_features` hashed buckets."""
    return Pipeline(
        [
            (
                "hash",
                HashingVectorizer(
                    n_features=n_features,
                    analyzer=analyzer,
                    ngram_range=ngram_range,
                    alternate_sign=False,
                    norm=None,
                    strip_accents="unicode",
                ),
            ),
            ("tfidf", TfidfTransformer(sublinear_tf=True)),
            (
                "classifier",
                LogisticRegression(class_weight="balanced", max_iter=1000, C=2.0),
            ),
        ]
    )


def make_tfidf_reference() -> Pipeline:
    """aldaemon's default model before issue 14: TF-IDF over a vocabulary of the labeled
    texts' words and word pairs, then the same logistic regression."""
    return Pipeline(
        [
            (
                "tfidf",
                TfidfVectorizer(
                    sublinear_tf=True,
                    ngram_range=(1, 2),
                    min_df=1,
                    max_features=200_000,
                    strip_accents="unicode",
                ),
            ),
            (
                "classifier",
                LogisticRegression(class_weight="balanced", max_iter=1000, C=2.0),
            ),
        ]
    )


def make_hashed_2_20() -> Pipeline:
    """The lead's candidate default: 2**20 hashed word and word-pair buckets."""
    return make_hashed(2**20)


def make_hashed_2_18() -> Pipeline:
    """The smaller candidate: 2**18 buckets (a quarter of the memory per coefficient row)."""
    return make_hashed(2**18)


class SeenColumnsOnly(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Zero every column no training row used: hashed buckets behave like a vocabulary.

    A TfidfVectorizer drops a text's unseen words before the L2 norm; a hashed text keeps
    them, and with TfidfTransformer's smooth idf an unseen bucket gets the HIGHEST idf,
    so a text full of new words has its known words shrunk towards zero. This step makes
    the hashed pipeline norm over seen buckets only, as the vocabulary model does.
    """

    def fit(self, counts: Any, y: Any = None) -> SeenColumnsOnly:
        self.seen_ = (scipy.sparse.csr_matrix(counts).getnnz(axis=0) > 0).astype(np.float64)
        return self

    def transform(self, counts: Any) -> scipy.sparse.csr_matrix:
        return scipy.sparse.csr_matrix(counts) @ scipy.sparse.diags(self.seen_, format="csr")


def make_hashed_2_20_seen_only() -> Pipeline:
    """Features what-if: the 2**20 hashed model normed over training's buckets only."""
    model = make_hashed(2**20)
    model.steps.insert(1, ("seen", SeenColumnsOnly()))
    return model


def make_hashed_unigrams() -> Pipeline:
    """Features what-if: 2**20 buckets of single words only (no word pairs)."""
    return make_hashed(2**20, ngram_range=(1, 1))


def make_hashed_char_wb() -> Pipeline:
    """Features what-if: 2**20 buckets of 2- to 5-character n-grams inside word bounds."""
    return make_hashed(2**20, analyzer="char_wb", ngram_range=(2, 5))


# ---- features computed once ---------------------------------------------------------------

_COUNT_PARAMS = (
    *("input", "encoding", "decode_error", "strip_accents", "lowercase", "preprocessor"),
    *("tokenizer", "stop_words", "token_pattern", "ngram_range", "analyzer", "binary", "dtype"),
)
_IDF_PARAMS = ("norm", "use_idf", "smooth_idf", "sublinear_tf")


@dataclass(frozen=True)
class FittedOnRows:
    """A model fitted on cached count rows.

    `vocabulary`: the count columns a fitted vocabulary keeps (None: hashed, all kept);
    `weighting`: the steps between counts and classifier (TF-IDF), fitted; `used`: the
    weighted columns any labeled row has. The classifier only sees `used`: a column that
    is zero in every labeled row keeps a zero coefficient (its gradient is zero from
    lbfgs' zero start), so dropping it fits the same model, much faster for 2**20
    hashed buckets.
    """

    vocabulary: npt.NDArray[np.intp] | None
    weighting: Pipeline | None
    used: npt.NDArray[np.intp]
    classifier: Any
    classes: tuple[str, ...]

    def features(self, counts: scipy.sparse.csr_matrix) -> Any:
        """What the classifier sees (TF-IDF rows): the space clusters are made in."""
        if self.vocabulary is not None:
            counts = counts[:, self.vocabulary]
        weighted = counts if self.weighting is None else self.weighting.transform(counts)
        return weighted.tocsr()[:, self.used]

    def predict_proba(self, counts: scipy.sparse.csr_matrix) -> npt.NDArray[np.float64]:
        proba = self.classifier.predict_proba(self.features(counts))
        return np.asarray(proba, dtype=np.float64)


class CachedFeatures:
    """The term counts of `texts` under the model `factory_ref` builds, computed once."""

    def __init__(self, factory_ref: str, texts: Sequence[str]) -> None:
        model = build_model(factory_ref)
        if not isinstance(model, Pipeline) or len(model.steps) < 2:
            raise ValueError(f"{factory_ref}: not a Pipeline starting with a text vectorizer")
        first = model.steps[0][1]
        middle = list(model.steps[1:-1])
        self.factory_ref = factory_ref
        self.classifier = model.steps[-1][1]
        self.max_features: int | None = None
        if isinstance(first, TfidfVectorizer):
            if first.min_df != 1 or first.max_df != 1.0 or first.vocabulary is not None:
                raise ValueError(f"{factory_ref}: only min_df = 1, max_df = 1.0 can be cached")
            counter = CountVectorizer(**{k: getattr(first, k) for k in _COUNT_PARAMS})
            idf = TfidfTransformer(**{k: getattr(first, k) for k in _IDF_PARAMS})
            self.counts: scipy.sparse.csr_matrix = counter.fit_transform(list(texts)).tocsr()
            self.vocabulary_fitted = True
            self.max_features = first.max_features
            middle.insert(0, ("tfidf", idf))
        elif isinstance(first, HashingVectorizer):
            self.counts = first.transform(list(texts)).tocsr()
            self.vocabulary_fitted = False
        else:
            raise ValueError(f"{factory_ref}: cannot cache {type(first).__name__}")
        self.weighting = Pipeline(middle) if middle else None

    def rows(self, indices: Sequence[int]) -> scipy.sparse.csr_matrix:
        return self.counts[np.asarray(indices, dtype=np.intp)]

    def fit(self, indices: Sequence[int], labels: Sequence[str]) -> FittedOnRows:
        """The factory's model fitted on the texts at `indices` (rows of the cache)."""
        counts = self.rows(indices)
        vocabulary = None
        if self.vocabulary_fitted:
            vocabulary = np.flatnonzero(counts.getnnz(axis=0)).astype(np.intp)
            if self.max_features is not None and vocabulary.size > self.max_features:
                raise ValueError(
                    f"{len(indices)} texts use {vocabulary.size} terms > max_features "
                    f"{self.max_features}: the cached fit would not match the pipeline"
                )
            counts = counts[:, vocabulary]
        weighting = None if self.weighting is None else clone(self.weighting)
        weighted = counts if weighting is None else weighting.fit_transform(counts)
        weighted = scipy.sparse.csr_matrix(weighted)
        used = np.flatnonzero(weighted.getnnz(axis=0)).astype(np.intp)
        classifier = clone(self.classifier)
        classifier.fit(weighted[:, used], list(labels))
        return FittedOnRows(
            vocabulary=vocabulary,
            weighting=weighting,
            used=used,
            classifier=classifier,
            classes=tuple(str(c) for c in classifier.classes_),
        )


def matches_pipeline(
    cache: CachedFeatures,
    texts: Sequence[str],
    *,
    train: Sequence[int],
    labels: Sequence[str],
    check: Sequence[int],
) -> float:
    """Largest |probability difference| between the cached fit and the real pipeline.

    The pipeline is built by the factory and fitted on the raw texts, as the daemon does.
    """
    pipeline = build_model(cache.factory_ref)
    pipeline.fit([texts[i] for i in train], list(labels))
    expected = np.asarray(pipeline.predict_proba([texts[i] for i in check]))
    cached = cache.fit(train, labels).predict_proba(cache.rows(check))
    return float(np.abs(expected - cached).max())
