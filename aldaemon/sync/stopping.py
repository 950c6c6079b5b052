"""When more labels stop changing the model: the stabilizing-predictions stop signal.

Bloodgood & Vijay-Shanker (2009), "A Method for Stopping Active Learning Based on
Stabilizing Predictions" (CoNLL): keep a fixed random STOP SET of unlabeled examples,
predict it with every model, and stop once Cohen's kappa between consecutive models'
predictions stays at or above 0.99 for 3 consecutive models. The set never changes, so
the agreement measures the model, not the shifting pool.

A project stable since vN with `stop_when_stable` stops retraining until the labels
change the picture: `reopens` says when (enough new label changes since the last
training, as a share of what it trained on). Multi-label predictions are compared as
whole label sets (each distinct set one category).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aldaemon.sync.scoring import cohen_kappa

SET_SEPARATOR = "|"


def choose_stop_set(task_ids: Sequence[int], *, size: int, seed: int) -> list[int]:
    """A fixed random sample of `size` task ids (all when fewer), sorted; same seed, same set."""
    ids = sorted(set(task_ids))
    if len(ids) <= size:
        return ids
    return sorted(random.Random(seed).sample(ids, size))


def prediction_key(labels: Sequence[str]) -> str:
    """One category per predicted answer: a label, or a multi-label set in config order."""
    return SET_SEPARATOR.join(labels)


@dataclass(frozen=True)
class Agreement:
    """Kappa between `version` and the version before it on the common stop-set tasks."""

    version: str
    kappa: float | None


def consecutive_agreements(
    history: Sequence[tuple[str, Mapping[str, str]]],
) -> list[Agreement]:
    """Per version after the first (oldest first): kappa with its predecessor.

    `history` is (version, {task id: prediction key}) in training order; task ids are
    strings (they come back from JSON). Tasks deleted since are left out of each pair.
    """
    agreements = []
    for (_, older), (name, newer) in itertools.pairwise(history):
        common = sorted(set(older) & set(newer))
        a, b = [older[t] for t in common], [newer[t] for t in common]
        kappa = cohen_kappa(a, b)
        if kappa is None and common and a == b:
            kappa = 1.0  # one class everywhere, in both: kappa is undefined, agreement total
        agreements.append(Agreement(name, kappa))
    return agreements


def stable_since(agreements: Sequence[Agreement], *, threshold: float, k: int) -> str | None:
    """The version where the current run of >= threshold agreements reached length k.

    None when the latest agreements do not form such a run; an undefined kappa (None: no
    common task) breaks a run.
    """
    run = 0
    since = None
    for agreement in agreements:
        if agreement.kappa is not None and agreement.kappa >= threshold:
            run += 1
            if run == k:
                since = agreement.version
        else:
            run = 0
            since = None
    return since


def reopen_threshold(*, trained_on: int, fraction: float, min_new_annotations: int) -> int:
    """Label changes since the last training that reopen a project stopped as stable."""
    return max(min_new_annotations, math.ceil(fraction * trained_on))


def reopens(
    *, label_changes_since_training: int, trained_on: int, fraction: float, min_new: int
) -> bool:
    """Whether enough labels changed since the last training to train again."""
    threshold = reopen_threshold(
        trained_on=trained_on, fraction=fraction, min_new_annotations=min_new
    )
    return label_changes_since_training >= threshold
