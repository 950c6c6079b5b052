"""The PostgreSQL store: chosen by [state] dsn, one daemon per database, no password shown.

What every backend does alike is in test_store.py (its `store` runs on both); this file is
what only PostgreSQL has: the DSN and its password, the advisory lock, reconnecting, and
the schema as PostgreSQL types it. Tests need PostgreSQL on 127.0.0.1:5432 (see
tests/conftest.py): they skip without it, and fail instead when CI=true.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from aldaemon.config import load_config
from aldaemon.errors import ConfigError, StateError, StateLockedError
from aldaemon.loop.poll import record_poll
from aldaemon.records import TaskRecord
from aldaemon.secret import Secret
from aldaemon.store import LATEST_SCHEMA_VERSION, Store, SyncState
from aldaemon.store.backend import StoredBackendPrediction
from aldaemon.sync.reconcile import diff
from aldaemon.views.status import collect, render_text
from tests.helpers import captured_events, start_ready_python, stop_process

pytestmark = pytest.mark.postgres

P = 7
T0 = "2026-11-29T06:00:00.000000Z"
PASSWORD = "pg-pass-8c41f0"  # trust auth accepts any password; none may ever be shown

HOLD_LOCK = textwrap.dedent(
    """
    import sys
    from aldaemon.secret import Secret
    from aldaemon.store import Store
    store = Store.connect(Secret(sys.argv[1]))
    print("ready", flush=True)
    sys.stdin.read()
    """
)


@pytest.fixture
def holder(state_dsn: Secret) -> Iterator[subprocess.Popen[str]]:
    """Another process whose store holds the database's daemon lock until killed."""
    process = start_ready_python(HOLD_LOCK, state_dsn.reveal())
    try:
        yield process
    finally:
        stop_process(process)


def connect_when_free(dsn: Secret, *, timeout: float = 30.0) -> Store:
    """Connect as soon as PostgreSQL has ended the previous holder's session."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return Store.connect(dsn)
        except StateLockedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # polling a condition: PostgreSQL notices the dead socket


def with_password(dsn: Secret) -> Secret:
    """The same DSN with PASSWORD in it, as a dsn_file or ALDAEMON_STATE_DSN carries it."""
    user, rest = dsn.reveal().removeprefix("postgresql://").split("@", 1)
    return Secret(f"postgresql://{user.split(':')[0]}:{PASSWORD}@{rest}")


def config_file(tmp_path: Path, state: str) -> Path:
    """A config with one project whose [state] is `dir` plus the lines in `state`."""
    path = tmp_path / "config.toml"
    path.write_text(
        f'[labelstudio]\nurl = "http://ls"\ntoken = "t"\n[state]\ndir = "{tmp_path}"\n{state}\n'
        f"[[projects]]\nid = {P}\n"
    )
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def session_pids(dsn: Secret) -> list[int]:
    """The PostgreSQL backends of aldaemon stores connected to the database."""
    with psycopg.connect(dsn.reveal(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name LIKE 'aldaemon pid %'"
        ).fetchall()
    return [int(row[0]) for row in rows]


class TestLock:
    def test_second_daemon_on_the_database_is_refused(
        self, holder: subprocess.Popen[str], state_dsn: Secret
    ) -> None:
        """A second locking connect is refused, naming the holder's pid and the database."""
        with pytest.raises(StateLockedError) as info:
            Store.connect(state_dsn)
        assert f"another aldaemon (aldaemon pid {holder.pid} on {socket.gethostname()}, " in str(
            info.value
        ) and f"holds the lock on {state_dsn.reveal()}; stop it first" in str(info.value)

    def test_killed_holder_frees_the_lock(
        self, holder: subprocess.Popen[str], state_dsn: Secret
    ) -> None:
        """SIGKILL ends the holder's session, and with it the lock: a restart gets in."""
        holder.kill()
        holder.wait()
        with connect_when_free(state_dsn) as again:
            assert SyncState() == again.sync_state(P)

    def test_close_releases_the_lock(self, state_dsn: Secret) -> None:
        Store.connect(state_dsn).close()
        with Store.connect(state_dsn) as again:
            assert [] == again.project_ids()

    def test_reader_opens_beside_the_daemon_and_sees_its_data(self, state_dsn: Secret) -> None:
        """`lock=False` (status, report) connects beside a daemon and reads what it wrote."""
        with Store.connect(state_dsn) as daemon, Store.connect(state_dsn, lock=False) as reader:
            daemon.set_meta(P, view_id=3)
            assert 3 == reader.get_meta(P).view_id

    def test_lost_session_reconnects_and_locks_again(self, state_dsn: Secret) -> None:
        """After PostgreSQL ends the session (a restart), the next call reconnects and relocks."""
        with Store.connect(state_dsn) as daemon:
            (pid,) = session_pids(state_dsn)
            with psycopg.connect(state_dsn.reveal(), autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            with pytest.raises(StateError, match="cannot read"):
                daemon.sync_state(P)  # the call that finds the session gone fails once
            daemon.set_meta(P, view_id=5)
            assert (5, 1) == (daemon.get_meta(P).view_id, len(session_pids(state_dsn)))
            with pytest.raises(StateLockedError):
                Store.connect(state_dsn)

    def test_lock_taken_meanwhile_stops_the_reconnect(self, state_dsn: Secret) -> None:
        """If another daemon took the lock while the session was gone, this one stops."""
        with Store.connect(state_dsn) as daemon:
            (pid,) = session_pids(state_dsn)
            with psycopg.connect(state_dsn.reveal(), autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            with pytest.raises(StateError):
                daemon.sync_state(P)
            with connect_when_free(state_dsn) as other, pytest.raises(StateLockedError):
                other.set_meta(P, view_id=1)
                daemon.set_meta(P, view_id=2)
            with Store.connect(state_dsn, lock=False) as reader:
                assert 1 == reader.get_meta(P).view_id


class TestSchema:
    def test_every_migration_once(self, state_dsn: Secret) -> None:
        Store.connect(state_dsn).close()
        Store.connect(state_dsn).close()
        with psycopg.connect(state_dsn.reveal()) as conn:
            rows = conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert [(n,) for n in range(1, LATEST_SCHEMA_VERSION + 1)] == rows

    def test_database_from_a_newer_release_is_refused(self, state_dsn: Secret) -> None:
        Store.connect(state_dsn).close()
        with psycopg.connect(state_dsn.reveal(), autocommit=True) as conn:
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (%s, 0)",
                (LATEST_SCHEMA_VERSION + 1,),
            )
        with pytest.raises(StateError, match="newer aldaemon release") as info:
            Store.connect(state_dsn)
        assert state_dsn.reveal() in str(info.value)

    def test_a_user_who_may_not_create_tables_is_told_so(self, state_dsn: Secret) -> None:
        """PostgreSQL 15 lets only the owner create in `public`: a clear StateError, no trace."""
        role = f"aldaemon_test_weak_{os.getpid()}"
        with psycopg.connect(state_dsn.reveal(), autocommit=True) as admin:
            admin.execute(f'CREATE ROLE "{role}" LOGIN')
            admin.execute(f'GRANT USAGE ON SCHEMA public TO "{role}"')
        weak = Secret(f"postgresql://{role}@{state_dsn.reveal().split('@', 1)[1]}")
        try:
            with pytest.raises(StateError) as info:
                Store.connect(weak)
        finally:
            with psycopg.connect(state_dsn.reveal(), autocommit=True) as admin:
                admin.execute(f'DROP OWNED BY "{role}"')
                admin.execute(f'DROP ROLE "{role}"')
        assert f"cannot connect to {weak.reveal()}: permission denied for schema public" == str(
            info.value
        )

    def test_times_and_ids_keep_every_digit(self, state_dsn: Secret) -> None:
        """Unix times stay exact (not PostgreSQL's 4-byte REAL); ids beyond 2^31 fit."""
        big = 2**40 + 3
        now = 1_790_000_000.123456
        with Store.connect(state_dsn) as store:
            store.set_meta(big, view_id=big)
            store.create_version(big, name="v1", number=1, now=now)
            version = store.get_version(big, "v1")
            assert (big, now) == (store.get_meta(big).view_id, version and version.created_at)

    def test_text_compares_byte_wise_as_in_sqlite(self, state_dsn: Secret) -> None:
        with Store.connect(state_dsn), psycopg.connect(state_dsn.reveal()) as conn:
            collations = conn.execute(
                "SELECT DISTINCT collation_name FROM information_schema.columns "
                "WHERE table_schema = 'public' AND data_type = 'text'"
            ).fetchall()
        assert [("C",)] == collations


class TestPlannerStatistics:
    """PostgreSQL plans the pool's reads as if each table held one row until it has
    statistics (autovacuum off, or not yet come round after a bulk first sync)."""

    def test_a_filled_store_is_analyzed_before_its_pool_is_read(self, state_dsn: Secret) -> None:
        tasks = [TaskRecord(id=n, updated_at=T0, text=f"task {n}") for n in range(1, 1501)]
        with Store.connect(state_dsn) as store, psycopg.connect(state_dsn.reveal()) as conn:
            record_poll(store, P, diff(tasks, {}), now=1.0)
            before = planner_rows(conn, "tasks")
            refreshed = store.refresh_pool_statistics()
            after = planner_rows(conn, "tasks")
        assert (-1.0, True, 1500.0) == (before, "tasks" in refreshed, after)

    def test_sqlite_needs_no_statistics(self, tmp_path: Path) -> None:
        with Store.open(tmp_path) as store:
            assert [] == store.refresh_pool_statistics()


def planner_rows(conn: psycopg.Connection[tuple[Any, ...]], table: str) -> float:
    """The planner's row count of `table` (pg_class.reltuples; -1: never analyzed)."""
    row = conn.execute(
        "SELECT reltuples FROM pg_class WHERE relname = %s AND relkind = 'r'", (table,)
    ).fetchone()
    assert row is not None
    return float(row[0])


class TestBothBackends:
    """Store methods the rest of the store suite leaves to Label Studio tests."""

    def test_backend_batches_come_back_in_answer_order(self, any_store: Store) -> None:
        any_store.create_version(P, name="v1", number=1, now=1.0)
        for batch, task_ids in enumerate(([9, 2, 5], [1, 7])):
            predictions = [
                StoredBackendPrediction(batch, t, ({"x": t},), 0.5, "m") for t in task_ids
            ]
            any_store.record_backend_batch(P, "v1", batch=batch, predictions=predictions)
        assert [9, 2, 5, 1, 7] == [p.task_id for p in any_store.backend_batches(P, "v1")]

    def test_team_values_round_trip(self, any_store: Store) -> None:
        any_store.set_team_value(P, "suspects", {"version": "v1", "task_ids": [3, 1]})
        any_store.set_team_value(P, "suspects", {"version": "v2", "task_ids": [4]})
        assert ([4], None) == (any_store.suspects(P), any_store.team_value(P, "nothing"))


class TestConfig:
    def test_without_a_dsn_the_store_is_sqlite(self, tmp_path: Path) -> None:
        config = load_config(config_file(tmp_path, ""), env={})
        with Store.from_config(config.state) as store:
            assert str(tmp_path / "aldaemon.sqlite3") == store.location

    def test_dsn_selects_postgresql(self, tmp_path: Path, state_dsn: Secret) -> None:
        config = load_config(config_file(tmp_path, f'dsn = "{state_dsn.reveal()}"'), env={})
        with Store.from_config(config.state) as store:
            assert state_dsn.reveal() == store.location

    def test_dsn_from_a_file_or_the_environment(self, tmp_path: Path, state_dsn: Secret) -> None:
        dsn_file = tmp_path / "dsn"
        dsn_file.write_text(with_password(state_dsn).reveal() + "\n")
        from_file = load_config(config_file(tmp_path, f'dsn_file = "{dsn_file}"'), env={})
        from_env = load_config(
            config_file(tmp_path, ""), env={"ALDAEMON_STATE_DSN": with_password(state_dsn).reveal()}
        )
        assert (with_password(state_dsn), with_password(state_dsn)) == (
            from_file.state.dsn,
            from_env.state.dsn,
        )

    def test_password_from_the_credential(self, tmp_path: Path, state_dsn: Secret) -> None:
        credentials = tmp_path / "credentials"
        credentials.mkdir()
        (credentials / "state-password").write_text(PASSWORD + "\n")
        config = load_config(
            config_file(tmp_path, f'dsn = "{state_dsn.reveal()}"'),
            env={"CREDENTIALS_DIRECTORY": str(credentials)},
        )
        assert Secret(PASSWORD) == config.state.password
        with Store.from_config(config.state) as store:
            assert [] == store.project_ids()

    def test_without_psycopg_the_error_names_the_extra(self) -> None:
        """A DSN on an install without psycopg says which extra to install, no traceback."""
        code = (
            "import sys; sys.modules['psycopg'] = None\n"
            "from aldaemon.secret import Secret\nfrom aldaemon.store import Store\n"
            "try:\n    Store.connect(Secret('postgresql://u@h/db'))\n"
            "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
        )
        run = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
        )
        assert run.stdout.startswith("StateError [state] dsn needs psycopg 3") and (
            "pip install 'aldaemon[scale]'" in run.stdout
        )

    def test_a_dsn_that_is_not_postgresql_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match=r"state.dsn: must start with \"postgresql://\""):
            load_config(config_file(tmp_path, 'dsn = "mysql://u@h/db"'), env={})


class TestPasswordNeverShown:
    def test_not_in_connection_errors(self, state_dsn: Secret) -> None:
        """Refused connection, unknown database: the messages name the DSN, never the password."""
        closed = with_password(state_dsn).reveal().replace(":5432/", f":{free_port()}/")
        unknown_db = with_password(state_dsn).reveal().rsplit("/", 1)[0] + "/no_such_db"
        messages = []
        for dsn, password in ((closed, None), (unknown_db, Secret(PASSWORD))):
            with pytest.raises(StateError) as info:
                Store.connect(Secret(dsn), password=password)
            messages.append(str(info.value))
            assert None is info.value.__cause__
        assert ([False, False], ["cannot connect to", "cannot connect to"]) == (
            [PASSWORD in m for m in messages],
            [m[: len("cannot connect to")] for m in messages],
        )

    def test_not_in_logs_status_or_reprs(self, tmp_path: Path, state_dsn: Secret) -> None:
        dsn_file = tmp_path / "dsn"
        dsn_file.write_text(with_password(state_dsn).reveal())
        config = load_config(config_file(tmp_path, f'dsn_file = "{dsn_file}"'), env={})
        with captured_events() as logs:
            with Store.from_config(config.state) as store:
                store.set_meta(P, view_id=1)
                shown = repr(store)
            report = collect(config)
        text = "\n".join([json.dumps(logs, default=str), shown, repr(config), json.dumps(report)])
        assert (False, state_dsn.reveal()) == (
            PASSWORD in text + render_text(report),
            report["store"],
        )
