"""Suspected label errors: confident learning over a training's out-of-sample probabilities.

The trainer's cross-validation predicts every labeled task once with a model that did not
see it; confident learning (Northcutt et al., 2021) compares those probabilities with the
given labels, per class threshold, and flags the labels the model is confidently against.
cleanlab's `find_label_issues` is the maintained reference implementation of it (and of
its multi-label form), so it is used here rather than re-derived. It runs in the model
worker only: importing cleanlab costs about a second (it brings pandas), which the
daemon's main process never pays. `n_jobs=1`: cleanlab's own multiprocessing fails
inside the worker process (a NameError on a global its pool workers expect), and the
sets here are small.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

# cleanlab needs a few examples per class to estimate its thresholds.
MIN_EXAMPLES_PER_CLASS = 2


def suspected_label_errors(
    *, pred_probs: npt.NDArray[np.float64], labels: Sequence[int]
) -> tuple[int, ...]:
    """Indices of suspected label errors, most suspect first (single label per example).

    `pred_probs[i, k]` is the out-of-sample P(class k) of example i; `labels[i]` its given
    class index. Empty when there is too little to judge.
    """
    given = np.asarray(labels, dtype=int)
    if len(given) == 0 or pred_probs.shape[1] < 2:
        return ()
    if np.bincount(given, minlength=pred_probs.shape[1]).min() < MIN_EXAMPLES_PER_CLASS:
        return ()
    from cleanlab.filter import find_label_issues

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ranked = find_label_issues(
            labels=given,
            pred_probs=pred_probs,
            return_indices_ranked_by="self_confidence",
            n_jobs=1,
        )
    return tuple(int(i) for i in ranked)


def suspected_multilabel_errors(
    *, pred_probs: npt.NDArray[np.float64], targets: npt.NDArray[np.bool_]
) -> tuple[int, ...]:
    """Indices of suspected label errors, most suspect first, for multi-label examples.

    `pred_probs[i, k]` is the out-of-sample P(label k is selected); `targets` the given
    selections. Empty when any label lacks positives or negatives to judge by.
    """
    if len(targets) == 0 or targets.shape[1] < 2:
        return ()
    positives = targets.sum(axis=0)
    if min(int(positives.min()), int((len(targets) - positives).min())) < MIN_EXAMPLES_PER_CLASS:
        return ()
    from cleanlab.filter import find_label_issues

    given = [[int(k) for k in np.flatnonzero(row)] for row in targets]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ranked = find_label_issues(
            labels=given,
            pred_probs=pred_probs,
            multi_label=True,
            return_indices_ranked_by="self_confidence",
            n_jobs=1,
        )
    return tuple(int(i) for i in ranked)
