"""Per-project facts (pin, failure, view id, labeling config, last decision) and cycle history."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aldaemon.store.database import Tables, placeholders
from aldaemon.store.encoding import from_json, to_json

CYCLES_KEPT_PER_PROJECT = 1000  # a poll every 30 s would otherwise add a million rows a year
_META_FIELDS = ("pinned_version", "failure", "view_id", "schema", "last_decision")
_JSON_META_FIELDS = frozenset({"schema"})


@dataclass(frozen=True)
class ProjectMeta:
    """Per-project facts that are not sync state nor versions; all None until set."""

    pinned_version: str | None = None
    failure: str | None = None
    view_id: int | None = None
    schema: dict[str, Any] | None = None
    last_decision: str | None = None


@dataclass(frozen=True)
class CycleRow:
    """One recorded cycle; `finished_at` is None while it runs (or if the process died)."""

    cycle_id: str
    started_at: float
    finished_at: float | None
    outcome: str
    summary: dict[str, Any]


class MetaTables(Tables):
    """The `project_meta` and `cycles` tables, and what spans every table of a project."""

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
            schema=from_json(values["schema"]),
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
        values = [to_json(fields[c]) if c in _JSON_META_FIELDS else fields[c] for c in columns]
        assignments = ", ".join(f"{column} = excluded.{column}" for column in columns)
        with self._transaction(durable=True) as conn:
            conn.execute(
                f"INSERT INTO project_meta (project_id, {', '.join(columns)}) "
                f"VALUES (?, {placeholders(len(columns))}) "
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
            for table in ("annotations", "tasks", "task_features", "sync", "cycles"):
                conn.execute(f"DELETE FROM {table} WHERE project_id = ?", (project_id,))
            conn.execute(
                "UPDATE project_meta SET failure = NULL WHERE project_id = ?", (project_id,)
            )
