"""Predictions and model versions: the daemon's own writes, and the counts it checks them by.

The gateway "never edits what it did not create": every write here touches one model
version the daemon named (see `aldaemon.sync` for how versions are named and owned).
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from aldaemon.labelstudio import payloads
from aldaemon.labelstudio.http import GatewayPart
from aldaemon.labelstudio.retry import Replay
from aldaemon.records import LabelingSchema, PredictionRecord

log = structlog.get_logger(__name__)


class PredictionCalls(GatewayPart):
    """The prediction and model-version calls of `LabelStudioGateway`."""

    # Deleting a version costs ~3 queries per prediction (121 s for 10.5k on SQLite), and an
    # import recounts the whole project; a timeout there is ambiguous, so wait long.
    DELETE_VERSION_TIMEOUT = 900.0
    IMPORT_TIMEOUT = 300.0

    async def model_version_counts(self, project_id: int) -> dict[str, int]:
        """Predictions per model version in the project, e.g. {"aldaemon-v3": 120}."""
        answer = await self._project_request(
            "GET", project_id, "model-versions/", operation="model_version_counts"
        )
        return payloads.model_version_counts(answer)

    async def import_predictions(
        self,
        project_id: int,
        *,
        model_version: str,
        schema: LabelingSchema,
        predictions: Sequence[PredictionRecord],
    ) -> int:
        """Upload predictions in one bulk call; returns how many Label Studio created.

        Not idempotent: retried only when the connection could not be opened. After a
        timeout or a 5xx the predictions may exist anyway (the server commits before it
        recounts the project), so the caller checks `model_version_counts` before sending
        again. Labels are validated first, because Label Studio silently drops foreign ones.
        """
        body = payloads.prediction_payloads(predictions, model_version=model_version, schema=schema)
        if not body:
            return 0
        answer = await self._project_request(
            "POST",
            project_id,
            "import/predictions",
            json_body=body,
            operation="import_predictions",
            replay=Replay.IF_NOT_SENT,
            timeout=max(self._http.timeout, self.IMPORT_TIMEOUT),
        )
        created = int(answer["created"])
        if created != len(body):
            log.warning(
                "labelstudio.predictions_dropped",
                project_id=project_id,
                model_version=model_version,
                sent=len(body),
                created=created,
            )
        return created

    async def delete_model_version(self, project_id: int, model_version: str) -> int:
        """Delete every prediction of one version; returns how many. Slow on the server."""
        if not model_version:
            raise ValueError("model_version must not be empty")
        answer = await self._project_request(
            "DELETE",
            project_id,
            "model-versions/",
            json_body={"model_version": model_version},
            operation="delete_model_version",
            timeout=max(self._http.timeout, self.DELETE_VERSION_TIMEOUT),
        )
        return int(answer.get("deleted_predictions", 0))
