"""A process killed with SIGKILL in the middle of an upload resumes without duplicates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from aldaemon.store import Store
from tests.conftest import MakeProject
from tests.lsserver import LabelStudioClient, LabelStudioServer
from tests.test_cycle import annotate_some, make_tasks, write_config

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]


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
        config = write_config(tmp_path, label_studio, project_id, predictions="batch_size = 40")
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
