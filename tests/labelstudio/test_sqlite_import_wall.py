"""Label Studio's SQLite wall on prediction imports, reported with its remedy, on both
settings of the flag that removes it.

Label Studio 1.23's default prediction import (data_import/api.py, `_create_legacy`)
stores the predictions, then recounts every task of the project with
`Task.objects.filter(id__in=<every task id>)`: one SQL variable per task. The SQLite it
ships with allows 250,000 variables, so on a bigger project every import answers 500
"too many SQL variables". With `fflag_fix_back_4620_memory_efficient_predictions_import_
08012025_short=true` it recounts only the tasks it touched.

A 250,000-task project is too big for the suite, so this server's SQLite is given a
lower limit instead: a `sitecustomize` module on its PYTHONPATH calls SQLite's own
`setlimit(SQLITE_LIMIT_VARIABLE_NUMBER, LIMIT)` on every connection Label Studio opens.
Everything else is the real server and the real query; the project holds more tasks
than the limit, the published K far fewer. The limit stays above 999 (Django batches
its bulk writes to 999 variables) and above the daemon's page sizes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from aldaemon.labelstudio.failures import MEMORY_EFFICIENT_IMPORT_FLAG
from aldaemon.loop.context import CycleReport
from tests.helpers import captured_events, events, make_tasks, one_cycle, write_config
from tests.lsserver import LabelStudioClient, LabelStudioServer

pytestmark = pytest.mark.labelstudio

LIMIT = 2000  # SQL variables per statement on this server (Label Studio's SQLite: 250,000)
TASKS = LIMIT + 100
IMPORT_CHUNK = 500
LABELED = 8
DEPTH = 20

SITECUSTOMIZE = f'''"""Lower SQLite's variable limit in this process (aldaemon's wall test)."""
import sqlite3

_connect = sqlite3.connect


def _limited(*args, **kwargs):
    connection = _connect(*args, **kwargs)
    connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, {LIMIT})
    return connection


sqlite3.connect = sqlite3.dbapi2.connect = _limited
'''


@dataclass
class WallRun:
    """Three cycles of one project: two with the stock import, one with the flag."""

    flag_off_first: CycleReport
    flag_off_logs: list[Any]
    flag_off_next: CycleReport
    flag_on: CycleReport
    active_after_flag_on: str | None
    predictions_per_version: dict[str, int]


def import_in_chunks(client: LabelStudioClient, project_id: int, texts: list[str]) -> list[int]:
    for start in range(0, len(texts), IMPORT_CHUNK):
        chunk = [{"data": {"text": text}} for text in texts[start : start + IMPORT_CHUNK]]
        client.call("POST", f"/api/projects/{project_id}/import", chunk)
    ids: list[int] = []
    page = 1
    while len(ids) < len(texts):
        answer = client.call(
            "GET",
            f"/api/tasks/?project={project_id}&fields=all&include=id&page={page}"
            f"&page_size={IMPORT_CHUNK}",
        )
        ids.extend(int(task["id"]) for task in answer["tasks"])
        page += 1
    return sorted(ids)


@pytest.fixture(scope="module")
def wall_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WallRun]:
    site = tmp_path_factory.mktemp("sqlite-limit")
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    server = LabelStudioServer(
        data_dir=tmp_path_factory.mktemp("label-studio-sqlite-wall"),
        extra_env={"PYTHONPATH": str(site), MEMORY_EFFICIENT_IMPORT_FLAG: "false"},
    )
    server.start()
    try:
        client = LabelStudioClient(server)
        tasks, labels = make_tasks(TASKS, seed=41)
        project_id = client.create_project(title="the SQLite wall")
        ids = import_in_chunks(client, project_id, [str(task["text"]) for task in tasks])
        for i in range(LABELED):
            client.annotate(ids[i], labels[i])
        config = write_config(
            tmp_path_factory.mktemp("wall-daemon"),
            server,
            project_id,
            predictions=f"queue_depth = {DEPTH}",
        )
        with captured_events() as logs:
            flag_off_first = asyncio.run(one_cycle(config))
        flag_off_next = asyncio.run(one_cycle(config))

        server.stop()
        server.extra_env[MEMORY_EFFICIENT_IMPORT_FLAG] = "true"
        server.start()
        for i in range(LABELED, LABELED + 4):
            client.annotate(ids[i], labels[i])
        flag_on = asyncio.run(one_cycle(config))
        counts = client.call("GET", f"/api/projects/{project_id}/model-versions/")
        yield WallRun(
            flag_off_first=flag_off_first,
            flag_off_logs=list(logs),
            flag_off_next=flag_off_next,
            flag_on=flag_on,
            active_after_flag_on=client.get_project(project_id)["model_version"],
            predictions_per_version={str(k): int(v) for k, v in counts.items()},
        )
    finally:
        server.stop()


class TestStockImport:
    def test_the_import_fails_with_the_remedy_not_a_generic_500(self, wall_run: WallRun) -> None:
        """The cycle fails; its error names Label Studio's SQLite error, the flag and
        PostgreSQL."""
        report = wall_run.flag_off_first
        assert "failed" == report.outcome
        assert report.error is not None
        for words in (
            "too many SQL variables",
            f"{MEMORY_EFFICIENT_IMPORT_FLAG}=true",
            "PostgreSQL",
        ):
            assert words in report.error

    def test_it_is_a_permanent_failure_not_an_outage(self, wall_run: WallRun) -> None:
        """The project is marked failed (kind `refused`), not "Label Studio unreachable"."""
        failed = events(wall_run.flag_off_logs, "project.failed")
        assert ["refused"] == [entry["kind"] for entry in failed]
        assert [] == events(wall_run.flag_off_logs, "labelstudio.unreachable")

    def test_the_stored_predictions_are_found_by_the_next_cycle(self, wall_run: WallRun) -> None:
        """Label Studio stored the batch before its recount failed: the next cycle counts
        it, sends nothing again and activates the version."""
        report = wall_run.flag_off_next
        assert ("ok", "aldaemon-v1") == (report.outcome, report.version)
        assert DEPTH == wall_run.predictions_per_version["aldaemon-v1"]


class TestMemoryEfficientImport:
    def test_the_same_project_publishes_with_the_flag(self, wall_run: WallRun) -> None:
        """After a restart with the flag, a new version is uploaded and activated at once."""
        report = wall_run.flag_on
        assert ("ok", None, "aldaemon-v2") == (report.outcome, report.error, report.version)
        assert ("aldaemon-v2", DEPTH) == (
            wall_run.active_after_flag_on,
            wall_run.predictions_per_version["aldaemon-v2"],
        )
