"""Local state: the only place aldaemon persists anything, in one SQLite file.

    STATE_DIR/                 mode 0700 (it holds everything we know about the projects)
      aldaemon.sqlite3         WAL mode; every table keyed by project_id
      aldaemon.lock            flock()ed by the one daemon that owns the directory

Everything else talks to the `Store` class with plain records in and out, never SQL and
never sqlite3 objects, so a PostgreSQL backend can replace it behind the same methods.

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

Schema changes are numbered migrations applied in order, each release appending to
`MIGRATIONS`; a file written by a newer release is refused instead of guessed at.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import structlog

from aldaemon.errors import StateError, StateLockedError
from aldaemon.records import AnnotationRecord, PredictionRecord
from aldaemon.sync.labels import StoredAnnotation, choose_training_label
from aldaemon.sync.reconcile import DeletionDecision, ReconcileOutcome
from aldaemon.sync.watermark import Watermark, next_watermark

log = structlog.get_logger(__name__)

DB_FILENAME = "aldaemon.sqlite3"
LOCK_FILENAME = "aldaemon.lock"
REBUILD_HINT = "aldaemon state rebuild --project ID"

VERSION_STATES = (
    "training",
    "trained",
    "scored",
    "uploading",
    "uploaded",
    "active",
    "superseded",
    "pruned",
    "failed",
)
UNFINISHED_STATES = ("training", "trained", "scored", "uploading", "uploaded")
CYCLES_KEPT_PER_PROJECT = 1000  # a poll every 30 s would otherwise add a million rows a year
_IDS_PER_QUERY = 500  # well under SQLite's bound-parameter limit on every version

_STATE_CHECK = ", ".join(f"'{state}'" for state in VERSION_STATES)

# One entry per release that changed the schema; never edit a released entry, append.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE tasks (
            project_id INTEGER NOT NULL,
            id INTEGER NOT NULL,
            text TEXT,
            updated_at TEXT NOT NULL,
            deleted_at REAL,
            PRIMARY KEY (project_id, id)
        )""",
        """CREATE TABLE annotations (
            project_id INTEGER NOT NULL,
            id INTEGER NOT NULL,
            task_id INTEGER NOT NULL,
            label TEXT,
            was_cancelled INTEGER NOT NULL CHECK (was_cancelled IN (0, 1)),
            updated_at TEXT NOT NULL,
            completed_by INTEGER,
            deleted_at REAL,
            PRIMARY KEY (project_id, id),
            FOREIGN KEY (project_id, task_id) REFERENCES tasks (project_id, id)
        )""",
        "CREATE INDEX annotations_by_task ON annotations (project_id, task_id)",
        """CREATE TABLE sync (
            project_id INTEGER PRIMARY KEY,
            watermark TEXT,
            watermark_moved_at REAL,
            last_resync_at REAL,
            label_changes INTEGER NOT NULL DEFAULT 0 CHECK (label_changes >= 0),
            last_poll_at REAL
        )""",
        f"""CREATE TABLE versions (
            project_id INTEGER NOT NULL,
            name TEXT NOT NULL,
            number INTEGER NOT NULL,
            state TEXT NOT NULL CHECK (state IN ({_STATE_CHECK})),
            created_at REAL NOT NULL,
            trained_at REAL,
            n_labels INTEGER,
            class_counts TEXT,
            metrics TEXT,
            train_seconds REAL,
            label_changes_at_training INTEGER,
            artifact_path TEXT,
            n_predictions INTEGER,
            uploaded_count INTEGER,
            activated_at REAL,
            pruned_at REAL,
            error TEXT,
            PRIMARY KEY (project_id, name),
            UNIQUE (project_id, number)
        )""",
        """CREATE TABLE predictions (
            project_id INTEGER NOT NULL,
            version TEXT NOT NULL,
            task_id INTEGER NOT NULL,
            position INTEGER NOT NULL,
            label TEXT NOT NULL,
            score REAL NOT NULL,
            cluster INTEGER,
            PRIMARY KEY (project_id, version, position),
            UNIQUE (project_id, version, task_id),
            FOREIGN KEY (project_id, version) REFERENCES versions (project_id, name)
                ON DELETE CASCADE
        )""",
        """CREATE TABLE project_meta (
            project_id INTEGER PRIMARY KEY,
            pinned_version TEXT,
            failure TEXT,
            view_id INTEGER,
            schema TEXT,
            label_set TEXT,
            last_decision TEXT
        )""",
        """CREATE TABLE cycles (
            project_id INTEGER NOT NULL,
            cycle_id TEXT NOT NULL,
            started_at REAL NOT NULL,
            finished_at REAL,
            outcome TEXT NOT NULL,
            summary TEXT NOT NULL,
            PRIMARY KEY (project_id, cycle_id)
        )""",
        "CREATE INDEX cycles_by_start ON cycles (project_id, started_at)",
    ),
)
LATEST_SCHEMA_VERSION = len(MIGRATIONS)

_VERSION_FIELDS = (
    "state",
    "trained_at",
    "n_labels",
    "class_counts",
    "metrics",
    "train_seconds",
    "label_changes_at_training",
    "artifact_path",
    "n_predictions",
    "uploaded_count",
    "activated_at",
    "pruned_at",
    "error",
)
_META_FIELDS = ("pinned_version", "failure", "view_id", "schema", "label_set", "last_decision")
_JSON_FIELDS = frozenset({"class_counts", "metrics", "schema", "label_set"})


# --- records ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncState:
    """Where polling stands for one project; all None/0 before the first poll."""

    watermark: str | None = None
    watermark_moved_at: float | None = None
    last_resync_at: float | None = None
    label_changes: int = 0  # monotonic: the policy subtracts the value at the last training
    last_poll_at: float | None = None


@dataclass(frozen=True)
class VersionRow:
    """One model version the daemon created, with its progress through the publish steps."""

    name: str
    number: int
    state: str
    created_at: float
    trained_at: float | None = None
    n_labels: int | None = None
    class_counts: dict[str, int] | None = None
    metrics: dict[str, Any] | None = None
    train_seconds: float | None = None
    label_changes_at_training: int | None = None
    artifact_path: str | None = None
    n_predictions: int | None = None
    uploaded_count: int | None = None
    activated_at: float | None = None
    pruned_at: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class ProjectMeta:
    """Per-project facts that are not sync state nor versions; all None until set."""

    pinned_version: str | None = None
    failure: str | None = None
    view_id: int | None = None
    schema: dict[str, Any] | None = None
    label_set: list[str] | None = None
    last_decision: str | None = None


@dataclass(frozen=True)
class CycleRow:
    """One recorded cycle; `finished_at` is None while it runs (or if the process died)."""

    cycle_id: str
    started_at: float
    finished_at: float | None
    outcome: str
    summary: dict[str, Any]


# --- opening: directory, lock, file checks, migrations ------------------------------------


def _json_default(value: object) -> object:
    """numpy scalars (from the model worker) become plain numbers; anything else is a bug."""
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _to_json(value: object) -> str | None:
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, default=_json_default)


def _from_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _make_state_dir(state_dir: Path) -> None:
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(
            f"cannot create the state directory {state_dir}: {exc.strerror or exc}; "
            "point [state] dir at a directory the daemon's user can write"
        ) from exc
    if not state_dir.is_dir():
        raise StateError(f"the state directory {state_dir} exists but is not a directory")


def _read_holder_pid(lock_path: Path) -> str:
    try:
        text = lock_path.read_text().strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


def _acquire_lock(lock_path: Path) -> int:
    """Take the exclusive lock on the state dir and write our pid into the lock file.

    flock() is released by the kernel when the process dies, even on `kill -9`, so a stale
    file never blocks a restart. The file itself is never removed: unlinking a lock file
    races with the next opener.
    """
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StateError(
            f"cannot open the lock file {lock_path}: {exc.strerror or exc}; "
            "the state directory must be writable by the daemon's user"
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise StateLockedError(
                f"another aldaemon (pid {_read_holder_pid(lock_path)}) holds {lock_path}; "
                "stop it first, or give this one its own [state] dir"
            ) from exc
        raise StateError(f"cannot lock {lock_path}: {exc.strerror or exc}") from exc
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _release_lock(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _schema_version(conn: sqlite3.Connection) -> int:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if exists is None:
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def apply_migrations(
    conn: sqlite3.Connection,
    *,
    db_path: Path,
    migrations: Sequence[Sequence[str]] = MIGRATIONS,
    now: float | None = None,
) -> list[int]:
    """Bring the file up to `len(migrations)`, in order, in one write transaction.

    Returns the versions applied. A file from a newer release raises StateError: an old
    daemon writing into a schema it does not understand would corrupt it quietly.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        current = _schema_version(conn)
        if current > len(migrations):
            raise StateError(
                f"{db_path} was written by a newer aldaemon release (schema {current}, this "
                f"release knows up to {len(migrations)}); upgrade aldaemon, or point "
                "[state] dir elsewhere"
            )
        applied = []
        for version in range(current + 1, len(migrations) + 1):
            for statement in migrations[version - 1]:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                (version, time.time() if now is None else now),
            )
            applied.append(version)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return applied


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """SQLITE_CORRUPT or SQLITE_NOTADB (extended codes included): the file is damaged."""
    primary = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _corrupt(db_path: Path, detail: str) -> StateError:
    return StateError(
        f"{db_path} is corrupt or not an aldaemon database ({detail}); move it aside and "
        f"rebuild local state from Label Studio with `{REBUILD_HINT}`"
    )


def _connect(db_path: Path) -> sqlite3.Connection:
    """Open, verify and migrate the database file; every failure names the path."""
    try:
        conn = sqlite3.connect(db_path, isolation_level=None, timeout=10.0, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StateError(f"cannot open {db_path}: {exc}") from exc
    try:
        problems = [str(row[0]) for row in conn.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise _corrupt(db_path, "; ".join(problems[:5]))
        journal = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(journal).lower() != "wal":
            log.warning("store.wal_unavailable", path=str(db_path), journal_mode=journal)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        applied = apply_migrations(conn, db_path=db_path)
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


def _chunks(ids: Sequence[int], size: int = _IDS_PER_QUERY) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _placeholders(count: int) -> str:
    return ", ".join("?" * count)


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
    lock_fd = _acquire_lock(state_dir / LOCK_FILENAME)
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
        _release_lock(lock_fd)
    log.warning("store.quarantined", path=str(db_path), moved_to=str(target))
    return target


# --- the store ----------------------------------------------------------------------------


class Store:
    """All local state of every project, behind methods that take and return plain data.

    Open with `Store.open(state_dir)`; close with `close()` or use it as a context manager.
    Methods are synchronous and short: SQLite answers in well under a millisecond for the
    sizes a project has, which is cheaper than a thread hop from the event loop.
    """

    _VERSION_COLUMNS: ClassVar[str] = ", ".join(
        ("name", "number", "state", "created_at", *_VERSION_FIELDS)
    )

    def __init__(self, *, conn: sqlite3.Connection, db_path: Path, lock_fd: int | None) -> None:
        """Use `Store.open`; this only wires an already checked connection."""
        self._conn: sqlite3.Connection | None = conn
        self.db_path = db_path
        self._lock_fd = lock_fd
        self._mutex = threading.RLock()  # a stray to_thread() call must not interleave

    @classmethod
    def open(cls, state_dir: Path, *, lock: bool = True) -> Store:
        """Open (creating if needed) the state in `state_dir`, checked and migrated.

        `lock=True` takes `state_dir/aldaemon.lock` for as long as the store is open, so two
        daemons never share a directory; read-only commands such as `status` pass
        `lock=False` and can run beside the daemon (WAL lets readers and a writer coexist).
        """
        state_dir = Path(state_dir)
        _make_state_dir(state_dir)
        lock_fd = _acquire_lock(state_dir / LOCK_FILENAME) if lock else None
        db_path = state_dir / DB_FILENAME
        try:
            conn = _connect(db_path)
        except BaseException:
            if lock_fd is not None:
                _release_lock(lock_fd)
            raise
        log.debug("store.opened", path=str(db_path), locked=lock)
        return cls(conn=conn, db_path=db_path, lock_fd=lock_fd)

    def close(self) -> None:
        """Close the database and release the lock; closing twice is harmless."""
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._lock_fd is not None:
                _release_lock(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.db_path)!r})"

    # --- plumbing -----------------------------------------------------------------------

    @contextmanager
    def _transaction(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One short write transaction; `durable` fsyncs it (see the module docstring)."""
        with self._mutex:
            conn = self._live_connection()
            try:
                conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:  # a failed COMMIT may have rolled back already
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                raise StateError(f"cannot write {self.db_path}: {exc}") from exc
            except sqlite3.DatabaseError as exc:
                # `quick_check` at open cannot see damage done later (a failing disk).
                if _is_corruption(exc):
                    raise _corrupt(self.db_path, str(exc)) from exc
                raise

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for multi-query reads."""
        with self._mutex:
            conn = self._live_connection()
            try:
                conn.execute("BEGIN")
                try:
                    yield conn
                finally:
                    if conn.in_transaction:
                        conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                raise StateError(f"cannot read {self.db_path}: {exc}") from exc
            except sqlite3.DatabaseError as exc:
                if _is_corruption(exc):
                    raise _corrupt(self.db_path, str(exc)) from exc
                raise

    def _live_connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StateError(f"the store at {self.db_path} is closed")
        return self._conn

    @staticmethod
    def _ensure_sync_row(conn: sqlite3.Connection, project_id: int) -> None:
        conn.execute("INSERT OR IGNORE INTO sync (project_id) VALUES (?)", (project_id,))

    # --- sync and reconcile -------------------------------------------------------------

    def sync_state(self, project_id: int) -> SyncState:
        """Where polling stands for the project (defaults before the first poll)."""
        with self._reading() as conn:
            row = conn.execute(
                "SELECT watermark, watermark_moved_at, last_resync_at, label_changes, "
                "last_poll_at FROM sync WHERE project_id = ?",
                (project_id,),
            ).fetchone()
        if row is None:
            return SyncState()
        return SyncState(
            watermark=row[0],
            watermark_moved_at=row[1],
            last_resync_at=row[2],
            label_changes=int(row[3]),
            last_poll_at=row[4],
        )

    def known_annotations(
        self, project_id: int, task_ids: Collection[int]
    ) -> dict[int, list[StoredAnnotation]]:
        """Live annotations of the given tasks: the `known` side of `reconcile.diff`.

        Every requested task id is a key, with an empty list when nothing is stored.
        """
        ids = sorted(set(task_ids))
        known: dict[int, list[StoredAnnotation]] = {task_id: [] for task_id in ids}
        with self._reading() as conn:
            for chunk in _chunks(ids):
                rows = conn.execute(
                    "SELECT id, task_id, label, was_cancelled, updated_at FROM annotations "
                    f"WHERE project_id = ? AND deleted_at IS NULL "
                    f"AND task_id IN ({_placeholders(len(chunk))}) ORDER BY id",
                    (project_id, *chunk),
                ).fetchall()
                for row in rows:
                    known[row[1]].append(
                        StoredAnnotation(
                            id=row[0],
                            task_id=row[1],
                            label=row[2],
                            was_cancelled=bool(row[3]),
                            updated_at=row[4],
                            deleted=False,
                        )
                    )
        return known

    def apply_reconcile(self, project_id: int, outcome: ReconcileOutcome, *, now: float) -> None:
        """Store one poll's outcome and move the watermark, all in ONE transaction.

        The watermark moves only together with the changes it vouches for: a crash before
        the commit leaves both where they were, and the next poll reads the same tasks.
        """
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO tasks (project_id, id, text, updated_at, deleted_at) "
                "VALUES (?, ?, ?, ?, NULL) ON CONFLICT (project_id, id) DO UPDATE SET "
                "text = excluded.text, updated_at = excluded.updated_at, deleted_at = NULL",
                [(project_id, t.id, t.text, t.updated_at) for t in outcome.tasks],
            )
            conn.executemany(
                "INSERT INTO annotations (project_id, id, task_id, label, was_cancelled, "
                "updated_at, completed_by, deleted_at) VALUES (?, ?, ?, ?, ?, ?, ?, NULL) "
                "ON CONFLICT (project_id, id) DO UPDATE SET task_id = excluded.task_id, "
                "label = excluded.label, was_cancelled = excluded.was_cancelled, "
                "updated_at = excluded.updated_at, completed_by = excluded.completed_by, "
                "deleted_at = NULL",
                [_annotation_row(project_id, a) for a in (*outcome.created, *outcome.updated)],
            )
            conn.executemany(
                "UPDATE annotations SET deleted_at = ? "
                "WHERE project_id = ? AND id = ? AND deleted_at IS NULL",
                [(now, project_id, annotation_id) for annotation_id in outcome.deleted],
            )
            self._ensure_sync_row(conn, project_id)
            row = conn.execute(
                "SELECT watermark, watermark_moved_at FROM sync WHERE project_id = ?",
                (project_id,),
            ).fetchone()
            moved = next_watermark(
                current=Watermark(value=row[0], moved_at=row[1]),
                newest_updated_at=outcome.newest_updated_at,
                now=now,
            )
            conn.execute(
                "UPDATE sync SET label_changes = label_changes + ?, watermark = ?, "
                "watermark_moved_at = ?, last_poll_at = ? WHERE project_id = ?",
                (outcome.label_changes, moved.value, moved.moved_at, now, project_id),
            )

    def known_task_ids(self, project_id: int) -> set[int]:
        """Ids of the tasks local state holds as live (the resync compares them)."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT id FROM tasks WHERE project_id = ? AND deleted_at IS NULL",
                (project_id,),
            ).fetchall()
        return {int(row[0]) for row in rows}

    def apply_resync(self, project_id: int, decision: DeletionDecision, *, now: float) -> None:
        """Mark tasks a full listing no longer shows as deleted, with their annotations.

        A refused decision deletes nothing but still records the attempt, so a suspicious
        empty listing is retried at the resync interval rather than on every poll.
        """
        ids = sorted(decision.deleted_task_ids)
        with self._transaction() as conn:
            lost_labels = 0
            for chunk in _chunks(ids):
                marks = _placeholders(len(chunk))
                lost_labels += conn.execute(
                    "SELECT COUNT(*) FROM annotations WHERE project_id = ? AND deleted_at IS NULL "
                    f"AND was_cancelled = 0 AND label IS NOT NULL AND task_id IN ({marks})",
                    (project_id, *chunk),
                ).fetchone()[0]
                conn.execute(
                    "UPDATE annotations SET deleted_at = ? WHERE project_id = ? "
                    f"AND deleted_at IS NULL AND task_id IN ({marks})",
                    (now, project_id, *chunk),
                )
                conn.execute(
                    "UPDATE tasks SET deleted_at = ? WHERE project_id = ? "
                    f"AND deleted_at IS NULL AND id IN ({marks})",
                    (now, project_id, *chunk),
                )
            self._ensure_sync_row(conn, project_id)
            conn.execute(
                "UPDATE sync SET label_changes = label_changes + ?, last_resync_at = ? "
                "WHERE project_id = ?",
                (lost_labels, now, project_id),
            )

    # --- training data ------------------------------------------------------------------

    def labeled_examples(self, project_id: int) -> list[tuple[int, str, str]]:
        """(task_id, text, label) for every live task with text and a training label.

        The label is `reconcile.choose_training_label` of the task's live annotations, so
        the rule lives in one pure function. Tasks with no or blank text are left out: the
        scorer skips them too, and a blank text teaches the model nothing.
        """
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT t.id, t.text, a.id, a.label, a.was_cancelled, a.updated_at "
                "FROM tasks t JOIN annotations a "
                "ON a.project_id = t.project_id AND a.task_id = t.id "
                "WHERE t.project_id = ? AND t.deleted_at IS NULL AND a.deleted_at IS NULL "
                "AND a.was_cancelled = 0 AND a.label IS NOT NULL "
                "AND t.text IS NOT NULL AND TRIM(t.text) != '' ORDER BY t.id",
                (project_id,),
            ).fetchall()
        texts: dict[int, str] = {}
        annotations: defaultdict[int, list[StoredAnnotation]] = defaultdict(list)
        for task_id, text, annotation_id, label, was_cancelled, updated_at in rows:
            texts[task_id] = text
            annotations[task_id].append(
                StoredAnnotation(
                    id=annotation_id,
                    task_id=task_id,
                    label=label,
                    was_cancelled=bool(was_cancelled),
                    updated_at=updated_at,
                )
            )
        examples = []
        for task_id, text in texts.items():
            label = choose_training_label(annotations[task_id])
            if label is not None:
                examples.append((task_id, text, label))
        return examples

    def unlabeled_tasks(self, project_id: int) -> list[tuple[int, str | None]]:
        """(task_id, text) of live tasks with no live non-skip annotation, by id: the pool.

        A task that was only skipped stays in the pool: a skip says nothing about its label.
        """
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT t.id, t.text FROM tasks t WHERE t.project_id = ? "
                "AND t.deleted_at IS NULL AND NOT EXISTS (SELECT 1 FROM annotations a "
                "WHERE a.project_id = t.project_id AND a.task_id = t.id "
                "AND a.deleted_at IS NULL AND a.was_cancelled = 0) ORDER BY t.id",
                (project_id,),
            ).fetchall()
        return [(int(row[0]), row[1]) for row in rows]

    def label_counts(self, project_id: int) -> dict[str, int]:
        """Training examples per label, counted exactly as `labeled_examples` yields them."""
        return dict(Counter(label for _, _, label in self.labeled_examples(project_id)))

    def label_timeline(self, project_id: int) -> list[tuple[str, str]]:
        """(updated_at, label) of every live, non-skip, labeled annotation on a live task,
        oldest first: the labels-over-time plot of `aldaemon report`.

        `updated_at` is Label Studio's timestamp of the annotation's last change, so an
        edited annotation counts from its edit; a deleted one does not count at all.
        """
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT a.updated_at, a.label FROM annotations a JOIN tasks t "
                "ON t.project_id = a.project_id AND t.id = a.task_id "
                "WHERE a.project_id = ? AND a.deleted_at IS NULL AND t.deleted_at IS NULL "
                "AND a.was_cancelled = 0 AND a.label IS NOT NULL "
                "ORDER BY a.updated_at, a.id",
                (project_id,),
            ).fetchall()
        return [(str(row[0]), str(row[1])) for row in rows]

    def annotation_stats(self, project_id: int) -> dict[str, int]:
        """Counts for `status` and metrics, over live rows only.

        Keys: `tasks` (live tasks), `annotations` (live, skips excluded), `skips`,
        `labeled_tasks` (tasks with a training label), `multi_annotated_tasks` (tasks with
        two or more live non-skip annotations).
        """
        with self._reading() as conn:
            tasks = conn.execute(
                "SELECT COUNT(*) FROM tasks WHERE project_id = ? AND deleted_at IS NULL",
                (project_id,),
            ).fetchone()[0]
            annotations, skips = conn.execute(
                "SELECT COALESCE(SUM(a.was_cancelled = 0), 0), COALESCE(SUM(a.was_cancelled), 0) "
                "FROM annotations a JOIN tasks t "
                "ON t.project_id = a.project_id AND t.id = a.task_id "
                "WHERE a.project_id = ? AND a.deleted_at IS NULL AND t.deleted_at IS NULL",
                (project_id,),
            ).fetchone()
            multi = conn.execute(
                "SELECT COUNT(*) FROM (SELECT a.task_id FROM annotations a JOIN tasks t "
                "ON t.project_id = a.project_id AND t.id = a.task_id "
                "WHERE a.project_id = ? AND a.deleted_at IS NULL AND t.deleted_at IS NULL "
                "AND a.was_cancelled = 0 GROUP BY a.task_id HAVING COUNT(*) >= 2)",
                (project_id,),
            ).fetchone()[0]
        return {
            "tasks": int(tasks),
            "annotations": int(annotations),
            "skips": int(skips),
            "labeled_tasks": len(self.labeled_examples(project_id)),
            "multi_annotated_tasks": int(multi),
        }

    # --- versions -----------------------------------------------------------------------

    def next_version_number(self, project_id: int) -> int:
        """One above every number ever used here, failed and pruned versions included."""
        with self._reading() as conn:
            row = conn.execute(
                "SELECT MAX(number) FROM versions WHERE project_id = ?", (project_id,)
            ).fetchone()
        return int(row[0] or 0) + 1

    def create_version(self, project_id: int, *, name: str, number: int, now: float) -> None:
        """Record a new version in state 'training' BEFORE training starts.

        A duplicate name or number raises StateError: reusing one would put two
        predictions on a task under one version in Label Studio.
        """
        try:
            with self._transaction(durable=True) as conn:
                conn.execute(
                    "INSERT INTO versions (project_id, name, number, state, created_at) "
                    "VALUES (?, ?, ?, 'training', ?)",
                    (project_id, name, number, now),
                )
        except sqlite3.IntegrityError as exc:
            raise StateError(
                f"version {name!r} (number {number}) already exists for project {project_id} "
                f"in {self.db_path}"
            ) from exc

    def update_version(self, project_id: int, name: str, **fields: object) -> None:
        """Set some of a version's columns; only the known ones, JSON columns encoded."""
        if not fields:
            return
        unknown = sorted(set(fields) - set(_VERSION_FIELDS))
        if unknown:
            raise ValueError(f"not updatable version fields: {', '.join(unknown)}")
        if "state" in fields and fields["state"] not in VERSION_STATES:
            raise ValueError(f"unknown version state {fields['state']!r}")
        columns = sorted(fields)
        values = [_to_json(fields[c]) if c in _JSON_FIELDS else fields[c] for c in columns]
        assignments = ", ".join(f"{column} = ?" for column in columns)
        with self._transaction(durable=True) as conn:
            changed = conn.execute(
                f"UPDATE versions SET {assignments} WHERE project_id = ? AND name = ?",
                (*values, project_id, name),
            ).rowcount
        if changed == 0:
            raise LookupError(f"no version {name!r} for project {project_id}")

    def get_version(self, project_id: int, name: str) -> VersionRow | None:
        with self._reading() as conn:
            row = conn.execute(
                f"SELECT {self._VERSION_COLUMNS} FROM versions WHERE project_id = ? AND name = ?",
                (project_id, name),
            ).fetchone()
        return None if row is None else _version_row(row)

    def list_versions(self, project_id: int) -> list[VersionRow]:
        """Every version of the project, oldest number first."""
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT {self._VERSION_COLUMNS} FROM versions WHERE project_id = ? "
                "ORDER BY number",
                (project_id,),
            ).fetchall()
        return [_version_row(row) for row in rows]

    def last_trained_version(self, project_id: int) -> VersionRow | None:
        """The newest version whose training finished (whatever happened to it since)."""
        trained = [
            v
            for v in self.list_versions(project_id)
            if v.trained_at is not None and v.state != "failed"
        ]
        return trained[-1] if trained else None

    def label_changes_since_training(self, project_id: int) -> int:
        """Label changes recorded since the last finished training: what the policy counts."""
        last = self.last_trained_version(project_id)
        at_training = (last.label_changes_at_training or 0) if last else 0
        return self.sync_state(project_id).label_changes - at_training

    def unfinished_version(self, project_id: int) -> VersionRow | None:
        """The newest version a crash left between 'training' and 'uploaded', to resume."""
        marks = _placeholders(len(UNFINISHED_STATES))
        with self._reading() as conn:
            row = conn.execute(
                f"SELECT {self._VERSION_COLUMNS} FROM versions WHERE project_id = ? "
                f"AND state IN ({marks}) ORDER BY number DESC LIMIT 1",
                (project_id, *UNFINISHED_STATES),
            ).fetchone()
        return None if row is None else _version_row(row)

    # --- predictions --------------------------------------------------------------------

    def save_predictions(
        self, project_id: int, version: str, predictions: Sequence[PredictionRecord]
    ) -> None:
        """Replace the version's predictions, at positions 0..n-1 in the given order.

        Fixed positions make upload batches the same after any restart. Two predictions
        for one task raise ValueError: Label Studio must never get two (invariant 2).
        """
        duplicates = [t for t, n in Counter(p.task_id for p in predictions).items() if n > 1]
        if duplicates:
            raise ValueError(f"more than one prediction for tasks {sorted(duplicates)[:20]}")
        with self._transaction(durable=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM versions WHERE project_id = ? AND name = ?", (project_id, version)
            ).fetchone()
            if exists is None:
                raise LookupError(f"no version {version!r} for project {project_id}")
            conn.execute(
                "DELETE FROM predictions WHERE project_id = ? AND version = ?",
                (project_id, version),
            )
            conn.executemany(
                "INSERT INTO predictions (project_id, version, task_id, position, label, score, "
                "cluster) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (project_id, version, p.task_id, position, p.label, p.score, p.cluster)
                    for position, p in enumerate(predictions)
                ],
            )

    def load_predictions(self, project_id: int, version: str) -> list[PredictionRecord]:
        """The version's stored predictions in position order (empty if none)."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT task_id, label, score, cluster FROM predictions "
                "WHERE project_id = ? AND version = ? ORDER BY position",
                (project_id, version),
            ).fetchall()
        return [
            PredictionRecord(task_id=row[0], label=row[1], score=row[2], cluster=row[3])
            for row in rows
        ]

    def drop_predictions(self, project_id: int, version: str) -> None:
        """Forget the local copy of a pruned version's predictions; the version row stays."""
        with self._transaction(durable=True) as conn:
            conn.execute(
                "DELETE FROM predictions WHERE project_id = ? AND version = ?",
                (project_id, version),
            )

    # --- meta and cycles ----------------------------------------------------------------

    def get_meta(self, project_id: int) -> ProjectMeta:
        with self._reading() as conn:
            row = conn.execute(
                f"SELECT {', '.join(_META_FIELDS)} FROM project_meta WHERE project_id = ?",
                (project_id,),
            ).fetchone()
        if row is None:
            return ProjectMeta()
        values = dict(zip(_META_FIELDS, row, strict=True))
        return ProjectMeta(
            pinned_version=values["pinned_version"],
            failure=values["failure"],
            view_id=values["view_id"],
            schema=_from_json(values["schema"]),
            label_set=_from_json(values["label_set"]),
            last_decision=values["last_decision"],
        )

    def set_meta(self, project_id: int, **fields: object) -> None:
        """Set some meta fields (None clears one); the others keep their values."""
        if not fields:
            return
        unknown = sorted(set(fields) - set(_META_FIELDS))
        if unknown:
            raise ValueError(f"not project meta fields: {', '.join(unknown)}")
        columns = sorted(fields)
        values = [_to_json(fields[c]) if c in _JSON_FIELDS else fields[c] for c in columns]
        assignments = ", ".join(f"{column} = excluded.{column}" for column in columns)
        with self._transaction(durable=True) as conn:
            conn.execute(
                f"INSERT INTO project_meta (project_id, {', '.join(columns)}) "
                f"VALUES (?, {_placeholders(len(columns))}) "
                f"ON CONFLICT (project_id) DO UPDATE SET {assignments}",
                (project_id, *values),
            )

    def record_cycle(
        self,
        project_id: int,
        *,
        cycle_id: str,
        started_at: float,
        finished_at: float | None,
        outcome: str,
        summary: Mapping[str, object],
    ) -> None:
        """Insert or update one cycle's row; finished cycles beyond the newest 1000 go."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO cycles (project_id, cycle_id, started_at, finished_at, outcome, "
                "summary) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (project_id, cycle_id) DO "
                "UPDATE SET started_at = excluded.started_at, finished_at = excluded.finished_at, "
                "outcome = excluded.outcome, summary = excluded.summary",
                (
                    project_id,
                    cycle_id,
                    started_at,
                    finished_at,
                    outcome,
                    json.dumps(dict(summary), sort_keys=True, default=str),
                ),
            )
            if finished_at is not None:
                conn.execute(
                    "DELETE FROM cycles WHERE project_id = ? AND rowid NOT IN (SELECT rowid "
                    "FROM cycles WHERE project_id = ? ORDER BY started_at DESC, rowid DESC "
                    "LIMIT ?)",
                    (project_id, project_id, CYCLES_KEPT_PER_PROJECT),
                )

    def last_cycle(self, project_id: int, *, finished_only: bool = False) -> CycleRow | None:
        """The most recently started cycle (or the most recent finished one)."""
        condition = "AND finished_at IS NOT NULL" if finished_only else ""
        with self._reading() as conn:
            row = conn.execute(
                "SELECT cycle_id, started_at, finished_at, outcome, summary FROM cycles "
                f"WHERE project_id = ? {condition} ORDER BY started_at DESC, rowid DESC LIMIT 1",
                (project_id,),
            ).fetchone()
        if row is None:
            return None
        return CycleRow(
            cycle_id=row[0],
            started_at=row[1],
            finished_at=row[2],
            outcome=row[3],
            summary=json.loads(row[4]),
        )

    def project_ids(self) -> list[int]:
        """Every project local state holds anything about, ascending."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT project_id FROM sync UNION SELECT project_id FROM tasks "
                "UNION SELECT project_id FROM versions UNION SELECT project_id FROM project_meta "
                "UNION SELECT project_id FROM cycles ORDER BY 1"
            ).fetchall()
        return [int(row[0]) for row in rows]

    def wipe_project(self, project_id: int) -> None:
        """Forget a project's tasks and labels, in one transaction (`state rebuild`).

        What the daemon CREATED stays: its versions (so they are still pruned and never
        reused), the queue view id and a pin. Only a failure mark is cleared.
        """
        with self._transaction(durable=True) as conn:
            for table in ("annotations", "tasks", "sync", "cycles"):
                conn.execute(f"DELETE FROM {table} WHERE project_id = ?", (project_id,))
            conn.execute(
                "UPDATE project_meta SET failure = NULL WHERE project_id = ?", (project_id,)
            )


def _annotation_row(
    project_id: int, annotation: AnnotationRecord
) -> tuple[int, int, int, str | None, int, str, int | None]:
    return (
        project_id,
        annotation.id,
        annotation.task_id,
        annotation.label,
        int(annotation.was_cancelled),
        annotation.updated_at,
        annotation.completed_by,
    )


def _version_row(row: Sequence[Any]) -> VersionRow:
    values = dict(
        zip(("name", "number", "state", "created_at", *_VERSION_FIELDS), row, strict=True)
    )
    for column in _JSON_FIELDS & values.keys():
        values[column] = _from_json(values[column])
    return VersionRow(**values)
