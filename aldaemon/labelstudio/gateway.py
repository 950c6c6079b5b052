"""The one object that talks to Label Studio: `LabelStudioGateway`, async, retried, counted.

It is assembled from one part per subject, each in its own module, over one shared HTTP
core (`http.py`: authentication, retries, request counting, error mapping):

    tasks.py        the changed-task poll, the full id listing, a version's tasks (paged)
    predictions.py  prediction uploads, model-version counts and deletions
    projects.py     the project, its settings and Data Manager views
    webhooks.py     the webhook the daemon registers

Only the calls the daemon makes live here. It never edits what it did not create: the
helpers that create projects, tasks and annotations (for the demo, the tests and the
benchmarks) live outside this package. Nothing here returns an SDK object.

The SDK is used where its typed call is a plain fit (current user, projects). Raw calls
cover what it lacks or gets wrong: the task listing with a `query` JSON string,
`model-versions`, `import/predictions`, views (it remaps their keys), webhooks. The
prediction listing (`/api/predictions/`) is not used: Label Studio 1.23 answers it
unpaged, every prediction of every version at once.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

import httpx

from aldaemon.labelstudio.http import LabelStudioHttp
from aldaemon.labelstudio.predictions import PredictionCalls
from aldaemon.labelstudio.projects import ProjectCalls
from aldaemon.labelstudio.tasks import TaskReads
from aldaemon.labelstudio.webhooks import WebhookCalls
from aldaemon.secret import Secret


class LabelStudioGateway(TaskReads, PredictionCalls, ProjectCalls, WebhookCalls):
    """Async access to one Label Studio server; use `async with` or call `close()`."""

    def __init__(
        self,
        *,
        url: str,
        token: Secret,
        timeout: float = 30.0,
        max_attempts: int = 5,
        max_backoff: float = 30.0,
    ) -> None:
        self._http = LabelStudioHttp(
            url=url,
            token=token,
            timeout=timeout,
            max_attempts=max_attempts,
            max_backoff=max_backoff,
        )

    @property
    def url(self) -> str:
        return self._http.url

    @property
    def http_client(self) -> httpx.AsyncClient:
        """The authenticated client, for calls made raw (labelstudio/ml_backends.py)."""
        return self._http.client

    @property
    def max_attempts(self) -> int:
        return self._http.max_attempts

    @property
    def request_count(self) -> int:
        """Requests sent, retries and token refreshes included: what went over the wire."""
        return self._http.request_count

    @property
    def bytes_received(self) -> int:
        """Response body bytes as received (before decompression)."""
        return self._http.bytes_received

    def __repr__(self) -> str:
        return f"LabelStudioGateway(url={self.url!r}, token={self._http.token_kind.value})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.close()
