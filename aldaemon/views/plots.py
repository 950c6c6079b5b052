"""The report's plots, drawn with matplotlib's object API (`Figure`, rendered by Agg).

No pyplot global state and no display needed. matplotlib is the optional `report`
extra, imported only when a report is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aldaemon.errors import AldaemonError

if TYPE_CHECKING:
    from aldaemon.views.report import ReportData

PLOTS = ("quality", "labels", "scores", "agreement")
SCORE_BINS = 40
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


def load_figure_class() -> Any:
    """matplotlib's Figure, or an error that says how to get it."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise AldaemonError("the report needs matplotlib: pip install 'aldaemon[report]'") from None
    return Figure


def draw_plots(data: ReportData, out_dir: Path) -> dict[str, str]:
    """Write one PNG per plot and the 2x2 overview; returns plot name -> file name."""
    figure_class = load_figure_class()
    drawers = {
        "quality": _plot_quality,
        "labels": _plot_labels,
        "scores": _plot_scores,
        "agreement": _plot_agreement,
    }
    images: dict[str, str] = {}
    for name, draw in drawers.items():
        figure = figure_class(figsize=(7, 4.2), layout="constrained")
        draw(figure.subplots(), data)
        figure.savefig(out_dir / f"{name}.png", dpi=110)
        images[name] = f"{name}.png"
    overview = figure_class(figsize=(13, 8.4), layout="constrained")
    for axes, draw in zip(overview.subplots(2, 2).flat, drawers.values(), strict=True):
        draw(axes, data)
    overview.suptitle(f"aldaemon: project {data.project_id}", fontsize=14)
    overview.savefig(out_dir / "overview.png", dpi=100)
    images["overview"] = "overview.png"
    return images


def _titled(axes: Any, title: str, *, shown: Sequence[object], empty: str) -> bool:
    """Title the plot; False, with `empty` written across it, when nothing is `shown`."""
    axes.set_title(title)
    if shown:
        return True
    axes.text(0.5, 0.5, empty, ha="center", va="center", transform=axes.transAxes)
    axes.set_xticks([])
    axes.set_yticks([])
    return False


def _labeled(axes: Any, *, x: str, y: str) -> None:
    """The axis names, and the light grid every plot has."""
    axes.set_xlabel(x)
    axes.set_ylabel(y)
    axes.grid(alpha=0.3)


def _plot_quality(axes: Any, data: ReportData) -> None:
    measured = [v for v in data.versions if v.n_labels is not None and v.cv_accuracy is not None]
    title = "Model quality per version (cross-validated)"
    if not _titled(axes, title, shown=measured, empty="no cross-validated version yet"):
        return
    labels = [v.n_labels for v in measured]
    axes.plot(labels, [v.cv_accuracy for v in measured], "o-", label="accuracy")
    f1 = [(v.n_labels, v.cv_macro_f1) for v in measured if v.cv_macro_f1 is not None]
    if f1:
        axes.plot([x for x, _ in f1], [y for _, y in f1], "s--", label="macro-F1")
    active = [v for v in measured if v.name == data.active_version]
    if active:
        axes.plot(
            [active[0].n_labels],
            [active[0].cv_accuracy],
            "*",
            markersize=16,
            color="gold",
            markeredgecolor="black",
            label=f"active ({active[0].name})",
        )
    _labeled(axes, x="labels the version was trained on", y="score")
    axes.legend(loc="lower right")


def _plot_labels(axes: Any, data: ReportData) -> None:
    title = "Labels per class over time (annotations)"
    if not _titled(axes, title, shown=list(data.class_timeline), empty="no labels yet"):
        return
    for index, (label, points) in enumerate(data.class_timeline.items()):
        axes.step(
            [when for when, _ in points],
            [count for _, count in points],
            where="post",
            label=f"{label} ({points[-1][1]})",
            color=_COLORS[index % len(_COLORS)],
        )
    _labeled(axes, x="time of the annotation's last change (UTC)", y="labels")
    axes.legend(loc="upper left")
    for tick in axes.get_xticklabels():
        tick.set_rotation(20)


def _plot_scores(axes: Any, data: ReportData) -> None:
    title = f"Scores of {data.score_version or 'the active version'} (lower = asked first)"
    if not _titled(axes, title, shown=data.scores, empty="no stored predictions"):
        return
    axes.hist(data.scores, bins=SCORE_BINS, range=(0.0, 1.0), color=_COLORS[0])
    _labeled(axes, x=f"informativeness score, {len(data.scores)} unlabeled tasks", y="tasks")


def _plot_agreement(axes: Any, data: ReportData) -> None:
    measured = [a for a in data.agreements if a.kappa is not None and a.newer_n_labels is not None]
    title = "Agreement with the previous version (Cohen's kappa)"
    if not _titled(axes, title, shown=measured, empty="needs two versions"):
        return
    axes.plot([a.newer_n_labels for a in measured], [a.kappa for a in measured], "o-")
    axes.set_ylim(min(0.0, *(a.kappa or 0.0 for a in measured)) - 0.05, 1.05)
    _labeled(axes, x="labels the newer version was trained on", y="kappa")
