"""Model versions, with one typed method per state transition (their predictions: predictions.py).

Each transition writes its state and the facts that come with it in one durable
transaction and returns the row as stored, so the caller never re-reads it. The states
and what may follow what are in `aldaemon.sync.versions`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aldaemon.errors import StateError
from aldaemon.records import PredictionRecord
from aldaemon.store.database import (
    ConstraintViolation,
    Tables,
    placeholders,
)
from aldaemon.store.encoding import from_json, to_json
from aldaemon.store.predictions import check_one_per_task, insert_predictions
from aldaemon.sync.versions import UNFINISHED_STATES, VersionRow, VersionState

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
    "backend_version",
)
_JSON_FIELDS = frozenset({"class_counts", "metrics"})
_VERSION_COLUMNS = ", ".join(("name", "number", "state", "created_at", *_VERSION_FIELDS))


class VersionTables(Tables):
    """The `versions` and `predictions` tables."""

    def next_version_number(self, project_id: int) -> int:
        """One above every number ever used here, failed and pruned versions included."""
        with self._reading() as conn:
            row = conn.execute(
                "SELECT MAX(number) FROM versions WHERE project_id = ?", (project_id,)
            ).fetchone()
        return int(row[0] or 0) + 1

    def create_version(
        self,
        project_id: int,
        *,
        name: str,
        number: int,
        label_changes: int | None = None,
        now: float,
    ) -> VersionRow:
        """Record a new version in state 'training' BEFORE training starts.

        `label_changes` is the sync counter the training starts from. A duplicate name or
        number raises StateError: reusing one would put two predictions on a task under
        one version in Label Studio.
        """
        try:
            with self._transaction(durable=True) as conn:
                conn.execute(
                    "INSERT INTO versions (project_id, name, number, state, created_at, "
                    "label_changes_at_training) VALUES (?, ?, ?, ?, ?, ?)",
                    (project_id, name, number, VersionState.TRAINING, now, label_changes),
                )
        except ConstraintViolation as exc:
            raise self._name_taken(project_id, name, number) from exc
        return self.require_version(project_id, name)

    def create_republished_version(
        self,
        project_id: int,
        *,
        name: str,
        number: int,
        source: VersionRow,
        class_counts: Mapping[str, int],
        predictions: Sequence[PredictionRecord],
        now: float,
    ) -> VersionRow:
        """Record `source`'s model republished as `name`, 'scored' with `predictions`, in
        one transaction (a crash leaves it whole or absent; see sync.removed_labels).

        Not a training: `trained_at` stays empty, so the retrain policy and the report go
        on counting from `source`. Its facts for `status` (labels, metrics) are copied.
        """
        check_one_per_task(predictions)
        try:
            with self._transaction(durable=True) as conn:
                conn.execute(
                    "INSERT INTO versions (project_id, name, number, state, created_at, "
                    "n_labels, class_counts, metrics, label_changes_at_training, "
                    "backend_version, n_predictions) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        project_id,
                        name,
                        number,
                        VersionState.SCORED,
                        now,
                        source.n_labels,
                        to_json(dict(class_counts)),
                        to_json(source.metrics),
                        source.label_changes_at_training,
                        source.backend_version,
                        len(predictions),
                    ),
                )
                insert_predictions(conn, project_id, name, predictions)
        except ConstraintViolation as exc:
            raise self._name_taken(project_id, name, number) from exc
        return self.require_version(project_id, name)

    def _name_taken(self, project_id: int, name: str, number: int) -> StateError:
        return StateError(
            f"version {name!r} (number {number}) already exists for project {project_id} "
            f"in {self.location}"
        )

    # --- transitions ----------------------------------------------------------------------

    def mark_trained(
        self,
        project_id: int,
        name: str,
        *,
        trained_at: float,
        n_labels: int,
        class_counts: Mapping[str, int],
        train_seconds: float,
        metrics: Mapping[str, Any] | None = None,
        artifact_path: str | None = None,
        backend_version: str | None = None,
    ) -> VersionRow:
        """Training finished: scoring may start.

        A built-in model has saved its file (`artifact_path`) and knows its `metrics`; an
        ML backend trained (or kept its model) and answers as `backend_version`.
        """
        return self._set_version(
            project_id,
            name,
            state=VersionState.TRAINED,
            trained_at=trained_at,
            n_labels=n_labels,
            class_counts=dict(class_counts),
            metrics=dict(metrics or {}),
            train_seconds=train_seconds,
            artifact_path=artifact_path,
            backend_version=backend_version,
        )

    def mark_scored(self, project_id: int, name: str, *, n_predictions: int) -> VersionRow:
        """Its predictions are stored (see `save_predictions`); nothing is uploaded yet."""
        return self._set_version(
            project_id,
            name,
            state=VersionState.SCORED,
            n_predictions=n_predictions,
            uploaded_count=None,  # set to 0 by `mark_uploading`: None means never sent
        )

    def set_prediction_count(self, project_id: int, name: str, n_predictions: int) -> VersionRow:
        """The stored predictions changed before the upload (a task was deleted)."""
        return self._set_version(project_id, name, n_predictions=n_predictions)

    def mark_uploading(self, project_id: int, name: str) -> VersionRow:
        """Written before the first batch goes to Label Studio."""
        # uploaded_count 0, not None: "None" means nothing was ever sent (see sync.drift).
        return self._set_version(project_id, name, state=VersionState.UPLOADING, uploaded_count=0)

    def record_upload_progress(self, project_id: int, name: str, uploaded_count: int) -> VersionRow:
        """Positions [0, uploaded_count) of the stored predictions are in Label Studio."""
        return self._set_version(project_id, name, uploaded_count=uploaded_count)

    def mark_uploaded(self, project_id: int, name: str, *, uploaded_count: int) -> VersionRow:
        """Label Studio holds exactly the version's predictions: it may become active."""
        return self._set_version(
            project_id, name, state=VersionState.UPLOADED, uploaded_count=uploaded_count
        )

    def mark_active(self, project_id: int, name: str, *, activated_at: float) -> VersionRow:
        """The project's active version, and the only one: a previous active one is
        superseded in the same transaction."""
        with self._transaction(durable=True) as conn:
            changed = conn.execute(
                "UPDATE versions SET state = ?, activated_at = ? WHERE project_id = ? AND name = ?",
                (VersionState.ACTIVE, activated_at, project_id, name),
            ).rowcount
            if changed == 0:
                raise LookupError(f"no version {name!r} for project {project_id}")
            conn.execute(
                "UPDATE versions SET state = ? WHERE project_id = ? AND state = ? AND name != ?",
                (VersionState.SUPERSEDED, project_id, VersionState.ACTIVE, name),
            )
        return self.require_version(project_id, name)

    def mark_superseded(self, project_id: int, name: str) -> VersionRow:
        """Complete but not (or no longer) active: a newer one is, a pin is, or it was empty."""
        return self._set_version(project_id, name, state=VersionState.SUPERSEDED)

    def mark_for_republish(self, project_id: int, name: str) -> VersionRow:
        """Its predictions were deleted in Label Studio: the stored ones are sent again."""
        return self._set_version(project_id, name, state=VersionState.SCORED, uploaded_count=None)

    def mark_pruned(self, project_id: int, name: str, *, pruned_at: float) -> VersionRow:
        """Its predictions are deleted from Label Studio."""
        return self._set_version(project_id, name, state=VersionState.PRUNED, pruned_at=pruned_at)

    def mark_failed(self, project_id: int, name: str, *, error: str) -> VersionRow:
        """Given up for good: never activated, pruned like any other."""
        return self._set_version(project_id, name, state=VersionState.FAILED, error=error)

    def _set_version(self, project_id: int, name: str, **fields: object) -> VersionRow:
        """Write some of a version's columns (JSON ones encoded); returns the row as stored."""
        columns = sorted(fields)
        values = [to_json(fields[c]) if c in _JSON_FIELDS else fields[c] for c in columns]
        assignments = ", ".join(f"{column} = ?" for column in columns)
        with self._transaction(durable=True) as conn:
            changed = conn.execute(
                f"UPDATE versions SET {assignments} WHERE project_id = ? AND name = ?",
                (*values, project_id, name),
            ).rowcount
        if changed == 0:
            raise LookupError(f"no version {name!r} for project {project_id}")
        return self.require_version(project_id, name)

    # --- reads ----------------------------------------------------------------------------

    def require_version(self, project_id: int, name: str) -> VersionRow:
        row = self.get_version(project_id, name)
        if row is None:
            raise LookupError(f"no version {name!r} for project {project_id}")
        return row

    def get_version(self, project_id: int, name: str) -> VersionRow | None:
        with self._reading() as conn:
            row = conn.execute(
                f"SELECT {_VERSION_COLUMNS} FROM versions WHERE project_id = ? AND name = ?",
                (project_id, name),
            ).fetchone()
        return None if row is None else _version_row(row)

    def list_versions(self, project_id: int) -> list[VersionRow]:
        """Every version of the project, oldest number first."""
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT {_VERSION_COLUMNS} FROM versions WHERE project_id = ? ORDER BY number",
                (project_id,),
            ).fetchall()
        return [_version_row(row) for row in rows]

    def unfinished_version(self, project_id: int) -> VersionRow | None:
        """The newest version a crash left between 'training' and 'uploaded', to resume."""
        marks = placeholders(len(UNFINISHED_STATES))
        with self._reading() as conn:
            row = conn.execute(
                f"SELECT {_VERSION_COLUMNS} FROM versions WHERE project_id = ? "
                f"AND state IN ({marks}) ORDER BY number DESC LIMIT 1",
                (project_id, *UNFINISHED_STATES),
            ).fetchone()
        return None if row is None else _version_row(row)


def _version_row(row: Sequence[Any]) -> VersionRow:
    values = dict(
        zip(("name", "number", "state", "created_at", *_VERSION_FIELDS), row, strict=True)
    )
    for column in _JSON_FIELDS & values.keys():
        values[column] = from_json(values[column])
    values["state"] = VersionState(values["state"])
    return VersionRow(**values)
