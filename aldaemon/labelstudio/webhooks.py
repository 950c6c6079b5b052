"""Webhooks: Label Studio tells the daemon about new work instead of waiting for a poll.

`WEBHOOK_SECRET_HEADER` is the one name of the header both sides use: the webhook the
daemon registers here sends it, and the daemon's HTTP server checks it.
"""

from __future__ import annotations

from collections.abc import Sequence

from aldaemon.labelstudio.http import GatewayPart
from aldaemon.labelstudio.retry import Replay
from aldaemon.secret import Secret

WEBHOOK_SECRET_HEADER = "X-Aldaemon-Secret"


class WebhookCalls(GatewayPart):
    """The webhook call of `LabelStudioGateway`."""

    async def create_webhook(
        self, project_id: int, *, url: str, secret: Secret, actions: Sequence[str]
    ) -> int:
        """Register a webhook that sends `secret` in the WEBHOOK_SECRET_HEADER header."""
        answer = await self._http.request(
            "POST",
            "/api/webhooks/",
            json_body={
                "url": url,
                "project": project_id,
                "send_payload": True,
                "send_for_all_actions": False,
                "actions": list(actions),
                "headers": {WEBHOOK_SECRET_HEADER: secret.reveal()},
                "is_active": True,
            },
            operation="create_webhook",
            project_id=project_id,
            replay=Replay.IF_NOT_SENT,
            extra_secrets=(secret.reveal(),),
        )
        return int(answer["id"])
