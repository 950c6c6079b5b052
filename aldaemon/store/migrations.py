"""Numbered schema migrations, applied in order when the store opens, on either backend.

Each release that changes the schema appends one entry to `MIGRATIONS`; a released entry
is never edited. A database written by a newer release is refused instead of guessed at.

The statements are SQLite's, which is what an existing file holds. PostgreSQL reads them
through `render`, by three fixed rules, so one list serves both:
  - INTEGER is BIGINT and REAL is DOUBLE PRECISION (PostgreSQL's REAL has 24 bits: a Unix
    time would lose its seconds); TEXT compares byte-wise (COLLATE "C"), as in SQLite;
    BLOB is BYTEA;
  - every table gets a `rowid` identity column, the insertion order SQLite gives every
    table implicitly (cycles and backend batches are ordered by it);
  - a statement the two spell differently is a `Spelled` pair (only a SQL JSON call).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from aldaemon.errors import StateError
from aldaemon.store.database import Connection
from aldaemon.sync.versions import VersionState

Dialect = Literal["sqlite", "postgresql"]


@dataclass(frozen=True)
class Spelled:
    """One migration statement as each dialect spells it."""

    sqlite: str
    postgresql: str


Statement = str | Spelled

_STATE_CHECK = ", ".join(f"'{state.value}'" for state in VersionState)

# One entry per release that changed the schema; never edit a released entry, append.
MIGRATIONS: tuple[tuple[Statement, ...], ...] = (
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
    # 2: `project_meta.label_set` was never written; the schema's labels live in `schema`.
    ("ALTER TABLE project_meta DROP COLUMN label_set",),
    # 3: multi-label projects. `annotations.labels` is the annotation's whole answer as a
    # JSON array (NULL: no answer; []: "none of these"); a stored single-choice label
    # becomes its one-element set. `predictions.labels` is a multi-label prediction's
    # labels (NULL for a single-choice one, whose `label` says it all).
    (
        "ALTER TABLE annotations ADD COLUMN labels TEXT",
        Spelled(
            sqlite="UPDATE annotations SET labels = json_array(label) WHERE label IS NOT NULL",
            postgresql="UPDATE annotations SET labels = json_build_array(label)::text "
            "WHERE label IS NOT NULL",
        ),
        "ALTER TABLE predictions ADD COLUMN labels TEXT",
    ),
    # 4: projects served by an ML backend (loop/backend.py). `versions.backend_version` is
    # the backend's own model_version behind an aldaemon version; `predictions.result` the
    # backend's result list (JSON), uploaded as is; `backend_predictions` holds checked
    # /predict answers batch by batch, so scoring resumes at the batch it stopped.
    (
        "ALTER TABLE versions ADD COLUMN backend_version TEXT",
        "ALTER TABLE predictions ADD COLUMN result TEXT",
        """CREATE TABLE backend_predictions (
            project_id INTEGER NOT NULL,
            version TEXT NOT NULL,
            batch INTEGER NOT NULL,
            task_id INTEGER NOT NULL,
            result TEXT NOT NULL,
            score REAL NOT NULL,
            model_version TEXT,
            PRIMARY KEY (project_id, version, task_id)
        )""",
    ),
    # 5: labeling teams (store/team.py): the ground-truth flag of an annotation, and one
    # JSON value per (project, key) for the label policy's, suspects' and stop signal's state.
    (
        "ALTER TABLE annotations ADD COLUMN ground_truth INTEGER NOT NULL DEFAULT 0",
        "CREATE TABLE team_state (project_id INTEGER NOT NULL, key TEXT NOT NULL, "
        "value TEXT NOT NULL, PRIMARY KEY (project_id, key))",
    ),
    # 6: per-task features of a model whose first step learns nothing (model/features.py),
    # computed once per task and text by the scoring job and read back on every re-score.
    (
        """CREATE TABLE task_features (
            project_id INTEGER NOT NULL,
            task_id INTEGER NOT NULL,
            featurizer TEXT NOT NULL,
            text_digest TEXT NOT NULL,
            features BLOB NOT NULL,
            PRIMARY KEY (project_id, task_id)
        )""",
    ),
)
LATEST_SCHEMA_VERSION = len(MIGRATIONS)

_SCHEMA_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version "
    "(version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
)
_POSTGRESQL_TYPES = {
    "INTEGER": "BIGINT",
    "REAL": "DOUBLE PRECISION",
    "TEXT": 'TEXT COLLATE "C"',
    "BLOB": "BYTEA",
}
_TYPE_WORD = re.compile(r"\b(INTEGER|REAL|TEXT|BLOB)\b")
_NEW_TABLE = re.compile(r"^(CREATE TABLE (?:IF NOT EXISTS )?\w+\s*\()", re.MULTILINE)


def render(statement: Statement, dialect: Dialect) -> str:
    """The statement as `dialect` runs it (see the module docstring for the rules)."""
    if isinstance(statement, Spelled):
        return statement.postgresql if dialect == "postgresql" else statement.sqlite
    if dialect == "sqlite":
        return statement
    typed = _TYPE_WORD.sub(lambda word: _POSTGRESQL_TYPES[word.group(1)], statement)
    return _NEW_TABLE.sub(r"\1rowid BIGINT GENERATED ALWAYS AS IDENTITY, ", typed)


def apply_migrations(
    conn: Connection,
    *,
    dialect: Dialect,
    location: str,
    migrations: Sequence[Sequence[Statement]] = MIGRATIONS,
    now: float | None = None,
) -> list[int]:
    """Bring the database up to `len(migrations)`, in order, in the caller's transaction.

    The caller holds the transaction exclusively (two openers never migrate at once).
    Returns the versions applied. A database from a newer release raises StateError: an
    old daemon writing into a schema it does not understand would corrupt it quietly.
    """
    conn.execute(render(_SCHEMA_VERSION_TABLE, dialect))
    current = int(conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0)
    if current > len(migrations):
        raise StateError(
            f"{location} was written by a newer aldaemon release (schema {current}, this "
            f"release knows up to {len(migrations)}); upgrade aldaemon, or point "
            "[state] dir or dsn elsewhere"
        )
    applied = []
    for version in range(current + 1, len(migrations) + 1):
        for statement in migrations[version - 1]:
            conn.execute(render(statement, dialect))
        conn.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
            (version, time.time() if now is None else now),
        )
        applied.append(version)
    return applied
