"""Replicas over one PostgreSQL against the real Label Studio: one owner per project.

- A replica cut from PostgreSQL (its ownership session terminated, as a partition or a
  long pause ends it) is refused at its next write, even though it still thinks it owns
  the project; the replica that took the project over publishes, once.
- A replica killed with SIGKILL mid-upload (real `aldaemon run` processes) loses its
  projects to the other replica, which resumes the upload from the shared store with the
  count-checked resume: one prediction per (task, version).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from aldaemon.config import Config
from aldaemon.secret import Secret
from aldaemon.service.replicas import ownership_round
from aldaemon.service.runtime import Runtime
from aldaemon.store import Store
from aldaemon.store.ownership import APPLICATION_PREFIX, project_owners
from tests.conftest import MakeProject
from tests.helpers import annotate_some, health_now, make_tasks, wait_until, write_projects_config
from tests.lsserver import LabelStudioClient, LabelStudioServer

pytestmark = [pytest.mark.labelstudio, pytest.mark.postgres]

VERSION = "aldaemon-v1"


def replica_config(
    path: Path, server: LabelStudioServer, project_id: int, dsn: Secret, daemon: str = ""
) -> Config:
    return write_projects_config(
        path,
        server,
        [project_id],
        extra=f"poll_interval = 2\n{daemon}",
        predictions="batch_size = 20",
        state=f'dsn = "{dsn.reveal()}"',
    )


def per_task_version(client: LabelStudioClient, project_id: int) -> Counter[tuple[int, str]]:
    return Counter((p["task"], p["model_version"]) for p in client.predictions(project_id))


async def test_a_replica_cut_from_postgresql_stops_writing_before_the_other_starts(
    tmp_path: Path,
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
    make_project: MakeProject,
    state_dsn: Secret,
) -> None:
    tasks, labels = make_tasks(60, seed=5)
    project_id = make_project(tasks)
    annotate_some(ls_client, ls_client.task_ids(project_id), labels, 12)
    configs = [
        replica_config(
            tmp_path / f"{name}.toml", label_studio, project_id, state_dsn, f'replica = "{name}"'
        )
        for name in ("a", "b")
    ]
    async with (
        Runtime(configs[0], replica=True) as first,
        Runtime(configs[1], replica=True) as second,
    ):
        owner_at_start = project_owners(state_dsn, password=None).get(project_id)
        ownership_round(second)  # one project, two replicas: the first keeps it
        with psycopg.connect(state_dsn.reveal(), autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (APPLICATION_PREFIX + "a",),
            )
        taken_over = ownership_round(second)
        # The first replica still believes it owns the project, and runs a whole cycle.
        cut_off = await first.run_cycle(configs[0].projects[0])
        written_by_first = len(ls_client.predictions(project_id))
        first_health = health_now(first)
        carried_on = await second.run_cycle(configs[1].projects[0])

    per_task = per_task_version(ls_client, project_id)
    assert (
        owner_at_start,
        taken_over,
        cut_off.outcome,
        "no longer owns it" in (cut_off.error or ""),
        written_by_first,
        first_health.healthy,
        any("no PostgreSQL" in reason for reason in first_health.reasons),
        carried_on.outcome,
        set(per_task.values()),
        len(per_task),
        ls_client.get_project(project_id)["model_version"],
    ) == ("a", (project_id,), "failed", True, 0, False, True, "ok", {1}, 48, VERSION), (
        cut_off.error,
        carried_on.error,
    )


def start_replica(config: Config, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aldaemon",
                "--config",
                config.path,
                "--log-format",
                "json",
                "run",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


@pytest.fixture
def replica_processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)


def live_replicas(dsn: Secret) -> int:
    with psycopg.connect(dsn.reveal(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s",
            (APPLICATION_PREFIX + "%",),
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.slow
def test_a_replica_killed_mid_upload_is_replaced_and_its_upload_resumed_once(
    tmp_path: Path,
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
    make_project: MakeProject,
    state_dsn: Secret,
    replica_processes: list[subprocess.Popen[bytes]],
) -> None:
    tasks, labels = make_tasks(1000, seed=23)
    project_id = make_project(tasks)
    config = replica_config(tmp_path / "config.toml", label_studio, project_id, state_dsn)
    logs = [tmp_path / "replica-0.log", tmp_path / "replica-1.log"]
    for log_path in logs:
        replica_processes.append(start_replica(config, log_path))
    pids = {f":{process.pid}": index for index, process in enumerate(replica_processes)}

    def owner_index() -> int | None:
        owner = project_owners(state_dsn, password=None).get(project_id)
        return next((i for suffix, i in pids.items() if owner and owner.endswith(suffix)), None)

    wait_until(lambda: live_replicas(state_dsn) == 2, timeout=120, what="both replicas live")
    wait_until(lambda: owner_index() is not None, timeout=120, what="an owner")
    first = owner_index()
    assert first is not None
    annotate_some(ls_client, ls_client.task_ids(project_id), labels, 20)
    wait_until(
        lambda: (
            0
            < int(
                ls_client.call("GET", f"/api/projects/{project_id}/model-versions/").get(VERSION, 0)
            )
        ),
        timeout=300,
        what="the first batch of the upload",
    )
    replica_processes[first].send_signal(signal.SIGKILL)
    replica_processes[first].wait(timeout=30)
    with Store.from_config(config.state, lock=False) as store:
        left = store.get_version(project_id, VERSION)
    wait_until(lambda: owner_index() == 1 - first, timeout=120, what="the other replica owning it")
    wait_until(
        lambda: ls_client.get_project(project_id)["model_version"] == VERSION,
        timeout=300,
        what="the resumed version active",
    )

    with Store.from_config(config.state, lock=False) as store:
        stored = store.get_version(project_id, VERSION)
    per_task = per_task_version(ls_client, project_id)
    survivor_events = [
        json.loads(line)["event"]
        for line in logs[1 - first].read_text().splitlines()
        if line.startswith("{")
    ]
    assert (
        left is not None and left.state,
        sum(1 for _, version in per_task if version == VERSION),
        max(per_task.values()),
        "upload.resumed" in survivor_events,
    ) == ("uploading", stored and stored.n_predictions, 1, True)
