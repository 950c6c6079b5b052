"""`aldaemon once` with `[state] dsn`: labels and a published version land in PostgreSQL.

The daemon runs as a real child process against the shared Label Studio; what it stored is
read from PostgreSQL directly, behind the store's back. The DSN comes from a `dsn_file`
with a password in it (trust auth ignores it), which must not appear in the output.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from aldaemon.secret import Secret
from tests.conftest import MakeProject
from tests.helpers import annotate_some, make_tasks, predictions_by_version, write_projects_config
from tests.lsserver import LabelStudioClient, LabelStudioServer

pytestmark = [pytest.mark.labelstudio, pytest.mark.postgres]

REPO_ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "pg-pass-e2e-51d3"


def test_once_keeps_labels_and_the_published_version_in_postgresql(
    tmp_path: Path,
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
    make_project: MakeProject,
    state_dsn: Secret,
) -> None:
    tasks, labels = make_tasks(40)
    project_id = make_project(tasks)
    task_ids = ls_client.task_ids(project_id)
    annotate_some(ls_client, task_ids, labels, 12)
    user, rest = state_dsn.reveal().removeprefix("postgresql://").split("@", 1)
    dsn_file = tmp_path / "state-dsn"
    dsn_file.write_text(f"postgresql://{user.split(':')[0]}:{PASSWORD}@{rest}\n")
    config = write_projects_config(
        tmp_path / "config.toml", label_studio, [project_id], state=f'dsn_file = "{dsn_file}"'
    )

    run = subprocess.run(
        [sys.executable, "-m", "aldaemon", "--log-format", "json", "--config", config.path, "once"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO_ROOT,
    )

    with psycopg.connect(state_dsn.reveal()) as conn:
        stored_labels = conn.execute(
            "SELECT COUNT(*) FROM annotations WHERE project_id = %s AND label IS NOT NULL",
            (project_id,),
        ).fetchone()
        versions = conn.execute(
            "SELECT name, state, n_predictions FROM versions WHERE project_id = %s",
            (project_id,),
        ).fetchall()
    published = {
        name: len(ids) for name, ids in predictions_by_version(ls_client, project_id).items()
    }
    assert (0, (12,), [("aldaemon-v1", "active", 28)], {"aldaemon-v1": 28}, False, False) == (
        run.returncode,
        stored_labels,
        versions,
        published,
        (tmp_path / "state" / "aldaemon.sqlite3").exists(),
        PASSWORD in run.stdout + run.stderr,
    ), run.stderr[-3000:]
