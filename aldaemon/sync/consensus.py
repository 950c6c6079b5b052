"""Which answer a task trains with when several annotators answered it: the label policy.

A labeling team disagrees. `latest` trusts the newest answer (the rule before teams);
`majority` trains a task only when more than half of its annotators agree; `unanimous`
only when all do. A task the policy cannot settle is WITHHELD, with a reason, so the lead
can settle it in Label Studio (the "Conflicting labels" view lists them). An annotation
marked ground truth in Label Studio always wins. Skips never train (the store never hands
them here), and each annotator counts once: their newest answer.

Multi-label answers are voted per label: a label is in the answer when more than half of
the annotators selected it (majority), or when all did and the sets are equal (unanimous);
a label selected by exactly half is a tie.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aldaemon.sync.labels import StoredAnnotation, choose_training_labels
from aldaemon.sync.timestamps import parse_ls_datetime

LATEST = "latest"
MAJORITY = "majority"
UNANIMOUS = "unanimous"
POLICIES = (LATEST, MAJORITY, UNANIMOUS)

# Why a task is withheld (the keys of `withheld` in status, /metrics and the report).
TIE = "tie"
NO_MAJORITY = "no_majority"
NOT_UNANIMOUS = "not_unanimous"
WITHHELD_REASONS = (TIE, NO_MAJORITY, NOT_UNANIMOUS)


@dataclass(frozen=True)
class Verdict:
    """A task's answer under a policy (`labels`), or why it has none (`withheld`)."""

    labels: tuple[str, ...] | None
    withheld: str | None = None


def decide(annotations: Sequence[StoredAnnotation], policy: str) -> Verdict:
    """The answer `annotations` give under `policy` (see the module docstring)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown label policy {policy!r}; expected one of {POLICIES}")
    live = [
        a for a in annotations if not a.deleted and not a.was_cancelled and a.labels is not None
    ]
    truth = [a for a in live if a.ground_truth]
    if truth and len(truth) < len(live):
        return Verdict(choose_training_labels(truth))
    if policy == LATEST or not live:
        return Verdict(choose_training_labels(live))
    votes = [a.labels or () for a in _newest_per_annotator(live)]
    if policy == UNANIMOUS:
        if all(set(v) == set(votes[0]) for v in votes):
            return Verdict(votes[0])
        return Verdict(None, NOT_UNANIMOUS)
    return _majority(votes)


def _newest_per_annotator(annotations: Iterable[StoredAnnotation]) -> list[StoredAnnotation]:
    """One vote per annotator (their newest answer); an unknown annotator votes alone."""
    newest: dict[object, StoredAnnotation] = {}
    for a in sorted(annotations, key=lambda a: (parse_ls_datetime(a.updated_at), a.id)):
        newest[a.completed_by if a.completed_by is not None else ("annotation", a.id)] = a
    return sorted(newest.values(), key=lambda a: a.id)


def _majority(votes: Sequence[tuple[str, ...]]) -> Verdict:
    n = len(votes)
    if all(len(v) <= 1 for v in votes) and not any(v == () for v in votes):
        counts = Counter(v[0] for v in votes).most_common()
        top, top_count = counts[0]
        if top_count * 2 > n:
            return Verdict((top,))
        tied = len(counts) > 1 and counts[1][1] == top_count
        return Verdict(None, TIE if tied else NO_MAJORITY)
    # label sets: vote per label, keep the order of the first vote that selected it
    per_label = Counter(label for v in votes for label in set(v))
    if any(count * 2 == n for count in per_label.values()):
        return Verdict(None, TIE)
    order = [label for v in votes for label in v]
    chosen = [label for label in dict.fromkeys(order) if per_label[label] * 2 > n]
    if not chosen and () not in votes:  # nobody said "none of these"
        return Verdict(None, NO_MAJORITY)
    return Verdict(tuple(chosen))


def withheld_counts(withheld: dict[int, str]) -> dict[str, int]:
    """{reason: tasks} with every reason present (zeros included), for status and /metrics."""
    counts = Counter(withheld.values())
    return {reason: counts.get(reason, 0) for reason in WITHHELD_REASONS}
