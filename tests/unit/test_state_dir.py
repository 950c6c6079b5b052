"""Local state that cannot be used: locked, uncreatable, corrupt; and rebuilding it.

Each case goes through `aldaemon.cli.main` with a config in a temporary directory, the way
an operator meets it: exit 73 (EX_CANTCREAT) and one line that names the path and what to
do, never a traceback. A corrupt database is then rebuilt from the real Label Studio with
`aldaemon state rebuild --project ID`.
"""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aldaemon import cli
from aldaemon.errors import StateError
from aldaemon.loop.poll import record_poll
from aldaemon.records import TaskRecord
from aldaemon.store import (
    DB_FILENAME,
    LATEST_SCHEMA_VERSION,
    LOCK_FILENAME,
    REBUILD_HINT,
    Store,
    quarantine_database,
)
from aldaemon.sync.reconcile import diff
from tests.lsserver import REPO_ROOT, LabelStudioClient, LabelStudioServer

EX_CANTCREAT = 73
UNREACHABLE_URL = "http://127.0.0.1:9"  # discard port: nothing listens; never reached here
PAGE_SIZE = 4096  # SQLite's default, which the store keeps
T0 = "2026-11-27T21:11:36.815556Z"


def write_config(
    directory: Path,
    *,
    state_dir: Path,
    project_id: int = 1,
    url: str = UNREACHABLE_URL,
    token: str = "a-token-that-is-never-sent",
) -> Path:
    path = directory / "config.toml"
    path.write_text(
        f"""
[labelstudio]
url = "{url}"
token = "{token}"
max_attempts = 2

[state]
dir = "{state_dir}"

[daemon]
listen = ""

[[projects]]
id = {project_id}
[projects.retrain]
min_new_annotations = 1
min_interval = 0
min_per_class = 2
"""
    )
    return path


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str


def run_cli(*argv: str) -> Run:
    """`aldaemon.cli.main(argv)` with its output captured (logs go to stderr as JSON)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["--log-format", "json", *argv])
    return Run(code=code, stdout=out.getvalue(), stderr=err.getvalue())


def run_process(*argv: str) -> subprocess.CompletedProcess[str]:
    """`python -m aldaemon ...` in a child process, for what only a process shows."""
    return subprocess.run(
        [sys.executable, "-m", "aldaemon", "--log-format", "json", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)},
    )


def populated_store(state_dir: Path, *, tasks: int = 300, text_size: int = 200) -> Path:
    """A real database with `tasks` tasks of project 1, closed; returns the file."""
    records = [
        TaskRecord(id=n, updated_at=T0, text="t" * text_size + str(n)) for n in range(1, tasks + 1)
    ]
    with Store.open(state_dir) as store:
        record_poll(store, 1, diff(records, {}), now=0.0)
    return state_dir / DB_FILENAME


def corrupt(db_file: Path, how: str) -> None:
    """Damage the file the ways disks and people do."""
    data = bytearray(db_file.read_bytes())
    if how == "garbage":
        db_file.write_bytes(bytes(range(256)) * 32)
    elif how == "damaged page":
        data[PAGE_SIZE * 2 : PAGE_SIZE * 3] = b"\xa5" * PAGE_SIZE
        db_file.write_bytes(data)
    elif how == "truncated":
        db_file.write_bytes(data[: len(data) // 2])
    else:
        raise ValueError(how)


CORRUPTIONS = ["garbage", "damaged page", "truncated"]


# ---- a second opener -----------------------------------------------------------------------


class TestLockedState:
    @pytest.fixture
    def held(self, tmp_path: Path) -> Iterator[Path]:
        """A config whose state dir another 'daemon' (this test) holds locked."""
        state_dir = tmp_path / "state"
        with Store.open(state_dir):
            yield write_config(tmp_path, state_dir=state_dir)

    def test_second_daemon_exits_73(self, held: Path) -> None:
        """`once` on a state dir another process holds exits 73."""
        assert EX_CANTCREAT == run_cli("--config", str(held), "once").code

    def test_message_names_the_lock_file(self, held: Path, tmp_path: Path) -> None:
        """The refusal names the lock file, so the operator knows what is held."""
        lock_path = tmp_path / "state" / LOCK_FILENAME

        assert str(lock_path) in run_cli("--config", str(held), "once").stderr

    def test_rebuild_refuses_while_the_state_is_held(self, held: Path) -> None:
        """`state rebuild` does not touch state a running daemon holds: exit 73."""
        run = run_cli("--config", str(held), "state", "rebuild", "--project", "1")

        assert EX_CANTCREAT == run.code

    def test_status_still_reads_held_state(self, held: Path) -> None:
        """`status` needs no lock, so it works beside a running daemon."""
        assert 0 == run_cli("--config", str(held), "status").code


# ---- a state dir that cannot be created -------------------------------------------------


class TestUncreatableStateDir:
    @pytest.fixture
    def blocked(self, tmp_path: Path) -> tuple[Path, Path]:
        """(config, state dir) where the state dir would have to live under a regular file."""
        regular_file = tmp_path / "not-a-directory"
        regular_file.write_text("a file where a directory should be\n")
        state_dir = regular_file / "state"
        return write_config(tmp_path, state_dir=state_dir), state_dir

    @pytest.mark.parametrize("command", ["once", "status"])
    def test_exits_73(self, blocked: tuple[Path, Path], command: str) -> None:
        """A state dir under a regular file makes every state command exit 73."""
        config, _ = blocked

        assert EX_CANTCREAT == run_cli("--config", str(config), command).code

    def test_message_names_the_state_dir(self, blocked: tuple[Path, Path]) -> None:
        """The refusal names the directory that could not be created."""
        config, state_dir = blocked

        assert str(state_dir) in run_cli("--config", str(config), "status").stderr

    def test_process_prints_no_traceback(self, blocked: tuple[Path, Path]) -> None:
        """The real process exits 73 with a message and no traceback."""
        config, _ = blocked
        completed = run_process("--config", str(config), "once")

        assert (EX_CANTCREAT, False) == (completed.returncode, "Traceback" in completed.stderr)


# ---- a corrupt database ------------------------------------------------------------------


class TestCorruptDatabase:
    @pytest.fixture(params=CORRUPTIONS)
    def damaged(self, request: pytest.FixtureRequest, tmp_path: Path) -> Path:
        """A config whose state holds a database damaged one of the CORRUPTIONS ways."""
        state_dir = tmp_path / "state"
        corrupt(populated_store(state_dir), request.param)
        return write_config(tmp_path, state_dir=state_dir)

    def test_status_exits_73(self, damaged: Path) -> None:
        """`status` on a corrupt database exits 73."""
        assert EX_CANTCREAT == run_cli("--config", str(damaged), "status").code

    def test_status_says_how_to_rebuild(self, damaged: Path) -> None:
        """The message tells the operator to run `aldaemon state rebuild --project ID`."""
        stderr = run_cli("--config", str(damaged), "status").stderr

        assert "aldaemon state rebuild --project ID" in stderr

    def test_daemon_start_exits_73(self, damaged: Path) -> None:
        """`once` on a corrupt database exits 73 before talking to Label Studio."""
        assert EX_CANTCREAT == run_cli("--config", str(damaged), "once").code

    def test_process_prints_no_traceback(self, damaged: Path) -> None:
        """The real `status` process on a corrupt database shows no traceback."""
        completed = run_process("--config", str(damaged), "status")

        assert (EX_CANTCREAT, False) == (completed.returncode, "Traceback" in completed.stderr)


class TestCorruptionAfterOpening:
    """Damage that appears while the store is open (a failing disk) is not a crash either."""

    @pytest.fixture
    def open_then_damaged(self, tmp_path: Path) -> Iterator[Store]:
        # Larger than SQLite's page cache, so a read must go to the damaged pages on disk.
        db_file = populated_store(tmp_path, tasks=4000, text_size=3000)
        store = Store.open(tmp_path, lock=False)
        data = bytearray(db_file.read_bytes())
        data[PAGE_SIZE * 2 : PAGE_SIZE * 200] = b"\xa5" * (PAGE_SIZE * 198)
        db_file.write_bytes(data)
        try:
            yield store
        finally:
            store.close()

    def test_read_raises_state_error_with_the_rebuild_hint(self, open_then_damaged: Store) -> None:
        """A read that meets a damaged page raises StateError naming the rebuild command."""
        with pytest.raises(StateError) as raised:
            open_then_damaged.unlabeled_tasks(1)

        assert REBUILD_HINT in str(raised.value)


class TestSoundDatabaseIsNeverQuarantined:
    """`state rebuild` moves a database aside only when it is damaged, never a sound one."""

    @pytest.fixture
    def from_newer_release(self, tmp_path: Path) -> tuple[Path, Path]:
        """(config, database) where the database was written by a newer aldaemon."""
        state_dir = tmp_path / "state"
        db_file = populated_store(state_dir)
        with contextlib.closing(sqlite3.connect(db_file)) as conn, conn:
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, 0)",
                (LATEST_SCHEMA_VERSION + 1,),
            )
        return write_config(tmp_path, state_dir=state_dir), db_file

    def test_rebuild_on_a_newer_database_exits_73(
        self, from_newer_release: tuple[Path, Path]
    ) -> None:
        """Rebuilding a newer release's database is refused with exit 73."""
        config, _ = from_newer_release
        run = run_cli("--config", str(config), "state", "rebuild", "--project", "1")

        assert EX_CANTCREAT == run.code

    def test_rebuild_leaves_a_newer_database_in_place(
        self, from_newer_release: tuple[Path, Path]
    ) -> None:
        """A newer release's database keeps its name and bytes after a refused rebuild."""
        config, db_file = from_newer_release
        before = db_file.read_bytes()
        run_cli("--config", str(config), "state", "rebuild", "--project", "1")

        assert before == db_file.read_bytes()

    def test_quarantine_refuses_a_sound_file(self, tmp_path: Path) -> None:
        """quarantine_database raises StateError for a file SQLite finds sound."""
        populated_store(tmp_path)

        with pytest.raises(StateError, match="not damaged"):
            quarantine_database(tmp_path, now=0.0)


# ---- rebuilding a corrupt database from the real Label Studio ------------------------


@dataclass(frozen=True)
class RebuildRun:
    project_id: int
    state_dir: Path
    rebuild: Run
    status: dict[str, Any]


@pytest.fixture(scope="module")
def rebuilt(
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> RebuildRun:
    """A project with 4 labels, its state built by `once`, corrupted, then rebuilt."""
    project_id = ls_client.create_project(title="rebuild after corruption")
    texts = ["lovely great", "great fine", "awful bad", "bad poor", "fine", "poor"]
    task_ids = ls_client.import_tasks(project_id, [{"text": text} for text in texts])
    for task_id, label in zip(task_ids, ["pos", "pos", "neg", "neg"], strict=False):
        ls_client.annotate(task_id, label)
    directory = tmp_path_factory.mktemp("rebuild")
    state_dir = directory / "state"
    config = write_config(
        directory,
        state_dir=state_dir,
        project_id=project_id,
        url=label_studio.url,
        token=label_studio.legacy_token,
    )
    first = run_cli("--config", str(config), "once")
    assert 0 == first.code, first.stderr  # the setup itself, not the behaviour under test
    corrupt(state_dir / DB_FILENAME, "damaged page")
    rebuild = run_cli("--config", str(config), "state", "rebuild", "--project", str(project_id))
    status = run_cli("--config", str(config), "status", "--json")
    report = json.loads(status.stdout) if status.code == 0 else {"error": status.stderr}
    return RebuildRun(project_id=project_id, state_dir=state_dir, rebuild=rebuild, status=report)


@pytest.mark.labelstudio
class TestRebuildCorruptState:
    def test_rebuild_succeeds(self, rebuilt: RebuildRun) -> None:
        """`state rebuild --project ID` on a corrupt database exits 0."""
        assert 0 == rebuilt.rebuild.code, rebuilt.rebuild.stderr

    def test_status_shows_the_labels_again(self, rebuilt: RebuildRun) -> None:
        """After the rebuild, `status` counts every label Label Studio holds."""
        projects = rebuilt.status.get("projects", [{}])

        assert {"pos": 2, "neg": 2} == projects[0].get("labels_per_class"), rebuilt.status

    def test_corrupt_file_is_kept_aside(self, rebuilt: RebuildRun) -> None:
        """The damaged database is moved aside for a post-mortem, not deleted."""
        kept = sorted(path.name for path in rebuilt.state_dir.glob(f"{DB_FILENAME}.corrupt-*"))

        assert 1 == len(kept), kept
