"""Upload resume against the real Label Studio: the one place it is tested end to end.

An upload interrupted at any point (the process killed with SIGKILL mid-upload, a kill
while re-sending lost predictions, an import answer lost in transit) is resumed by the next
cycle: the same version, the landed batches not sent again, one prediction per task. The
resume arithmetic alone is in tests/unit/test_upload_resume.py; the chaos run
(tests/chaos/) kills mid-upload at random on top of these.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aldaemon.config import (
    Config,
    DaemonConfig,
    LabelStudioConfig,
    PredictionsConfig,
    ProjectConfig,
    RetrainConfig,
    StateConfig,
)
from aldaemon.labelstudio import LabelStudioGateway
from aldaemon.loop.context import CycleReport
from aldaemon.secret import Secret
from aldaemon.service.runtime import Runtime
from aldaemon.store import Store
from tests.conftest import MakeProject
from tests.faultproxy import FaultProxy
from tests.helpers import (
    EVERY_TASK,
    IMPORT_PATH,
    QUICK_BACKOFF,
    annotate_some,
    make_tasks,
    one_cycle,
    statuses,
    write_config,
)
from tests.lsserver import LabelStudioClient, LabelStudioServer

pytestmark = pytest.mark.labelstudio


def start_once(config_path: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "aldaemon", "--config", config_path, "--log-format", "json", "once"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def version_count(client: LabelStudioClient, project_id: int, version: str) -> int:
    counts = client.call("GET", f"/api/projects/{project_id}/model-versions/")
    return int(counts.get(version, 0))


@pytest.mark.slow
class TestKilledDuringUpload:
    def test_restart_after_sigkill_mid_upload_leaves_one_prediction_per_task(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """Killed between batches, the next run completes the version once, then activates it."""
        tasks, labels = make_tasks(1000, seed=21)
        project_id = make_project(tasks)
        annotate_some(ls_client, ls_client.task_ids(project_id), labels, 20)
        config = write_config(
            tmp_path, label_studio, project_id, predictions="batch_size = 40\n" + EVERY_TASK
        )
        total = 980

        process = start_once(config.path)
        deadline = time.monotonic() + 300
        seen = 0
        while time.monotonic() < deadline and process.poll() is None:
            seen = version_count(ls_client, project_id, "aldaemon-v1")
            if seen > 0:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        assert 0 < seen < total, f"the kill did not land mid-upload (count {seen})"

        store = Store.open(config.state.dir, lock=False)
        state_after_kill = store.get_version(project_id, "aldaemon-v1")
        store.close()
        assert state_after_kill is not None and "uploading" == state_after_kill.state

        rerun = start_once(config.path)
        _, err = rerun.communicate(timeout=600)
        assert 0 == rerun.returncode, err.decode()[-3000:]

        per_task = Counter(
            (p["task"], p["model_version"]) for p in ls_client.predictions(project_id)
        )
        assert (total, 1) == (len(per_task), max(per_task.values()))
        assert "aldaemon-v1" == ls_client.get_project(project_id)["model_version"]
        events = [
            json.loads(line)["event"] for line in err.decode().splitlines() if line[:1] == "{"
        ]
        assert "upload.resumed" in events


class KilledHere(BaseException):
    """Stands for a SIGKILL at this point: no handler of the daemon's runs after it."""


class TestResumingARepairedUpload:
    def test_a_kill_while_resending_lost_predictions_resumes_without_a_duplicate(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """Predictions lost before the final count are re-sent; a kill then loses nothing.

        After the last batch, everything but the third batch's predictions is deleted in
        Label Studio (a real deletion), so the check finds them missing and sends them
        again; the process dies after the first of those batches. The rerun must resume
        from what the store says was sent, not send the third batch's tasks a second time.
        """
        tasks, labels = make_tasks(110, seed=23)
        project_id = make_project(tasks)
        annotate_some(ls_client, ls_client.task_ids(project_id), labels, 10)
        config = write_config(
            tmp_path, label_studio, project_id, predictions="batch_size = 25\n" + EVERY_TASK
        )
        version = "aldaemon-v1"

        async def run_killed_during_the_resend() -> None:
            async with Runtime(config) as runtime:
                gateway, store = runtime.gateway, runtime.store
                assert gateway is not None and store is not None
                count_versions, import_predictions = (
                    gateway.model_version_counts,
                    gateway.import_predictions,
                )
                resent: list[int] = []

                async def counts_after_losing_predictions(project: int) -> dict[str, int]:
                    stored = store.get_version(project_id, version)
                    if stored is not None and stored.state == "uploading" and not resent:
                        third_batch = {
                            p.task_id for p in store.load_predictions(project, version)[50:75]
                        }
                        for prediction in ls_client.predictions(project):
                            if prediction["task"] not in third_batch:
                                ls_client.call("DELETE", f"/api/predictions/{prediction['id']}/")
                        resent.append(0)
                    return await count_versions(project)

                async def import_then_die(project: int, **kwargs: Any) -> int:
                    if resent:
                        resent.append(len(kwargs["predictions"]))
                        if len(resent) == 3:
                            raise KilledHere
                    return await import_predictions(project, **kwargs)

                gateway.model_version_counts = counts_after_losing_predictions  # type: ignore[method-assign]
                gateway.import_predictions = import_then_die  # type: ignore[method-assign]
                with pytest.raises(KilledHere):
                    await runtime.run_cycle(config.projects[0])

        asyncio.run(run_killed_during_the_resend())
        report = asyncio.run(one_cycle(config))

        per_task = Counter(
            (p["task"], p["model_version"]) for p in ls_client.predictions(project_id)
        )
        assert (100, 1) == (len(per_task), max(per_task.values()))
        assert ("ok", version) == (
            report.outcome,
            ls_client.get_project(project_id)["model_version"],
        )


TASK_COUNT = 16
LABELED_COUNT = 6
BATCH_SIZE = 4  # 10 unlabeled tasks: batches of 4, 4, 2; the first one's answer is lost


class QuickRetryRuntime(Runtime):
    """The real Runtime, with a gateway that waits at most QUICK_BACKOFF between attempts."""

    @staticmethod
    def _make_gateway(config: Config) -> LabelStudioGateway:
        return LabelStudioGateway(
            url=config.labelstudio.url,
            token=config.labelstudio.token,
            timeout=config.labelstudio.timeout,
            max_attempts=config.labelstudio.max_attempts,
            max_backoff=QUICK_BACKOFF,
        )


@dataclass(frozen=True)
class LostImportRun:
    """Two cycles of one project, the first one's first import answer dropped."""

    first: CycleReport
    second: CycleReport
    unlabeled_task_ids: list[int]
    predictions: list[dict[str, object]]
    project: dict[str, object]
    import_statuses: list[int | None]


def cycle_config(*, url: str, token: str, state_dir: Path, project_id: int) -> Config:
    return Config(
        path="(built by test_faults_gateway)",
        labelstudio=LabelStudioConfig(url=url, token=Secret(token), max_attempts=3),
        state=StateConfig(dir=state_dir),
        daemon=DaemonConfig(listen=""),
        projects=(
            ProjectConfig(
                id=project_id,
                retrain=RetrainConfig(min_new_annotations=1, min_interval=0.0, min_per_class=2),
                # every unlabeled task is predicted: the tests count them
                predictions=PredictionsConfig(batch_size=BATCH_SIZE, queue_depth=None),
            ),
        ),
    )


async def two_cycles(config: Config) -> tuple[CycleReport, CycleReport]:
    async with QuickRetryRuntime(config) as runtime:
        first = await runtime.run_cycle(config.projects[0])
        second = await runtime.run_cycle(config.projects[0])
    return first, second


@pytest.fixture(scope="module")
def lost_import_run(
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> LostImportRun:
    project_id = ls_client.create_project(title="lost import answer")
    words = ("good", "fine", "bad", "poor")
    task_ids = ls_client.import_tasks(
        project_id, [{"text": f"{words[n % 4]} item {n}"} for n in range(TASK_COUNT)]
    )
    for index, task_id in enumerate(task_ids[:LABELED_COUNT]):
        ls_client.annotate(task_id, "pos" if index % 2 == 0 else "neg")
    with FaultProxy(label_studio.url) as proxy:
        proxy.drop_response_next(n=1, method="POST", path_contains=IMPORT_PATH)
        config = cycle_config(
            url=proxy.url,
            token=label_studio.legacy_token,
            state_dir=tmp_path_factory.mktemp("lost-import") / "state",
            project_id=project_id,
        )
        first, second = asyncio.run(two_cycles(config))
        import_statuses = statuses(proxy, IMPORT_PATH, method="POST")
    return LostImportRun(
        first=first,
        second=second,
        unlabeled_task_ids=task_ids[LABELED_COUNT:],
        predictions=ls_client.predictions(project_id),
        project=ls_client.get_project(project_id),
        import_statuses=import_statuses,
    )


class TestCycleAfterLostImportAnswer:
    def test_first_cycle_fails_on_the_lost_answer(self, lost_import_run: LostImportRun) -> None:
        """The cycle whose import answer was lost ends failed instead of guessing."""
        assert "failed" == lost_import_run.first.outcome

    def test_next_cycle_resumes_the_same_version(self, lost_import_run: LostImportRun) -> None:
        """The next cycle finishes the interrupted version instead of training a new one."""
        assert lost_import_run.first.version == lost_import_run.second.version

    def test_landed_batch_is_not_sent_again(self, lost_import_run: LostImportRun) -> None:
        """The next cycle sends only the two batches the server did not hold yet."""
        assert [None, 201, 201] == lost_import_run.import_statuses

    def test_every_task_has_exactly_one_prediction_of_the_version(
        self, lost_import_run: LostImportRun
    ) -> None:
        """After the next cycle each unlabeled task has one prediction of the new version."""
        version = lost_import_run.second.version
        held = Counter(
            p["task"] for p in lost_import_run.predictions if p["model_version"] == version
        )
        assert dict.fromkeys(lost_import_run.unlabeled_task_ids, 1) == dict(held)

    def test_resumed_version_is_active(self, lost_import_run: LostImportRun) -> None:
        """The version whose upload was resumed becomes the project's active one."""
        assert lost_import_run.second.version == lost_import_run.project["model_version"]
