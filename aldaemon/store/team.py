"""The labeling-team state of a project: small JSON values under fixed keys.

What the label policy, the suspected-label-error finder and the stop signal remember
between cycles (view ids, the stop set, each version's predictions on it, the suspects,
the announced stable version). Values are small and read whole, so one key-value table
serves them all without a migration per fact.
"""

from __future__ import annotations

import json
from typing import Any

from aldaemon.store.database import Tables

SUSPECTS = "suspects"  # {"version": name, "task_ids": [most suspect first]}
STOP_SET = "stop_set"  # [task ids]
STOP_PREDICTIONS = "stop_predictions"  # [[version, {task id: prediction key}], ...]
STABLE_SINCE = "stable_since"  # version name or None
STABLE_ANNOUNCED = "stable_announced"  # the stable_since value `project.stable` logged
REOPENED_FOR = "reopened_for"  # the last trained version `project.reopened` was logged for


class TeamTables(Tables):
    """`team_state`: one JSON value per (project, key)."""

    def suspects(self, project_id: int) -> list[int]:
        """Task ids of the latest suspected label errors, most suspect first."""
        value = self.team_value(project_id, SUSPECTS)
        return [int(t) for t in value["task_ids"]] if value else []

    def stable_since(self, project_id: int) -> str | None:
        """The version the project is stable since (sync.stopping), or None."""
        value = self.team_value(project_id, STABLE_SINCE)
        return str(value) if value else None

    def team_value(self, project_id: int, key: str) -> Any:
        """The stored value of `key`, or None when there is none."""
        with self._reading() as conn:
            row = conn.execute(
                "SELECT value FROM team_state WHERE project_id = ? AND key = ?",
                (project_id, key),
            ).fetchone()
        return None if row is None else json.loads(row[0])

    def set_team_value(self, project_id: int, key: str, value: Any) -> None:
        """Store `value` (JSON-serialisable) under `key`, replacing what was there."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO team_state (project_id, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT (project_id, key) DO UPDATE SET value = excluded.value",
                (project_id, key, json.dumps(value, separators=(",", ":"))),
            )
