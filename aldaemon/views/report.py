"""`aldaemon report --project ID --out DIR`: an HTML page with plots, from local state alone.

    DIR/index.html      summary, the four plots, one row per model version
    DIR/quality.png     cross-validated accuracy and macro-F1 per version, by labels used
    DIR/labels.png      labels per class over time: one per annotation, at Label Studio's
                        timestamp of its last change (a task labeled twice counts twice)
    DIR/scores.png      informativeness scores of the active version (low = asked first)
    DIR/agreement.png   Cohen's kappa between each version and the one before it
    DIR/overview.png    the four plots on one image, for a README or a chat message

It opens the store without the daemon's lock (like `status`), so it runs beside the
daemon, and never calls Label Studio: a report of a project whose server is down works.

Agreement of consecutive versions. Stored predictions only exist for versions not yet
pruned (`keep_versions`, two by default), and each version predicted a different pool
(the unlabeled tasks of its day). So where both artifacts are still on disk, both models
label one fixed sample of the project's current tasks and kappa compares those; only
when an artifact is gone does it fall back to the stored predictions on the tasks both
versions predicted. The table says which source each number came from.

The plots are drawn in `plots.py`.
"""

from __future__ import annotations

import html
import itertools
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from aldaemon.config import Config, ProjectConfig
from aldaemon.errors import AldaemonError, ModelError
from aldaemon.store import DB_FILENAME, Store, VersionRow
from aldaemon.sync.label_sets import trainable_label_counts
from aldaemon.sync.scoring import cohen_kappa
from aldaemon.sync.timestamps import parse_ls_datetime
from aldaemon.sync.versions import VersionState, is_trained, training_examples
from aldaemon.views import plots
from aldaemon.views.team import render_team_html, team_status

log = structlog.get_logger(__name__)

AGREEMENT_SAMPLE = 2000  # tasks both models label; kappa's error is ~0.02 at this size


@dataclass(frozen=True)
class VersionPoint:
    """One trained version as the report shows it."""

    name: str
    number: int
    state: str
    n_labels: int | None
    cv_accuracy: float | None
    cv_macro_f1: float | None
    trained_at: float | None
    n_predictions: int | None
    backend_version: str | None = None  # an ML backend's own version behind it


@dataclass(frozen=True)
class Agreement:
    """Kappa between `newer` and the version trained before it, and how it was measured."""

    older: str
    newer: str
    newer_n_labels: int | None
    kappa: float | None
    n_tasks: int
    source: str  # "artifacts" | "stored predictions" | "unavailable"


@dataclass(frozen=True)
class ReportData:
    """Everything the page and the plots show; built from the store, then only rendered."""

    project_id: int
    generated_at: float
    labels_per_class: dict[str, int]
    versions: tuple[VersionPoint, ...]
    class_timeline: dict[str, list[tuple[datetime, int]]]
    score_version: str | None
    scores: tuple[float, ...]
    agreements: tuple[Agreement, ...]
    active_version: str | None
    team: dict[str, Any] | None = None  # views.team.team_status
    labels_not_in_config: dict[str, int] = field(default_factory=dict)  # they train nothing


# --- from local state to plain data -------------------------------------------------------


def cumulative_by_class(
    timeline: Sequence[tuple[str, str]],
) -> dict[str, list[tuple[datetime, int]]]:
    """Running count of labels per class: one (time, count so far) point per label."""
    counts: dict[str, int] = {}
    series: dict[str, list[tuple[datetime, int]]] = {}
    for stamp, label in sorted(timeline):
        counts[label] = counts.get(label, 0) + 1
        series.setdefault(label, []).append((parse_ls_datetime(stamp), counts[label]))
    return dict(sorted(series.items()))


def version_points(rows: Sequence[VersionRow]) -> tuple[VersionPoint, ...]:
    """The versions that finished training, oldest first."""
    points = []
    for row in rows:
        if not is_trained(row):
            continue
        metrics = row.metrics or {}
        points.append(
            VersionPoint(
                name=row.name,
                number=row.number,
                state=row.state,
                n_labels=row.n_labels,
                cv_accuracy=_optional_float(metrics.get("cv_accuracy")),
                cv_macro_f1=_optional_float(metrics.get("cv_macro_f1")),
                trained_at=row.trained_at,
                n_predictions=row.n_predictions,
                backend_version=row.backend_version,
            )
        )
    return tuple(points)


def _backend_note(backend_version: str | None) -> str:
    """After an aldaemon version's name: the ML backend's own version behind it."""
    return "" if backend_version is None else f" (backend {_e(backend_version)})"


def _optional_float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def kappa_of_predictions(
    older: Mapping[int, str], newer: Mapping[int, str]
) -> tuple[float | None, int]:
    """Kappa of two versions' labels on the tasks both predicted, and how many those were."""
    common = sorted(set(older) & set(newer))
    kappa = cohen_kappa([older[t] for t in common], [newer[t] for t in common])
    return kappa, len(common)


def collect_report_data(
    store: Store, project_id: int, *, now: float, project: ProjectConfig | None = None
) -> ReportData:
    """Read what the report shows; the agreement step loads artifacts (scikit-learn)."""
    project_config = project or ProjectConfig(id=project_id)
    counts, not_in_config = trainable_label_counts(
        store.annotated_tasks(project_id),
        store.get_meta(project_id).schema,
        project_config.labels.policy,
    )
    rows = store.list_versions(project_id)
    points = version_points(rows)
    by_name = {row.name: row for row in rows}
    active = next((row.name for row in rows if row.state == VersionState.ACTIVE), None)
    score_version = active or next(
        (p.name for p in reversed(points) if store.load_predictions(project_id, p.name)), None
    )
    scores: tuple[float, ...] = ()
    if score_version is not None:
        scores = tuple(p.score for p in store.load_predictions(project_id, score_version))
    return ReportData(
        project_id=project_id,
        generated_at=now,
        labels_per_class=dict(sorted(counts.items())),
        versions=points,
        class_timeline=cumulative_by_class(store.label_timeline(project_id)),
        score_version=score_version,
        scores=scores,
        agreements=consecutive_agreements(store, project_id, [by_name[p.name] for p in points]),
        active_version=active,
        team=team_status(store, project_config),
        labels_not_in_config=dict(sorted(not_in_config.items())),
    )


def consecutive_agreements(
    store: Store, project_id: int, versions: Sequence[VersionRow]
) -> tuple[Agreement, ...]:
    """Kappa of each trained version against the previous one (see the module docstring)."""
    sample_ids, sample_texts = _agreement_sample(store, project_id)
    artifact_labels: dict[str, tuple[str, ...] | None] = {}

    def labels_from_artifact(version: VersionRow) -> tuple[str, ...] | None:
        if version.name not in artifact_labels:
            artifact_labels[version.name] = _label_sample(version, sample_ids, sample_texts)
        return artifact_labels[version.name]

    agreements = []
    for older, newer in itertools.pairwise(versions):
        older_labels, newer_labels = labels_from_artifact(older), labels_from_artifact(newer)
        if older_labels is not None and newer_labels is not None and sample_ids:
            kappa = cohen_kappa(older_labels, newer_labels)
            n_tasks, source = len(sample_ids), "artifacts"
        else:
            stored_older = _stored_labels(store, project_id, older.name)
            stored_newer = _stored_labels(store, project_id, newer.name)
            kappa, n_tasks = kappa_of_predictions(stored_older, stored_newer)
            source = "stored predictions" if n_tasks else "unavailable"
        agreements.append(
            Agreement(
                older=older.name,
                newer=newer.name,
                newer_n_labels=newer.n_labels,
                kappa=kappa,
                n_tasks=n_tasks,
                source=source,
            )
        )
    return tuple(agreements)


def _agreement_sample(store: Store, project_id: int) -> tuple[list[int], list[str]]:
    """A fixed, seeded sample of the project's live tasks that have text."""
    texts: dict[int, str] = {
        example.task_id: example.text
        for example in training_examples(store.annotated_tasks(project_id))
    }
    for task_id, text in store.unlabeled_tasks(project_id):
        if text and text.strip():
            texts[task_id] = text
    ids = sorted(texts)
    if len(ids) > AGREEMENT_SAMPLE:
        ids = sorted(random.Random(0).sample(ids, AGREEMENT_SAMPLE))
    return ids, [texts[task_id] for task_id in ids]


def _label_sample(
    version: VersionRow, task_ids: Sequence[int], texts: Sequence[str]
) -> tuple[str, ...] | None:
    """The version's predicted label for each sampled text, or None without its artifact."""
    if not version.artifact_path or not Path(version.artifact_path).is_file() or not task_ids:
        return None
    from aldaemon.model.training import score_pool  # scikit-learn, only when needed

    try:
        scored = score_pool(
            artifact_path=version.artifact_path, task_ids=task_ids, texts=texts, strategy="margin"
        )
    except ModelError as exc:
        log.warning("report.artifact_unusable", version=version.name, error=str(exc))
        return None
    return scored.labels


def _stored_labels(store: Store, project_id: int, version: str) -> dict[int, str]:
    return {p.task_id: p.label for p in store.load_predictions(project_id, version)}


# --- rendering ----------------------------------------------------------------------------


def render_html(data: ReportData, *, images: Mapping[str, str]) -> str:
    """The page; `images` maps a plot name to its file name next to index.html."""
    generated = _iso(data.generated_at)
    total = sum(data.labels_per_class.values())
    per_class = ", ".join(f"{_e(label)} {count}" for label, count in data.labels_per_class.items())
    others = ", ".join(f"{_e(label)} {n}" for label, n in data.labels_not_in_config.items())
    not_in_config = f" Labels not in the config (not trained on): {others}." if others else ""
    kappa_by_newer = {a.newer: a for a in data.agreements}
    rows = []
    for version in data.versions:
        agreement = kappa_by_newer.get(version.name)
        kappa = "" if agreement is None else _fraction(agreement.kappa)
        if data.team and data.team["stable_since"] == version.name:
            kappa += " (stable since)"
        source = "" if agreement is None else f"{agreement.source} ({agreement.n_tasks} tasks)"
        rows.append(
            "<tr>"
            f"<td>{_e(version.name)}{_backend_note(version.backend_version)}</td>"
            f"<td>{_e(version.state)}</td>"
            f"<td class=n>{_count(version.n_labels)}</td>"
            f"<td class=n>{_fraction(version.cv_accuracy)}</td>"
            f"<td class=n>{_fraction(version.cv_macro_f1)}</td>"
            f"<td class=n>{kappa}</td><td>{_e(source)}</td>"
            f"<td class=n>{_count(version.n_predictions)}</td>"
            f"<td>{_iso(version.trained_at)}</td>"
            "</tr>"
        )
    figures = "\n".join(
        f'<figure><img src="{_e(images[name])}" alt="{_e(name)}"></figure>'
        for name in plots.PLOTS
        if name in images
    )
    table = (
        "<table><thead><tr><th>version</th><th>state</th><th>labels</th><th>cv accuracy</th>"
        "<th>cv macro-F1</th><th>kappa vs previous</th><th>kappa from</th>"
        "<th>predictions</th><th>trained at (UTC)</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
        if rows
        else "<p>No model version has been trained yet.</p>"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>aldaemon report: project {data.project_id}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }}
figure {{ display: inline-block; margin: 0 1em 1em 0; }}
img {{ width: 560px; border: 1px solid #ddd; }}
table {{ border-collapse: collapse; margin-top: 1em; }}
th, td {{ padding: 0.25em 0.75em; border-bottom: 1px solid #ddd; text-align: left; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
</style></head><body>
<h1>Project {data.project_id}</h1>
<p>Generated {generated} UTC from local state. {total} training labels
({per_class or "none yet"}); {len(data.versions)} trained version(s); active version:
{_e(data.active_version or "none")}.{not_in_config}</p>
{figures}
<h2>Versions</h2>
{table}
{render_team_html(data.team)}
</body></html>
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _iso(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(timestamp))


def _fraction(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _count(value: int | None) -> str:
    return "" if value is None else str(value)


# --- the command ----------------------------------------------------------------------------


def write_report(config: Config, *, project_id: int, out_dir: str | Path) -> Path:
    """Write DIR/index.html and its PNGs for one project; returns the page's path."""
    plots.load_figure_class()  # fail before any work when matplotlib is missing
    state_dir = config.state.dir
    if config.state.dsn is None and not (state_dir / DB_FILENAME).is_file():
        raise AldaemonError(f"no local state in {state_dir}: has the daemon run yet?")
    with Store.from_config(config.state, lock=False) as store:
        known = store.project_ids()
        if project_id not in known:
            listed = ", ".join(str(p) for p in known) or "none"
            raise AldaemonError(
                f"local state in {store.location} has nothing about project {project_id} "
                f"(projects there: {listed})"
            )
        data = collect_report_data(
            store, project_id, now=time.time(), project=config.project(project_id)
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = plots.draw_plots(data, out)
    page = out / "index.html"
    page.write_text(render_html(data, images=images), encoding="utf-8")
    log.info("report.written", project_id=project_id, path=str(page), versions=len(data.versions))
    return page
