"""The loop serving a project through its ML backend: a real Label Studio, a real backend.

The example backend (examples/ml_backend) runs as a process and is connected through
Label Studio's own API, as a user would; aldaemon is configured with
`model = "ml-backend"` and runs whole cycles.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sklearn.datasets import load_digits

from aldaemon.config import Config, load_config
from aldaemon.loop.context import CycleReport
from aldaemon.store import DB_FILENAME
from aldaemon.sync.versions import queue_view_data
from aldaemon.views.status import collect
from examples.ml_backend.images import DIGITS_LABEL_CONFIG, digit_to_data_url
from examples.ml_backend.process import BackendProcess
from tests.conftest import MakeProject
from tests.helpers import one_cycle, predictions_by_version
from tests.lsserver import LabelStudioClient, LabelStudioServer, free_port

pytestmark = pytest.mark.labelstudio

DIGITS_CONFIG = DIGITS_LABEL_CONFIG
DIGITS = load_digits()


def new_backend(
    server: LabelStudioServer, model_dir: Path, flags: dict[str, str]
) -> BackendProcess:
    """The example backend as a process on a fixed port, which can be killed and restarted."""
    return BackendProcess(
        port=free_port(),
        label_studio_url=server.url,
        api_key=server.legacy_token,
        model_dir=model_dir,
        flags=flags,
    )


StartBackend = Callable[..., BackendProcess]


@pytest.fixture
def start_backend(label_studio: LabelStudioServer, tmp_path: Path) -> Iterator[StartBackend]:
    backends: list[BackendProcess] = []

    def start(**flags: str) -> BackendProcess:
        backend = new_backend(label_studio, tmp_path / "backend-models", flags).start()
        backends.append(backend)
        return backend

    yield start
    for backend in backends:
        backend.kill()


def digits_project(
    make_project: MakeProject, ls_client: LabelStudioClient, *, count: int, annotated: int
) -> tuple[int, list[int]]:
    """`count` digit images, the first `annotated` labelled with the truth."""
    project_id = make_project(
        [{"image": digit_to_data_url(DIGITS.data[n])} for n in range(count)],
        label_config=DIGITS_CONFIG,
    )
    task_ids = ls_client.task_ids(project_id)
    for n in range(annotated):
        annotate(ls_client, task_ids, n)
    return project_id, task_ids


def annotate(ls_client: LabelStudioClient, task_ids: list[int], n: int) -> None:
    ls_client.annotate(task_ids[n], str(DIGITS.target[n]), from_name="digit", to_name="image")


def connect(ls_client: LabelStudioClient, project_id: int, backend: BackendProcess) -> int:
    body = {"url": backend.url, "project": project_id, "title": "digits"}
    return int(ls_client.call("POST", "/api/ml", body)["id"])


def backend_config(
    directory: Path, server: LabelStudioServer, project_id: int, *, batch_size: int = 100,
    keep_versions: int = 2,
) -> Config:  # fmt: skip
    path = directory / "config.toml"
    path.write_text(
        f"""
[labelstudio]
url = "{server.url}"
token = "{server.legacy_token}"
max_attempts = 2

[state]
dir = "{directory / "state"}"

[daemon]
listen = ""

[[projects]]
id = {project_id}
model = "ml-backend"
[projects.ml_backend]
batch_size = {batch_size}
timeout = 30
[projects.retrain]
min_new_annotations = 4
min_interval = 0
min_per_class = 1
[projects.predictions]
keep_versions = {keep_versions}
queue_depth = 0  # every unlabeled task: the tests count them
"""
    )
    return load_config(path, env={})


def cycle(config: Config) -> CycleReport:
    return asyncio.run(one_cycle(config))


def status_of(config: Config) -> dict[str, object]:
    projects = collect(config)["projects"]
    assert isinstance(projects, list)
    project: dict[str, object] = projects[0]
    return project


class TestBackendLoop:
    def test_training_reaches_the_backend_and_a_new_version_is_published_then_pruned(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
        start_backend: StartBackend,
    ) -> None:
        """Digits images end to end: train, one prediction per unlabeled task, activate,
        sorted view; the next version prunes the first (keep_versions = 1)."""
        project_id, task_ids = digits_project(make_project, ls_client, count=40, annotated=20)
        connect(ls_client, project_id, start_backend())
        config = backend_config(tmp_path, label_studio, project_id, batch_size=7,
                                keep_versions=1)  # fmt: skip

        first = cycle(config)

        assert ("ok", "aldaemon-v1", "example-1") == (
            first.outcome,
            first.version,
            first.backend_version,
        )
        by_version = predictions_by_version(ls_client, project_id)
        assert {"aldaemon-v1": sorted(task_ids[20:])} == {
            k: sorted(v) for k, v in by_version.items()
        }
        project = ls_client.get_project(project_id)
        assert ("aldaemon-v1", "Uncertainty sampling") == (
            project["model_version"],
            project["sampling"],
        )
        views = ls_client.call("GET", f"/api/dm/views/?project={project_id}")
        queue = [v for v in views if v["data"].get("title") == "Active learning queue"]
        expected = queue_view_data(title="Active learning queue", version="aldaemon-v1")
        assert 1 == len(queue)
        assert expected["ordering"] == queue[0]["data"]["ordering"]
        predictions = ls_client.predictions(project_id)
        assert all(p["result"][0]["from_name"] == "digit" for p in predictions)
        versions = status_of(config)["versions"]
        assert [("aldaemon-v1", "example-1")] == [
            (v["name"], v["backend_version"])
            for v in versions  # type: ignore[attr-defined]
        ]

        for n in range(20, 25):
            annotate(ls_client, task_ids, n)
        second = cycle(config)

        assert ("ok", "aldaemon-v2", "example-2") == (
            second.outcome,
            second.version,
            second.backend_version,
        )
        by_version = predictions_by_version(ls_client, project_id)
        assert {"aldaemon-v2": sorted(task_ids[25:])} == {
            k: sorted(v) for k, v in by_version.items()
        }

    def test_a_backend_killed_mid_scoring_resumes_at_its_batch(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
        start_backend: StartBackend,
    ) -> None:
        """Killed after the first stored batch, restarted on its port: the next cycle scores
        only the rest, and Label Studio holds one prediction per task."""
        project_id, task_ids = digits_project(make_project, ls_client, count=30, annotated=12)
        backend = start_backend(PREDICT_DELAY="0.7")
        connect(ls_client, project_id, backend)
        config = backend_config(tmp_path, label_studio, project_id, batch_size=3)
        reports: list[CycleReport] = []
        runner = threading.Thread(target=lambda: reports.append(cycle(config)))
        runner.start()
        db = tmp_path / "state" / DB_FILENAME
        wait_for_stored_batches(db, timeout=120)
        backend.kill()
        runner.join(timeout=120)
        stored = wait_for_stored_batches(db, timeout=1)
        assert "failed" == reports[0].outcome
        assert "ML backend" in (reports[0].error or "")
        assert {} == predictions_by_version(ls_client, project_id)

        backend.start()
        resumed = cycle(config)

        assert ("ok", "aldaemon-v1") == (resumed.outcome, resumed.version)
        assert 18 - stored == resumed.counts["tasks_scored"]
        held = predictions_by_version(ls_client, project_id)["aldaemon-v1"]
        assert sorted(task_ids[12:]) == sorted(held)  # each task once

    def test_a_short_answer_uploads_nothing(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
        start_backend: StartBackend,
    ) -> None:
        """One result fewer than tasks: the version fails, nothing reaches Label Studio."""
        project_id, _ = digits_project(make_project, ls_client, count=16, annotated=10)
        connect(ls_client, project_id, start_backend(SHORT_ANSWER="1"))
        config = backend_config(tmp_path, label_studio, project_id, batch_size=3)

        report = cycle(config)

        assert "failed" == report.outcome
        assert "2 result(s) for 3 task(s)" in (report.error or "")
        assert {} == predictions_by_version(ls_client, project_id)
        assert "result(s) for" in str(status_of(config)["failure"])

    def test_a_failed_training_shows_the_backends_message(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
        start_backend: StartBackend,
        capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """FAIL_TRAINING=1: the project fails with the backend's own words, in status and log."""
        project_id, _ = digits_project(make_project, ls_client, count=14, annotated=10)
        connect(ls_client, project_id, start_backend(FAIL_TRAINING="1"))
        config = backend_config(tmp_path, label_studio, project_id)

        report = cycle(config)

        message = "FAIL_TRAINING is set: this backend refuses to train"
        assert "failed" == report.outcome
        assert message in str(status_of(config)["failure"])
        # Where a log line lands depends on how earlier tests left logging configured:
        # the console (capsys) or the standard library's handlers (caplog). Read both.
        logged = capsys.readouterr()
        lines = (logged.out + logged.err + caplog.text).splitlines()
        assert any("project.failed" in line and message in line for line in lines)
        assert {} == predictions_by_version(ls_client, project_id)

    def test_a_backend_without_scores_is_refused_clearly(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
        start_backend: StartBackend,
    ) -> None:
        """NO_SCORE=1: the project fails saying the queue cannot be sorted; nothing uploaded."""
        project_id, _ = digits_project(make_project, ls_client, count=14, annotated=10)
        connect(ls_client, project_id, start_backend(NO_SCORE="1"))
        config = backend_config(tmp_path, label_studio, project_id)

        report = cycle(config)

        assert "failed" == report.outcome
        assert "cannot sort the queue" in str(status_of(config)["failure"])
        assert {} == predictions_by_version(ls_client, project_id)


class TestWhatTheBackendIsSent:
    def test_predict_gets_each_task_whole_as_label_studio_itself_sends_it(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
        start_backend: StartBackend,
    ) -> None:
        """Every data field and the task's other fields reach /predict, the same keys as
        Label Studio's own "Retrieve Predictions" sends."""
        requests = tmp_path / "requests.jsonl"
        project_id = make_project(label_config=DIGITS_CONFIG)
        whole_tasks = [
            {
                "data": {"image": digit_to_data_url(DIGITS.data[n]), "source": f"scan-{n}"},
                "meta": {"batch": n % 2},
            }
            for n in range(14)
        ]
        ls_client.call("POST", f"/api/projects/{project_id}/import", whole_tasks)
        task_ids = ls_client.task_ids(project_id)
        for n in range(10):  # one of each digit: out of the cold start
            annotate(ls_client, task_ids, n)
        backend_id = connect(ls_client, project_id, start_backend(REQUEST_LOG=str(requests)))
        config = backend_config(tmp_path, label_studio, project_id)

        assert "ok" == cycle(config).outcome
        ours = [task for body in predict_bodies(requests) for task in body["tasks"]]
        requests.unlink()
        ls_client.call(
            "POST",
            f"/api/dm/actions?id=retrieve_tasks_predictions&project={project_id}",
            {"selectedItems": {"all": False, "included": [task_ids[10]]}},
        )
        theirs = [task for body in predict_bodies(requests) for task in body["tasks"]]

        assert backend_id > 0
        assert sorted(task_ids[10:]) == sorted(task["id"] for task in ours)
        assert [f"scan-{n}" for n in range(10, 14)] == [task["data"]["source"] for task in ours]
        assert [{"batch": n % 2} for n in range(10, 14)] == [task["meta"] for task in ours]
        assert 1 == len(theirs)
        assert sorted(theirs[0]) == sorted(ours[0])
        assert theirs[0]["data"] == ours[0]["data"]


class TestFixedModel:
    def test_a_backend_that_does_not_train_gets_only_new_and_changed_tasks(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
        start_backend: StartBackend,
    ) -> None:
        """FIXED_MODEL=1: its version does not move when asked to train, so later cycles
        ask no training, send /predict only the new and the changed tasks, and add them
        to the active version: still one prediction per task and version."""
        requests = tmp_path / "requests.jsonl"
        project_id, task_ids = digits_project(make_project, ls_client, count=20, annotated=10)
        connect(ls_client, project_id, start_backend(FIXED_MODEL="1", REQUEST_LOG=str(requests)))
        config = backend_config(tmp_path, label_studio, project_id)

        first = cycle(config)
        assert ("ok", "aldaemon-v1", "example-pretrained") == (
            first.outcome, first.version, first.backend_version
        )  # fmt: skip
        requests.unlink()
        new_ids = ls_client.import_tasks(
            project_id, [{"image": digit_to_data_url(DIGITS.data[n])} for n in (30, 31)]
        )
        changed = task_ids[15]  # digit 5 becomes the image of a 0
        assert (5, 0) == (DIGITS.target[15], DIGITS.target[36])
        ls_client.call(
            "PATCH",
            f"/api/tasks/{changed}/",
            {"data": {"image": digit_to_data_url(DIGITS.data[36])}},
        )
        for n in range(10, 14):  # past min_new_annotations: a training would be due
            annotate(ls_client, task_ids, n)

        second = cycle(config)

        assert ("ok", "aldaemon-v1") == (second.outcome, second.version)
        # Label Studio itself posts annotation events to /webhook; a training request is
        # the START_TRAINING action.
        actions = [line["body"].get("action") for line in request_lines(requests)
                   if line["path"] == "/webhook"]  # fmt: skip
        assert "START_TRAINING" not in actions
        sent = sorted(task["id"] for body in predict_bodies(requests) for task in body["tasks"])
        assert sorted([*new_ids, changed]) == sent
        predictions = ls_client.predictions(project_id)
        per_task = [p["task"] for p in predictions if p["model_version"] == "aldaemon-v1"]
        assert sorted([*task_ids[10:], *new_ids]) == sorted(per_task)
        assert {"aldaemon-v1"} == {p["model_version"] for p in predictions}
        changed_label = [p["result"][0]["value"]["choices"] for p in predictions
                         if p["task"] == changed]  # fmt: skip
        assert [["0"]] == changed_label
        assert ["aldaemon-v1"] == [v["name"] for v in status_of(config)["versions"]]  # type: ignore[attr-defined]

        requests.unlink()
        third = cycle(config)
        assert ("idle", []) == (third.outcome, predict_bodies(requests))

    def test_a_fixed_model_that_changes_is_rescored_without_a_training_request(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
        start_backend: StartBackend,
    ) -> None:
        """A backend known not to train that comes back with another model version gets a
        new aldaemon version over the whole pool, and is still not asked to train."""
        requests = tmp_path / "requests.jsonl"
        project_id, task_ids = digits_project(make_project, ls_client, count=16, annotated=10)
        backend = start_backend(FIXED_MODEL="1", REQUEST_LOG=str(requests))
        connect(ls_client, project_id, backend)
        config = backend_config(tmp_path, label_studio, project_id)
        assert "aldaemon-v1" == cycle(config).version
        backend.kill()
        backend.env["FIXED_MODEL_VERSION"] = "example-pretrained-2"
        backend.start()
        requests.unlink()

        second = cycle(config)

        assert ("ok", "aldaemon-v2", "example-pretrained-2") == (
            second.outcome, second.version, second.backend_version
        )  # fmt: skip
        actions = [line["body"].get("action") for line in request_lines(requests)]
        assert "START_TRAINING" not in actions
        by_version = predictions_by_version(ls_client, project_id)
        assert sorted(task_ids[10:]) == sorted(by_version["aldaemon-v2"])


def request_lines(path: Path) -> list[dict[str, Any]]:
    """What the example backend logged (REQUEST_LOG), one dict per call; [] when none."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def predict_bodies(path: Path) -> list[dict[str, Any]]:
    return [line["body"] for line in request_lines(path) if line["path"] == "/predict"]


def wait_for_stored_batches(db: Path, *, timeout: float) -> int:
    """Wait until a /predict batch is stored; return how many tasks are."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=5) as conn:
                    row = conn.execute("SELECT COUNT(*) FROM backend_predictions").fetchone()
                if row[0]:
                    return int(row[0])
            except sqlite3.OperationalError:
                pass  # the table is not there yet
        time.sleep(0.05)
    raise AssertionError("no /predict batch was stored")
