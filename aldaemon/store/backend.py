"""Local state of projects served by an ML backend (see aldaemon/loop/backend.py).

Scoring a pool through a backend's `/predict` takes many calls; each checked answer is
stored here, batch by batch, in one durable transaction, before the next call is made.
A crash or a backend restart then resumes with the tasks no stored batch holds, so no
task is scored twice for one version and nothing is lost. The rows are dropped once
the version's predictions are saved for upload.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aldaemon.store.database import Tables, VersionTable
from aldaemon.store.encoding import json_tuple, to_json


@dataclass(frozen=True)
class StoredBackendPrediction:
    """One checked prediction of a backend, as recorded for its batch."""

    batch: int
    task_id: int
    result: tuple[dict[str, Any], ...]
    score: float
    model_version: str | None


BACKEND_PREDICTIONS = VersionTable(
    name="backend_predictions",
    record=StoredBackendPrediction,
    order_by="batch, rowid",
    decoders={"result": json_tuple},
)


class BackendTables(Tables):
    """The backend's version per aldaemon version, and /predict answers per batch."""

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
        return self._version_rows(BACKEND_PREDICTIONS, project_id=project_id, version=version)

    def drop_backend_batches(self, project_id: int, version: str) -> None:
        self._drop_version_rows(BACKEND_PREDICTIONS, project_id=project_id, version=version)
