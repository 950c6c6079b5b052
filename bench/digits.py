"""What the two ML-backend benchmarks share: digits projects and the example backend.

Tasks are scikit-learn's bundled digits (1,797 8x8 images, no download) as `data:` PNG
URLs (examples/ml_backend/images.py), served by the example backend (a real process,
`examples/ml_backend`) connected through Label Studio's own API. Task data carries
`digit_id` (the row in `load_digits()`), never the label.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from aldaemon.loop.backend_schema import read_backend_schema
from examples.ml_backend.images import DIGITS_LABEL_CONFIG, data_url_to_digit, digit_to_data_url
from examples.ml_backend.process import BackendProcess
from tests.lsserver import LabelStudioClient, LabelStudioServer, free_port, http_json

DIGITS_CONFIG = DIGITS_LABEL_CONFIG
SCHEMA = read_backend_schema(DIGITS_CONFIG)  # what the simulated annotator answers
IMPORT_CHUNK = 2000
# A fresh Label Studio migrates its database first: minutes on a busy machine.
STARTUP_TIMEOUT = 1800.0
SLOW_CALL_TIMEOUT = 1800.0


def digits() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """The 1,797 digits as the backend sees them (after the PNG round trip), and labels."""
    bunch = load_digits()
    seen = np.stack([data_url_to_digit(digit_to_data_url(row)) for row in bunch.data])
    return seen, np.asarray(bunch.target)


def fit(features: npt.NDArray[np.float64], labels: Sequence[int]) -> LogisticRegression:
    """The example backend's image model, fitted the way it fits (model.py)."""
    model = LogisticRegression(max_iter=2000)
    model.fit(features, list(labels))
    return model


def create_project(
    server: LabelStudioServer, client: LabelStudioClient, *, title: str, digit_ids: Sequence[int]
) -> tuple[int, dict[int, int]]:
    """A digits project with one task per digit id; its id and task id -> digit id."""
    bunch = load_digits()
    project_id = client.create_project(title=title, label_config=DIGITS_CONFIG)
    for start in range(0, len(digit_ids), IMPORT_CHUNK):
        body = [
            {"data": {"image": digit_to_data_url(bunch.data[n]), "digit_id": int(n)}}
            for n in digit_ids[start : start + IMPORT_CHUNK]
        ]
        _slow(server, "POST", f"/api/projects/{project_id}/import", body)
    listed = _slow(
        server,
        "GET",
        f"/api/tasks/?project={project_id}&fields=all&include=id,data"
        f"&page_size={len(digit_ids) + 10}&page=1",
    )["tasks"]
    mapping = {int(t["id"]): int(t["data"]["digit_id"]) for t in listed}
    if len(mapping) != len(digit_ids):
        raise RuntimeError(f"project {project_id} holds {len(mapping)} of {len(digit_ids)} tasks")
    return project_id, mapping


def _slow(server: LabelStudioServer, method: str, path: str, body: object = None) -> Any:
    return http_json(
        method, f"{server.url}{path}", token=server.legacy_token, body=body,
        timeout=SLOW_CALL_TIMEOUT,
    )  # fmt: skip


def annotate(client: LabelStudioClient, task_id: int, label: int) -> None:
    client.annotate(task_id, str(label), from_name="digit", to_name="image")


def connect(client: LabelStudioClient, project_id: int, backend: BackendProcess) -> int:
    """Connect the backend with Label Studio's own API, as a user would; its id."""
    body = {"url": backend.url, "project": project_id, "title": "digits"}
    return int(client.call("POST", "/api/ml", body)["id"])


@contextlib.contextmanager
def example_backend(server: LabelStudioServer, work_dir: Path) -> Iterator[BackendProcess]:
    """The example backend as a process for the whole run, models kept under work_dir."""
    backend = BackendProcess(
        port=free_port(),
        label_studio_url=server.url,
        api_key=server.legacy_token,
        model_dir=work_dir / "backend-models",
        log_path=work_dir / "backend.log",
    )
    backend.start()
    try:
        yield backend
    finally:
        backend.stop()


def model_version_counts(server: LabelStudioServer, project_id: int) -> dict[str, int]:
    """Predictions per model version, as Label Studio counts them."""
    answer = _slow(server, "GET", f"/api/projects/{project_id}/model-versions/")
    return {str(k): int(v) for k, v in dict(answer).items()}
