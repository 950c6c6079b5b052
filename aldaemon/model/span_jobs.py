"""Train and score a named-entity project: the worker jobs for `<Labels>` over `<Text>`.

Kept apart from training.py (which re-exports them, so the worker finds them by name),
like multilabel_jobs.py. The model is always the built-in CRF (model/spans.py): the
`model` config key names a single-label text classifier factory, which cannot tag tokens.

Answers arrive as span codes (sync/span_answers.py); an example without a span teaches
"no entity here". Cross-validation: shuffled K-fold over texts, K = min(5, n // 2),
skipped below 2; the metric is entity-level micro-F1 (a predicted span counts when its
start, end and label all match an annotated one), `cv_entity_f1`.

Scoring (sync/shape_scoring.span_scores): a text scores the minimum over its tokens of
the strategy applied to the token's tag marginals, so its least confident token decides;
a text predicted without any entity is scored by its tokens like any other.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import KFold

from aldaemon.errors import ModelError
from aldaemon.model.artifacts import save_trained
from aldaemon.model.requests import ScoringRequest, SpanTraining
from aldaemon.model.results import ScoredPool, TrainingResult
from aldaemon.model.spans import Span, SpanModel
from aldaemon.sync.shape_scoring import span_scores
from aldaemon.sync.span_answers import SpanAnswer, decode_spans, encode_span, entity_counts

SPAN_FACTORY = "aldaemon.model.spans:make_span_model"
MAX_CV_FOLDS = 5


def train_spans_and_save(request: SpanTraining) -> TrainingResult:
    """Fit the CRF on every annotated text and save it atomically.

    `class_counts` are the annotated spans per config label.
    """
    texts, span_codes, labels = request.texts, request.answers, request.labels
    request.require_one_answer_per_text(span_codes, "span lists")
    if not texts or not labels:
        raise ModelError("named-entity training needs at least one example and one label")
    started = time.perf_counter()
    span_sets = [_spans(text, codes) for text, codes in zip(texts, span_codes, strict=True)]
    metrics = _cross_validate(texts, span_sets, seed=request.seed)
    return save_trained(
        request,
        model=_fitted(texts, span_sets),
        classes=tuple(labels),
        factory_ref=SPAN_FACTORY,
        class_counts=entity_counts(span_codes, labels),
        metrics=metrics,
        started=started,
    )


def score_spans(model: SpanModel, request: ScoringRequest) -> ScoredPool:
    """Predict every text's spans and score it by its least confident token."""
    predictions = model.predict(request.texts)
    return request.pool(
        span_scores([p.marginals for p in predictions], strategy=request.strategy),
        labels=[p.spans[0].label if p.spans else "" for p in predictions],
        label_sets=[
            [encode_span(SpanAnswer(s.start, s.end, s.label)) for s in p.spans] for p in predictions
        ],
        # the CRF has no document features to cluster on
    )


def entity_f1(gold: Sequence[Sequence[Span]], predicted: Sequence[Sequence[Span]]) -> float:
    """Entity-level micro-F1: a span is right when start, end and label all match."""
    true_positives = n_predicted = n_gold = 0
    for gold_spans, predicted_spans in zip(gold, predicted, strict=True):
        gold_keys = {(s.start, s.end, s.label) for s in gold_spans}
        predicted_keys = {(s.start, s.end, s.label) for s in predicted_spans}
        true_positives += len(gold_keys & predicted_keys)
        n_gold += len(gold_keys)
        n_predicted += len(predicted_keys)
    if n_gold + n_predicted == 0:
        return 1.0
    return 2.0 * true_positives / (n_gold + n_predicted)


def _spans(text: str, codes: Sequence[str]) -> list[Span]:
    return [Span(s.start, s.end, s.label, text[s.start : s.end]) for s in decode_spans(codes)]


def _fitted(texts: Sequence[str], span_sets: Sequence[Sequence[Span]]) -> SpanModel:
    try:
        return SpanModel().fit(list(texts), span_sets)
    except Exception as exc:
        raise ModelError(
            f"named-entity fit on {len(texts)} texts raised {type(exc).__name__}: {exc}"
        ) from exc


def _cross_validate(
    texts: Sequence[str], span_sets: Sequence[Sequence[Span]], *, seed: int
) -> dict[str, float]:
    folds = min(MAX_CV_FOLDS, len(texts) // 2)
    if folds < 2:
        return {}
    gold: list[Sequence[Span]] = []
    predicted: list[Sequence[Span]] = []
    splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    for train_index, test_index in splitter.split(np.zeros(len(texts))):
        model = _fitted([texts[i] for i in train_index], [span_sets[i] for i in train_index])
        for i, prediction in zip(
            test_index, model.predict([texts[i] for i in test_index]), strict=True
        ):
            gold.append(span_sets[i])
            predicted.append(prediction.spans)
    return {"cv_entity_f1": entity_f1(gold, predicted)}
