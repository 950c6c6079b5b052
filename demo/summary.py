"""What the demo prints when it ends: labels, versions, and each version's test accuracy.

The accuracy is measured on the 1,000 held-out test reviews with the version's own artifact,
loaded from the state dir the daemon just closed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from aldaemon.errors import AldaemonError
from aldaemon.store import Store
from aldaemon.sync.versions import label_counts
from demo.data import Review
from demo.digits import DigitsSummary, render_digits

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class VersionSummary:
    """One model version: what it trained on and how it did on the held-out reviews."""

    name: str
    state: str
    n_labels: int | None
    cv_accuracy: float | None
    test_accuracy: float | None
    test_macro_f1: float | None


@dataclass(frozen=True)
class DemoSummary:
    project_id: int
    seconds: float
    submitted: int  # annotations the simulated annotators created in this session
    labels_per_class: dict[str, int]  # training labels in local state at the end
    versions: tuple[VersionSummary, ...]
    test_labels: dict[str, int] = field(default_factory=dict)
    digits: DigitsSummary | None = None  # the second project, when the demo served it


def render_summary(summary: DemoSummary) -> str:
    """The tables printed when the demo ends: the reviews, then the digits project."""
    text = _render_reviews(summary)
    if summary.digits is not None:
        text += "\n" + render_digits(summary.digits)
    return text


def _render_reviews(summary: DemoSummary) -> str:
    per_class = ", ".join(f"{label} {n}" for label, n in sorted(summary.labels_per_class.items()))
    lines = [
        f"demo summary: project {summary.project_id}, {summary.seconds:.0f} s",
        f"  labels submitted by simulated annotators this session: {summary.submitted}",
        f"  training labels in local state: {sum(summary.labels_per_class.values())}"
        + (f" ({per_class})" if per_class else ""),
    ]
    if summary.test_labels:
        total = sum(summary.test_labels.values())
        majority_label, majority = max(summary.test_labels.items(), key=lambda item: item[1])
        lines.append(
            f"  test set: {total} held-out reviews; always answering {majority_label!r} "
            f"scores accuracy {majority / total:.3f}"
        )
    if not summary.versions:
        lines.append("  no model version yet (each class needs 2 labels, then 20 new labels)")
        return "\n".join(lines)
    lines.append(
        f"  {'version':<16} {'state':<11} {'labels':>6} {'cv acc':>7} {'test acc':>9} "
        f"{'test F1':>8}"
    )
    for version in summary.versions:
        lines.append(
            f"  {version.name:<16} {version.state:<11} {_number(version.n_labels):>6} "
            f"{_fraction(version.cv_accuracy):>7} {_fraction(version.test_accuracy):>9} "
            f"{_fraction(version.test_macro_f1):>8}"
        )
    lines.append(
        "  (cv acc is measured on the labels active learning chose, the hard cases, so it may"
        " fall while test acc rises)"
    )
    return "\n".join(lines)


def _number(value: int | None) -> str:
    return "-" if value is None else str(value)


def _fraction(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def summarize(
    *,
    state_dir: Path,
    project_id: int,
    test: Sequence[Review],
    submitted: int,
    seconds: float,
) -> DemoSummary:
    """Labels and versions from local state; each version's artifact scored on `test`."""
    from aldaemon.model.training import evaluate  # scikit-learn: only now, in this thread

    texts = [review.text for review in test]
    truth = [review.label for review in test]
    versions: list[VersionSummary] = []
    with Store.open(state_dir, lock=False) as store:
        labels = label_counts(store.annotated_tasks(project_id))
        rows = store.list_versions(project_id)
    for row in rows:
        quality: dict[str, float] = {}
        if row.artifact_path and Path(row.artifact_path).is_file() and texts:
            try:
                quality = evaluate(artifact_path=row.artifact_path, texts=texts, labels=truth)
            except AldaemonError as exc:
                log.warning("demo.evaluate_failed", version=row.name, error=str(exc))
        metrics = row.metrics or {}
        cv_accuracy = metrics.get("cv_accuracy")
        versions.append(
            VersionSummary(
                name=row.name,
                state=row.state,
                n_labels=row.n_labels,
                cv_accuracy=float(cv_accuracy) if cv_accuracy is not None else None,
                test_accuracy=quality.get("accuracy"),
                test_macro_f1=quality.get("macro_f1"),
            )
        )
    return DemoSummary(
        project_id=project_id,
        seconds=seconds,
        submitted=submitted,
        labels_per_class=labels,
        versions=tuple(versions),
        test_labels=dict(sorted(Counter(truth).items())),
    )
