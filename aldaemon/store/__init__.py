"""Local state: the only place aldaemon persists anything, behind one typed interface.

    __init__.py     Store (composed below) and the records it takes and returns
    sqlite.py       the backend: opening, checks, durability, transactions, quarantine
    lock.py         the state directory and its flock
    migrations.py   numbered schema migrations
    annotations.py  tasks, annotations, sync state
    versions.py     model versions (one typed method per state transition), predictions
    meta.py         per-project facts and cycle history
    backend.py      ML backend projects: the backend's version, /predict answers per batch
    team.py         labeling-team state (views, stop set, suspects)

The store stores and returns rows; it decides nothing. Which annotation trains a task
(`sync.versions.training_examples`) and where the watermark moves (`reconcile.
next_watermark`) are the caller's decisions, passed in or applied to what it returns.
"""

from __future__ import annotations

from aldaemon.store.annotations import AnnotationTables, SyncState
from aldaemon.store.backend import BackendTables
from aldaemon.store.lock import LOCK_FILENAME
from aldaemon.store.meta import CYCLES_KEPT_PER_PROJECT, CycleRow, MetaTables, ProjectMeta
from aldaemon.store.migrations import LATEST_SCHEMA_VERSION, MIGRATIONS, apply_migrations
from aldaemon.store.sqlite import DB_FILENAME, REBUILD_HINT, quarantine_database
from aldaemon.store.team import TeamTables
from aldaemon.store.versions import VersionTables
from aldaemon.sync.versions import (
    UNFINISHED_STATES,
    AnnotatedTask,
    TrainingExample,
    VersionRow,
    VersionState,
)


class Store(AnnotationTables, VersionTables, MetaTables, BackendTables, TeamTables):
    """All local state of every project, behind methods that take and return plain data.

    Open with `Store.open(state_dir)`; close with `close()` or use it as a context manager.
    """


__all__ = [
    "CYCLES_KEPT_PER_PROJECT",
    "DB_FILENAME",
    "LATEST_SCHEMA_VERSION",
    "LOCK_FILENAME",
    "MIGRATIONS",
    "REBUILD_HINT",
    "UNFINISHED_STATES",
    "AnnotatedTask",
    "CycleRow",
    "ProjectMeta",
    "Store",
    "SyncState",
    "TrainingExample",
    "VersionRow",
    "VersionState",
    "apply_migrations",
    "quarantine_database",
]
