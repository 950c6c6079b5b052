"""Local state: the only place aldaemon persists anything, behind one typed interface.

    __init__.py     Store (composed below) and the records it takes and returns
    database.py     what the tables need from a backend; the dialect differences
    sqlite.py       the default backend, one file: opening, checks, durability, quarantine
    postgres.py     the PostgreSQL backend ([state] dsn): connection, advisory lock
    ownership.py    replicas over one PostgreSQL: which one owns which project
    lock.py         the state directory and its flock
    migrations.py   numbered schema migrations, and how PostgreSQL reads them
    encoding.py     JSON columns
    annotations.py  tasks, annotations, sync state
    features.py     the unlabeled pool in chunks, and per-task features (model jobs)
    versions.py     model versions (one typed method per state transition), predictions
    meta.py         per-project facts and cycle history
    backend.py      ML backend projects: the backend's version, /predict answers per batch
    team.py         labeling-team state (views, stop set, suspects)

The store stores and returns rows; it decides nothing. Which annotation trains a task
(`sync.versions.training_examples`) and where the watermark moves (`reconcile.
next_watermark`) are the caller's decisions, passed in or applied to what it returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from aldaemon.errors import StateError
from aldaemon.secret import Secret
from aldaemon.store.annotations import AnnotationTables, SyncState
from aldaemon.store.backend import BackendTables
from aldaemon.store.database import ConstraintViolation, StoreAddress
from aldaemon.store.features import FeatureRow, FeatureTables, PoolRow
from aldaemon.store.lock import LOCK_FILENAME
from aldaemon.store.meta import CYCLES_KEPT_PER_PROJECT, CycleRow, MetaTables, ProjectMeta
from aldaemon.store.migrations import LATEST_SCHEMA_VERSION, MIGRATIONS, apply_migrations
from aldaemon.store.predictions import PredictionTables
from aldaemon.store.sqlite import (
    DB_FILENAME,
    REBUILD_HINT,
    SqliteDatabase,
    migrate_file,
    quarantine_database,
)
from aldaemon.store.team import TeamTables
from aldaemon.store.versions import VersionTables
from aldaemon.sync.versions import (
    UNFINISHED_STATES,
    AnnotatedTask,
    TrainingExample,
    VersionRow,
    VersionState,
)

if TYPE_CHECKING:
    from aldaemon.config import StateConfig

SCALE_EXTRA_HINT = "pip install 'aldaemon[scale]'"


class Store(
    AnnotationTables,
    VersionTables,
    PredictionTables,
    MetaTables,
    BackendTables,
    TeamTables,
    FeatureTables,
):
    """All local state of every project, behind methods that take and return plain data.

    Open with `Store.from_config(config.state)` (SQLite under `dir`, or PostgreSQL when a
    DSN is configured), `Store.open(state_dir)` or `Store.connect(dsn)`; close with
    `close()` or use it as a context manager. `lock=False` opens beside a running daemon
    (read-only commands); the default refuses a second daemon on the same state.
    """

    @classmethod
    def from_config(cls, state: StateConfig, *, lock: bool = True, shared: bool = False) -> Self:
        """`shared`: a replica's store, beside other replicas on PostgreSQL (SQLite: ignored)."""
        if state.dsn is None:
            return cls.open(state.dir, lock=lock)
        return cls.connect(state.dsn, password=state.password, lock=lock, shared=shared)

    @classmethod
    def open(cls, state_dir: Path, *, lock: bool = True) -> Self:
        """The SQLite state in `state_dir` (created if needed), checked and migrated."""
        return cls(SqliteDatabase.open(state_dir, lock=lock))

    @classmethod
    def reopen(cls, address: StoreAddress) -> Self:
        """The store at `address` (another process's `store.address`), for a model job:
        no lock, no integrity check (the daemon that made the address ran it)."""
        if address.dsn is not None:
            return cls.connect(address.dsn, password=address.password, lock=False)
        if address.state_dir is None:
            raise StateError("a store address names neither a state directory nor a DSN")
        return cls(SqliteDatabase.open(address.state_dir, lock=False, check=False))

    @classmethod
    def connect(cls, dsn: Secret, **options: Any) -> Self:
        """The PostgreSQL state at `dsn`, migrated; needs psycopg 3 (the `scale` extra).

        `options` are `PostgresDatabase.connect`'s: `password`, `lock`, `shared`.
        """
        try:
            from aldaemon.store.postgres import PostgresDatabase
        except ImportError as exc:
            raise StateError(
                f"[state] dsn needs psycopg 3, which is not installed ({exc}); {SCALE_EXTRA_HINT}"
            ) from None
        return cls(PostgresDatabase.connect(dsn, **options))


__all__ = [
    "CYCLES_KEPT_PER_PROJECT",
    "DB_FILENAME",
    "LATEST_SCHEMA_VERSION",
    "LOCK_FILENAME",
    "MIGRATIONS",
    "REBUILD_HINT",
    "UNFINISHED_STATES",
    "AnnotatedTask",
    "ConstraintViolation",
    "CycleRow",
    "FeatureRow",
    "PoolRow",
    "ProjectMeta",
    "Store",
    "StoreAddress",
    "SyncState",
    "TrainingExample",
    "VersionRow",
    "VersionState",
    "apply_migrations",
    "migrate_file",
    "quarantine_database",
]
