"""The SQLite backend: local state in one file, the default.

    STATE_DIR/                 mode 0700 (it holds everything we know about the projects)
      aldaemon.sqlite3         WAL mode; every table keyed by project_id
      aldaemon.lock            flock()ed by the one daemon that owns the directory

This module is the backend's plumbing (see database.py): opening, checking and migrating
the file, and the short transactions the table classes write in.

Durability. WAL with `synchronous=NORMAL` never corrupts the file and loses nothing on a
process crash or `kill -9`; only a power loss can roll back the last commits. That is
fine for what a poll re-reads from Label Studio anyway (tasks, annotations and the
watermark move together in one transaction, so they roll back together; cycle records
are history). It is NOT fine for a write that precedes a Label Studio call: if "version
v3 is uploading" were rolled back after batches landed, the next start would upload them
again (invariant 2). Those writes (versions, predictions, project meta) commit with
`synchronous=FULL`, one fsync each; there are a handful per cycle.

Every write is one short transaction (`BEGIN IMMEDIATE ... COMMIT`), never held across a
network call: the cycle reads, awaits Label Studio, then writes.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Self

import structlog

from aldaemon.errors import StateError
from aldaemon.store.database import DriverErrors, StoreAddress, driver_errors
from aldaemon.store.lock import LOCK_FILENAME, acquire_lock, make_state_dir, release_lock
from aldaemon.store.migrations import MIGRATIONS, Statement, apply_migrations

log = structlog.get_logger(__name__)

DB_FILENAME = "aldaemon.sqlite3"
REBUILD_HINT = "aldaemon state rebuild --project ID"
_SQLITE_ERRORS = DriverErrors(
    integrity=sqlite3.IntegrityError, unusable=(sqlite3.OperationalError,)
)


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """SQLITE_CORRUPT or SQLITE_NOTADB (extended codes included): the file is damaged."""
    primary = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _corrupt(db_path: Path, detail: str) -> StateError:
    return StateError(
        f"{db_path} is corrupt or not an aldaemon database ({detail}); move it aside and "
        f"rebuild local state from Label Studio with `{REBUILD_HINT}`"
    )


def _connect(db_path: Path, *, check: bool) -> sqlite3.Connection:
    """Open, verify (`check`) and migrate the database file; every failure names the path."""
    try:
        conn = sqlite3.connect(db_path, isolation_level=None, timeout=10.0, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StateError(f"cannot open {db_path}: {exc}") from exc
    try:
        # A model job reopening the daemon's file skips the check: it takes seconds on a
        # big file, and the daemon made it when it opened the file.
        problems = ["ok"]
        if check:
            problems = [str(row[0]) for row in conn.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise _corrupt(db_path, "; ".join(problems[:5]))
        journal = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(journal).lower() != "wal":
            log.warning("store.wal_unavailable", path=str(db_path), journal_mode=journal)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        applied = migrate_file(conn, db_path=db_path)
        if applied:
            log.info("store.migrated", path=str(db_path), applied=applied)
    except StateError:
        conn.close()
        raise
    except sqlite3.OperationalError as exc:
        conn.close()
        raise StateError(f"cannot use {db_path}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise _corrupt(db_path, str(exc)) from exc
    return conn


def migrate_file(
    conn: sqlite3.Connection,
    *,
    db_path: Path,
    migrations: Sequence[Sequence[Statement]] = MIGRATIONS,
    now: float | None = None,
) -> list[int]:
    """Bring the file up to `len(migrations)` in one BEGIN IMMEDIATE transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        applied = apply_migrations(
            conn, dialect="sqlite", location=str(db_path), migrations=migrations, now=now
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return applied


def _damage(db_path: Path) -> str | None:
    """What SQLite finds wrong with the file's bytes, or None when it finds them sound.

    Only SQLITE_CORRUPT/SQLITE_NOTADB or a failed quick_check count as damage; a file that
    cannot be opened or is locked right now is not evidence of corruption.
    """
    try:
        conn = sqlite3.connect(db_path, isolation_level=None, timeout=10.0)
    except sqlite3.Error:
        return None
    try:
        problems = [str(row[0]) for row in conn.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.DatabaseError as exc:
        return str(exc) if _is_corruption(exc) else None
    finally:
        conn.close()
    return None if problems == ["ok"] else "; ".join(problems[:5])


def quarantine_database(state_dir: Path, *, now: float) -> Path | None:
    """Move a corrupt database (and its -wal/-shm files) aside; returns where it went.

    For `aldaemon state rebuild` when `Store.open` said the file is corrupt: the next open
    starts from an empty file, which the rebuild fills from Label Studio. The bytes are
    kept, not deleted, for a post-mortem. Takes the directory's lock, so it refuses while
    a daemon runs. None when there was no database file.

    It checks the damage itself and refuses (StateError) a file SQLite finds sound: a
    database from a newer release, or one that was only busy, also fails `Store.open`, and
    moving it aside would throw away every project's good state.
    """
    state_dir = Path(state_dir)
    db_path = state_dir / DB_FILENAME
    if not db_path.exists():
        return None
    lock_fd = acquire_lock(state_dir / LOCK_FILENAME)
    try:
        if _damage(db_path) is None:
            raise StateError(
                f"{db_path} is not damaged (SQLite's quick_check passes), so it stays where it "
                "is; fix what opening it reported instead of rebuilding"
            )
        suffix = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        target = db_path.with_name(f"{DB_FILENAME}.corrupt-{suffix}")
        for extra in ("-wal", "-shm"):
            sidecar = db_path.with_name(DB_FILENAME + extra)
            if sidecar.exists():
                sidecar.rename(target.with_name(target.name + extra))
        db_path.rename(target)
    except OSError as exc:
        raise StateError(f"cannot move {db_path} aside: {exc.strerror or exc}") from exc
    finally:
        release_lock(lock_fd)
    log.warning("store.quarantined", path=str(db_path), moved_to=str(target))
    return target


class SqliteDatabase:
    """One checked SQLite connection, its lock, and the short transactions on it.

    Methods are synchronous and short: SQLite answers in well under a millisecond for the
    sizes a project has, which is cheaper than a thread hop from the event loop.
    """

    def __init__(self, *, conn: sqlite3.Connection, db_path: Path, lock_fd: int | None) -> None:
        """Use `open`; this only wires an already checked connection."""
        self._conn: sqlite3.Connection | None = conn
        self.db_path = db_path
        self._lock_fd = lock_fd
        self._mutex = threading.RLock()  # a stray to_thread() call must not interleave

    @classmethod
    def open(cls, state_dir: Path, *, lock: bool = True, check: bool = True) -> Self:
        """Open (creating if needed) the state in `state_dir`, checked and migrated.

        `lock=True` takes `state_dir/aldaemon.lock` for as long as the store is open, so two
        daemons never share a directory; read-only commands such as `status` and model jobs
        pass `lock=False` and can run beside the daemon (WAL lets readers and a writer
        coexist). `check=False` skips SQLite's quick_check (model jobs).
        """
        state_dir = Path(state_dir)
        make_state_dir(state_dir)
        lock_fd = acquire_lock(state_dir / LOCK_FILENAME) if lock else None
        db_path = state_dir / DB_FILENAME
        try:
            conn = _connect(db_path, check=check)
        except BaseException:
            if lock_fd is not None:
                release_lock(lock_fd)
            raise
        log.debug("store.opened", path=str(db_path), locked=lock)
        return cls(conn=conn, db_path=db_path, lock_fd=lock_fd)

    @property
    def location(self) -> str:
        return str(self.db_path)

    @property
    def address(self) -> StoreAddress:
        return StoreAddress(state_dir=self.db_path.parent)

    def close(self) -> None:
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._lock_fd is not None:
                release_lock(self._lock_fd)
                self._lock_fd = None

    @contextmanager
    def transaction(self, *, durable: bool) -> Iterator[sqlite3.Connection]:
        """One short write transaction; `durable` fsyncs it (see the module docstring)."""
        with self._mutex, self._sqlite_errors("write"):
            conn = self._live_connection()
            conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # a failed COMMIT may have rolled back already
                    conn.execute("ROLLBACK")
                raise

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        with self._mutex, self._sqlite_errors("read"):
            conn = self._live_connection()
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

    def refresh_statistics(self, tables: Sequence[str]) -> list[str]:
        """Nothing to do: SQLite plans the store's reads by their keys without statistics
        (bench/pool_chunk_plans.py measures the PostgreSQL side)."""
        return []

    @contextmanager
    def _sqlite_errors(self, verb: str) -> Iterator[None]:
        """SQLite's errors as ours, naming the file; corruption as such."""
        with driver_errors(_SQLITE_ERRORS, self.location, verb):
            try:
                yield
            except sqlite3.DatabaseError as exc:
                # `quick_check` at open cannot see damage done later (a failing disk).
                if _is_corruption(exc):
                    raise _corrupt(self.db_path, str(exc)) from exc
                raise

    def _live_connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StateError(f"the store at {self.db_path} is closed")
        return self._conn
