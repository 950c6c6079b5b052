"""Local state of projects served by an ML backend (see aldaemon/loop/backend.py).

Scoring a pool through a backend's `/predict` takes many calls; each checked answer is
stored here, batch by batch, in one durable transaction, before the next call is made.
A crash or a backend restart then resumes with the tasks no stored batch holds, so no
task is scored twice for one version and nothing is lost. The rows are dropped once
the version's predictions are saved for upload.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aldaemon.store.database import Tables
from aldaemon.store.encoding import from_json, to_json
from aldaemon.sync.versions import VersionState


@dataclass(frozen=True)
class StoredBackendPrediction:
    """One checked prediction of a backend, as recorded for its batch."""

    batch: int
    task_id: int
    result: tuple[dict[str, Any], ...]
    score: float
    model_version: str | None


class BackendTables(Tables):
    """The backend's version per aldaemon version, and /predict answers per batch."""

    def mark_backend_trained(
        self,
        project_id: int,
        name: str,
        *,
        trained_at: float,
        n_labels: int,
        class_counts: Mapping[str, int],
        train_seconds: float,
        backend_version: str | None,
    ) -> None:
        """The backend trained (or kept its model): scoring may start."""
        with self._transaction(durable=True) as conn:
            changed = conn.execute(
                "UPDATE versions SET state = ?, trained_at = ?, n_labels = ?, class_counts = ?, "
                "metrics = ?, train_seconds = ?, backend_version = ? "
                "WHERE project_id = ? AND name = ?",
                (
                    VersionState.TRAINED.value,
                    trained_at,
                    n_labels,
                    to_json(dict(class_counts)),
                    to_json({}),
                    train_seconds,
                    backend_version,
                    project_id,
                    name,
                ),
            ).rowcount
        if changed == 0:
            raise LookupError(f"no version {name!r} for project {project_id}")

    def record_backend_batch(
        self,
        project_id: int,
        version: str,
        *,
        batch: int,
        predictions: Sequence[StoredBackendPrediction],
    ) -> None:
        """Store one checked /predict answer; a task already stored raises (no rescoring)."""
        with self._transaction(durable=True) as conn:
            conn.executemany(
                "INSERT INTO backend_predictions (project_id, version, batch, task_id, result, "
                "score, model_version) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        project_id,
                        version,
                        batch,
                        p.task_id,
                        to_json(list(p.result)),
                        p.score,
                        p.model_version,
                    )
                    for p in predictions
                ],
            )

    def backend_batches(self, project_id: int, version: str) -> list[StoredBackendPrediction]:
        """Every recorded prediction of the version, in batch order then as answered."""
        rows = self._version_rows(
            table="backend_predictions",
            columns="batch, task_id, result, score, model_version",
            order_by="batch, rowid",
            project_id=project_id,
            version=version,
        )
        return [
            StoredBackendPrediction(
                batch=row[0],
                task_id=row[1],
                result=tuple(from_json(row[2])),
                score=row[3],
                model_version=row[4],
            )
            for row in rows
        ]

    def drop_backend_batches(self, project_id: int, version: str) -> None:
        self._drop_version_rows(table="backend_predictions", project_id=project_id, version=version)
