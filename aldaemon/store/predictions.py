"""The predictions of each model version: stored at fixed positions, read back in order.

Kept apart from versions.py (the version rows and their transitions); a version's
predictions are written when it is scored, or copied when it is republished.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from aldaemon.records import PredictionRecord
from aldaemon.store.database import Connection, Tables, VersionTable
from aldaemon.store.encoding import decode_labels, encode_labels, json_tuple, to_json

PREDICTIONS = VersionTable(
    name="predictions",
    record=PredictionRecord,
    order_by="position",
    decoders={"labels": decode_labels, "result": json_tuple},
)


class PredictionTables(Tables):
    """The `predictions` table: one row per task a version predicts, by position."""

    def save_predictions(
        self, project_id: int, version: str, predictions: Sequence[PredictionRecord]
    ) -> None:
        """Replace the version's predictions, at positions 0..n-1 in the given order.

        Fixed positions make upload batches the same after any restart. Two predictions
        for one task raise ValueError: Label Studio must never get two (invariant 2).
        """
        check_one_per_task(predictions)
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
            insert_predictions(conn, project_id, version, predictions)

    def load_predictions(self, project_id: int, version: str) -> list[PredictionRecord]:
        """The version's stored predictions in position order (empty if none)."""
        return self._version_rows(PREDICTIONS, project_id=project_id, version=version)

    def drop_predictions(self, project_id: int, version: str) -> None:
        """Forget the local copy of a pruned version's predictions; the version row stays."""
        self._drop_version_rows(PREDICTIONS, project_id=project_id, version=version)


def check_one_per_task(predictions: Sequence[PredictionRecord]) -> None:
    duplicates = [t for t, n in Counter(p.task_id for p in predictions).items() if n > 1]
    if duplicates:
        raise ValueError(f"more than one prediction for tasks {sorted(duplicates)[:20]}")


def insert_predictions(
    conn: Connection,
    project_id: int,
    version: str,
    predictions: Sequence[PredictionRecord],
) -> None:
    """Insert the version's predictions at positions 0..n-1 (inside the caller's
    transaction)."""
    conn.executemany(
        "INSERT INTO predictions (project_id, version, task_id, position, label, score, "
        "cluster, labels, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                project_id,
                version,
                p.task_id,
                position,
                p.label,
                p.score,
                p.cluster,
                encode_labels(p.labels),
                None if p.result is None else to_json(list(p.result)),
            )
            for position, p in enumerate(predictions)
        ],
    )
