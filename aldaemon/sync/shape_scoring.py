"""Informativeness for every served shape, on one scale so controls can be compared.

Label Studio serves the task with the LOWEST prediction score first, so every score here
is in [0, 1], LOWER = MORE informative, and 0 means "the model has no idea":

    single choice  (n, K) probabilities: aldaemon.scoring's strategies, with
                   least_confidence rescaled to (max p - 1/K) / (1 - 1/K) so a uniform row
                   scores 0 whatever K (same order as before within one control)
    multi-label    (n, L) independent P(label): each label is a binary row [p, 1 - p]
                   scored by the same strategy; the task scores the MINIMUM over labels,
                   i.e. the label closest to p = 0.5 decides. With margin:
                       score = min over labels of |p - (1 - p)| = min of 2 * |p - 0.5|
                   least_confidence (rescaled) gives the same number; entropy gives
                   min of 1 - H2(p) / ln 2. All three are increasing in |p - 0.5|, so they
                   order tasks identically: the name changes the value, not the queue.
    spans (NER)    per text a (tokens, tags) matrix of marginals: each token row scored
                   by the strategy; the text scores the MINIMUM over its tokens, i.e. its
                   least confident token decides. With least_confidence:
                       score = min over tokens of (max_tag p - 1/K) / (1 - 1/K)
                   so a token whose marginal is uniform over the K tags scores 0. A text
                   predicted with no entity is scored by its tokens like any other (an
                   unsure "O" is as informative as an unsure entity); a text without tokens
                   has nothing to teach and scores 1.
    several        a task with several controls scores the MINIMUM of its controls'
    controls       scores: the control the model is least sure of decides.

Every strategy name in aldaemon.scoring.STRATEGIES applies to every shape (there is no
shape where one of them is meaningless); `strategy_refusal` words the refusal of any
other name per shape, for config checks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from aldaemon.sync import scoring

FloatArray = npt.NDArray[np.float64]

SHAPES = ("single choice", "multi-label", "spans")


def strategy_refusal(shape: str, strategy: str) -> str | None:
    """None when `strategy` scores `shape`, else the sentence that refuses it."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    if strategy in scoring.STRATEGIES:
        return None
    return (
        f"strategy {strategy!r} cannot score a {shape} control; "
        f"use one of {', '.join(scoring.STRATEGIES)}"
    )


def single_choice_scores(proba: npt.ArrayLike, *, strategy: str) -> FloatArray:
    """(n, K) class probabilities -> n scores, least_confidence rescaled (see the module)."""
    _refuse_unknown("single choice", strategy)
    matrix = np.asarray(proba, dtype=np.float64)
    scores = scoring.informativeness(matrix, strategy=strategy)
    if strategy == "least_confidence" and matrix.size:
        floor = 1.0 / matrix.shape[1]
        scores = np.clip((scores - floor) / (1.0 - floor), 0.0, 1.0)
    return scores


def multilabel_scores(proba: npt.ArrayLike, *, strategy: str) -> FloatArray:
    """(n, L) independent label probabilities -> n scores: the minimum over labels."""
    _refuse_unknown("multi-label", strategy)
    matrix = np.asarray(proba, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        raise ValueError(f"expected an (n, L) matrix with L >= 1, got shape {matrix.shape}")
    if matrix.shape[0] == 0:
        return np.empty(0, dtype=np.float64)
    binary = np.stack([matrix, 1.0 - matrix], axis=-1).reshape(-1, 2)
    per_label = single_choice_scores(binary, strategy=strategy).reshape(matrix.shape)
    scores: FloatArray = per_label.min(axis=1)
    return scores


def span_scores(marginals: Sequence[npt.ArrayLike], *, strategy: str) -> FloatArray:
    """One (tokens, tags) marginal matrix per text -> one score per text: min over tokens."""
    _refuse_unknown("spans", strategy)
    scores = np.ones(len(marginals), dtype=np.float64)
    for index, text_marginals in enumerate(marginals):
        matrix = np.asarray(text_marginals, dtype=np.float64)
        if matrix.ndim != 2:
            raise ValueError(f"text {index}: expected (tokens, tags), got shape {matrix.shape}")
        if matrix.shape[0] == 0 or matrix.shape[1] < 2:
            continue  # no token, or a model that knows only "O": nothing to be unsure of
        scores[index] = single_choice_scores(matrix, strategy=strategy).min()
    return scores


def combine_controls(per_control: Sequence[npt.ArrayLike]) -> FloatArray:
    """Each control's n scores -> the task's score: the minimum over controls."""
    if not per_control:
        raise ValueError("no control scores to combine")
    stacked = np.stack([np.asarray(scores, dtype=np.float64) for scores in per_control])
    if stacked.ndim != 2:
        raise ValueError(f"expected one score vector per control, got shape {stacked.shape}")
    combined: FloatArray = stacked.min(axis=0)
    return combined


def _refuse_unknown(shape: str, strategy: str) -> None:
    refusal = strategy_refusal(shape, strategy)
    if refusal is not None:
        raise ValueError(refusal)
