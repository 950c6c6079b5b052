"""The demo's second project: digit images served through the example ML backend.

scikit-learn's 1,797 bundled digits (no download) become tasks whose image is a `data:`
PNG URL (examples/ml_backend/images.py): Label Studio shows it as it is and the backend
reads the same string back, so nothing is served from disk or the network. The example
backend runs as a child process on 127.0.0.1 (`backend_port`, 9091 by default) with its
models under .demo/backend-models, and is connected with Label Studio's own API, as a
user connects one. The project is in the config with `model = "ml-backend"`: the daemon
asks Label Studio to train the backend and scores the images through its `/predict`.

As for the reviews, a task carries its row number (`digit_id`), never its label; the
simulated annotators look the digit up here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from aldaemon.errors import AldaemonError, ProjectNotFound
from aldaemon.loop.backend_schema import read_backend_schema
from aldaemon.records import LabelingSchema
from aldaemon.store import Store
from demo.labelstudio import DemoGateway
from demo.paths import DemoPaths, read_json, update_json
from examples.ml_backend.images import DIGITS_LABEL_CONFIG, digit_to_data_url
from examples.ml_backend.process import BackendProcess, BackendStartFailed

log = structlog.get_logger(__name__)

DIGITS_TITLE = "Digits (ML backend)"
DIGIT_ID_FIELD = "digit_id"
BACKEND_TITLE = "example digits backend"
SCHEMA: LabelingSchema = read_backend_schema(DIGITS_LABEL_CONFIG)


def digit_targets() -> list[str]:
    """The true digit of every row of `load_digits()`, as the labeling config names it."""
    from sklearn.datasets import load_digits

    return [str(int(target)) for target in load_digits().target]


def digit_tasks() -> list[dict[str, object]]:
    """One task per bundled digit: the picture as a data URL and its row, not its label."""
    from sklearn.datasets import load_digits

    return [
        {"data": {"image": digit_to_data_url(row), DIGIT_ID_FIELD: n}}
        for n, row in enumerate(load_digits().data)
    ]


def digit_answer(task: Mapping[str, Any], targets: list[str]) -> str | None:
    """The true digit of a task Label Studio served, or None when it is not a demo digit."""
    data = task.get("data")
    digit_id = data.get(DIGIT_ID_FIELD) if isinstance(data, Mapping) else None
    if isinstance(digit_id, bool) or not isinstance(digit_id, int) or digit_id >= len(targets):
        return None
    return targets[digit_id]


async def ensure_digits_project(gateway: DemoGateway, paths: DemoPaths) -> tuple[int, bool]:
    """The digits project's id (remembered in demo.json), and whether it was created now."""
    remembered = read_json(paths.demo_file).get("digits_project_id")
    if isinstance(remembered, int):
        try:
            info = await gateway.get_project(remembered)
        except ProjectNotFound:
            log.info("demo.project_gone", project_id=remembered)
        else:
            if not info.task_count:
                await gateway.import_tasks(remembered, digit_tasks())
            return remembered, False
    project_id = await gateway.create_project(title=DIGITS_TITLE, label_config=DIGITS_LABEL_CONFIG)
    update_json(paths.demo_file, digits_project_id=project_id)
    imported = await gateway.import_tasks(project_id, digit_tasks())
    log.info("demo.project_created", project_id=project_id, title=DIGITS_TITLE, tasks=imported)
    return project_id, True


def start_backend(paths: DemoPaths, *, url: str, token: str, port: int) -> BackendProcess:
    """The example backend on 127.0.0.1:`port`; a clear error when it cannot start."""
    backend = BackendProcess(
        port=port,
        label_studio_url=url,
        api_key=token,
        model_dir=paths.root / "backend-models",
        log_path=paths.root / "backend.log",
    )
    if backend.healthy():
        raise AldaemonError(
            f"something already answers on {backend.url}: stop it, or start the demo with "
            "--backend-port PORT"
        )
    try:
        backend.start()
    except BackendStartFailed as exc:
        raise AldaemonError(f"{exc}; see {backend.log_path}") from None
    log.info("demo.backend_started", url=backend.url, log=str(backend.log_path))
    return backend


@dataclass(frozen=True)
class DigitsVersion:
    """One version of the digits project and how right its predictions were."""

    name: str
    state: str
    n_labels: int | None
    backend_version: str | None
    predictions: int
    correct: float | None  # share of its predictions (unlabeled digits) that are right


def digits_versions(
    state_dir: Path, project_id: int, truth: Mapping[int, str]
) -> list[DigitsVersion]:
    """Each version of the digits project from local state, its predictions checked."""
    with Store.open(state_dir, lock=False) as store:
        rows = store.list_versions(project_id)
        predicted = {row.name: store.load_predictions(project_id, row.name) for row in rows}
    versions = []
    for row in rows:
        checked = [p.label == truth[p.task_id] for p in predicted[row.name] if p.task_id in truth]
        versions.append(
            DigitsVersion(
                name=row.name,
                state=row.state,
                n_labels=row.n_labels,
                backend_version=row.backend_version,
                predictions=len(predicted[row.name]),
                correct=sum(checked) / len(checked) if checked else None,
            )
        )
    return versions


@dataclass(frozen=True)
class DigitsSummary:
    """The digits project at the end of a session."""

    project_id: int
    submitted: int  # annotations the simulated annotators created in this session
    versions: tuple[DigitsVersion, ...]


def render_digits(summary: DigitsSummary) -> str:
    """The digits part of the summary printed when the demo ends."""
    versions = summary.versions
    lines = [
        f"digits project {summary.project_id} (served by the example ML backend):",
        f"  labels submitted by simulated annotators this session: {summary.submitted}",
    ]
    if not versions:
        lines.append("  no model version yet (one label of each digit, then 20 new labels)")
        return "\n".join(lines)
    lines.append(
        f"  {'version':<16} {'state':<11} {'labels':>6} {'backend':<12} {'predicted':>9} "
        f"{'right':>6}"
    )
    for v in versions:
        right = "-" if v.correct is None else f"{v.correct:.3f}"
        lines.append(
            f"  {v.name:<16} {v.state:<11} {v.n_labels or 0:>6} {v.backend_version or '-':<12} "
            f"{v.predictions:>9} {right:>6}"
        )
    lines.append(
        "  (right: share of the version's predictions, on unlabeled digits, that are correct)"
    )
    return "\n".join(lines)
