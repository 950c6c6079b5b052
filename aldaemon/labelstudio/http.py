"""The HTTP core under the gateway: one client, authenticated, retried, counted, token-safe.

Every request, whether made through `label_studio_sdk.AsyncLabelStudio` or raw, goes through
ONE `httpx.AsyncClient` owned here, so that

- authentication (legacy token or PAT with async refresh) is an `httpx.Auth` on that
  client (see `auth.py` for why the SDK's own refresh is bypassed);
- `request_count` / `bytes_received` come from its event hooks and include retries and
  token refreshes: what actually went over the wire; `count_requests()` counts the same
  requests for one block of work only (a cycle, a prune), however many run concurrently;
- retries are decided in one place (`retry.py`); the SDK's retries are switched off
  (`max_retries=0`) because they would replay non-idempotent POSTs;
- failures become aldaemon errors in one place (`failures.py`), and a change of
  reachability is logged once, not at every request.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, TypeVar

import httpx
import structlog
from label_studio_sdk import AsyncLabelStudio
from label_studio_sdk.core.api_error import ApiError
from label_studio_sdk.core.parse_error import ParsingError

from aldaemon.errors import AldaemonError, LabelStudioRefused, LabelStudioUnreachable
from aldaemon.labelstudio import payloads
from aldaemon.labelstudio.auth import LabelStudioAuth, TokenKind
from aldaemon.labelstudio.failures import to_labelstudio_error
from aldaemon.labelstudio.retry import HttpStatusError, Replay, call_with_retries
from aldaemon.secret import Secret

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Handed to the SDK instead of the real token: not a JWT, so the SDK never tries its own
# (blocking) refresh, and the real header is set by LabelStudioAuth on every request.
_SDK_PLACEHOLDER_KEY = "set-by-aldaemon-auth"


@dataclasses.dataclass
class RequestTally:
    """Requests sent from inside one `count_requests()` block, retries and refreshes included."""

    requests: int = 0
    open: bool = True


# The tallies of the blocks the current task is in (and the tasks it started inherit).
# A ContextVar of our own, not structlog's bound `project_id`: the numbers must not depend
# on what is bound for logging, and a project's prune runs beside its next cycle, so a
# count per project would still mix the two.
_OPEN_TALLIES: ContextVar[tuple[RequestTally, ...]] = ContextVar(
    "aldaemon_request_tallies", default=()
)


@contextlib.contextmanager
def count_requests() -> Iterator[RequestTally]:
    """Count the requests sent to Label Studio from inside this block, by any gateway.

    Projects run concurrently, one task each, on one shared gateway, so the difference of
    its global `request_count` would charge each project with the others' requests. httpx
    runs event hooks in the calling task, and a ContextVar is per task, so each block sees
    only its own requests. Blocks nest (both count). A task started inside the block that
    outlives it stops counting when the block ends, so the number read afterwards is final.
    """
    tally = RequestTally()
    reset = _OPEN_TALLIES.set((*_OPEN_TALLIES.get(), tally))
    try:
        yield tally
    finally:
        tally.open = False
        _OPEN_TALLIES.reset(reset)


class LabelStudioHttp:
    """One Label Studio server's client: raw JSON calls and SDK calls, both retried."""

    def __init__(
        self,
        *,
        url: str,
        token: Secret,
        timeout: float,
        max_attempts: int,
        max_backoff: float,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.max_backoff = max_backoff
        # What went over the wire, retries and token refreshes included (event hooks).
        self.request_count = 0
        self.bytes_received = 0  # response body bytes as received (before decompression)
        self._reachable = True
        self._auth = LabelStudioAuth(token)
        self.client = httpx.AsyncClient(
            base_url=self.url,
            auth=self._auth,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            event_hooks={"request": [self._count_request], "response": [self._count_response]},
            headers={"User-Agent": "aldaemon"},
        )
        self._auth.bind(self.client)
        self.sdk = AsyncLabelStudio(  # type: ignore[no-untyped-call]
            base_url=self.url,
            api_key=_SDK_PLACEHOLDER_KEY,
            httpx_client=self.client,
            timeout=timeout,
            max_retries=0,
        )

    @property
    def token_kind(self) -> TokenKind:
        return self._auth.kind

    async def close(self) -> None:
        await self.client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        params: Mapping[str, str | int] | None = None,
        json_body: object = None,
        project_id: int | None = None,
        replay: Replay = Replay.IDEMPOTENT,
        timeout: float | None = None,
        missing_ok: str | None = None,
        extra_secrets: Sequence[str] = (),
        report_500: bool = False,
        retry_500: bool = True,
        on_response: Callable[[httpx.Response], None] | None = None,
    ) -> Any:
        """One raw JSON call with retries; returns the decoded answer (None when empty).

        `report_500`: a final HTTP 500 raises `Http500` for the caller to handle, without
        logging Label Studio unreachable. `retry_500=False` gives up on the first 500.
        """

        async def attempt() -> Any:
            response = await self.client.request(
                method,
                path,
                params=dict(params) if params else None,
                json=json_body,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
            )
            if response.status_code >= 400:
                body = _decode(response)
                if (
                    missing_ok is not None
                    and response.status_code == 404
                    and missing_ok in payloads.server_message(body)
                ):
                    raise NothingLeft
                raise HttpStatusError(
                    response.status_code, headers=dict(response.headers), body=body
                )
            if on_response is not None:
                on_response(response)
            if not response.content:
                return None
            answer = _decode(response)
            if isinstance(answer, str):  # not JSON: classified as "not Label Studio"
                raise HttpStatusError(
                    response.status_code, headers=dict(response.headers), body=answer
                )
            return answer

        return await self._run(
            attempt,
            operation=operation,
            project_id=project_id,
            replay=replay,
            extra_secrets=extra_secrets,
            report_500=report_500,
            final_statuses=() if retry_500 else (500,),
        )

    async def sdk_call(
        self,
        call: Callable[[], Awaitable[T]],
        *,
        operation: str,
        project_id: int | None = None,
        replay: Replay = Replay.IDEMPOTENT,
    ) -> T:
        async def attempt() -> T:
            try:
                return await call()
            except ApiError as error:
                raise HttpStatusError(
                    error.status_code or 0, headers=dict(error.headers or {}), body=error.body
                ) from None
            except ParsingError:
                raise LabelStudioRefused(
                    f"{operation}: Label Studio answered in a shape the SDK could not read; "
                    "is this Label Studio 1.23?"
                ) from None

        return await self._run(attempt, operation=operation, project_id=project_id, replay=replay)

    async def _run(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        operation: str,
        project_id: int | None,
        replay: Replay,
        extra_secrets: Sequence[str] = (),
        report_500: bool = False,
        final_statuses: Collection[int] = (),
    ) -> T:
        """Retry `attempt`, map its failure to an aldaemon error, log reachability changes."""
        try:
            result = await call_with_retries(
                attempt,
                replay=replay,
                max_attempts=self.max_attempts,
                max_backoff=self.max_backoff,
                operation=operation,
                final_statuses=final_statuses,
            )
        except NothingLeft:
            self._note_reachable()
            raise
        except AldaemonError:
            raise
        except (httpx.HTTPError, HttpStatusError) as failure:
            error = to_labelstudio_error(
                failure,
                operation=operation,
                url=self.url,
                token_kind=self._auth.kind,
                project_id=project_id,
                secrets=(*self._auth.secrets(), *extra_secrets),
            )
            if (
                report_500
                and isinstance(failure, HttpStatusError)
                and failure.status_code == 500
                and isinstance(error, LabelStudioUnreachable)
            ):
                raise Http500(error) from None
            if isinstance(error, LabelStudioUnreachable):
                self.note_unreachable(error)
            else:
                self._note_reachable()
            # A transport error carries only the URL and errno: worth keeping as the cause.
            cause = failure if isinstance(failure, httpx.HTTPError) else None
            raise error from cause
        self._note_reachable()
        return result

    def note_unreachable(self, error: LabelStudioUnreachable) -> None:
        if self._reachable:
            log.error(
                "labelstudio.unreachable",
                url=self.url,
                error=str(error),
                action="retrying at every poll; nothing is lost meanwhile",
            )
        self._reachable = False

    def _note_reachable(self) -> None:
        if not self._reachable:
            log.info("labelstudio.recovered", url=self.url)
        self._reachable = True

    async def _count_request(self, request: httpx.Request) -> None:
        self.request_count += 1
        for tally in _OPEN_TALLIES.get():
            if tally.open:
                tally.requests += 1

    async def _count_response(self, response: httpx.Response) -> None:
        await response.aread()
        self.bytes_received += response.num_bytes_downloaded


class NothingLeft(Exception):
    """Internal: an expected 404 meaning "empty", e.g. no next task."""


class Http500(Exception):
    """Internal: HTTP 500 where the caller asked to see it (a listing that may hold a task
    Label Studio cannot serialize); `error` is what to raise if the caller gives up."""

    def __init__(self, error: LabelStudioUnreachable) -> None:
        super().__init__(str(error))
        self.error = error


def _decode(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


class GatewayPart:
    """A part of `LabelStudioGateway`: its calls all go through the one shared core."""

    _http: LabelStudioHttp

    async def _project_request(
        self,
        method: str,
        project_id: int,
        subpath: str,
        *,
        operation: str,
        json_body: object = None,
        replay: Replay = Replay.IDEMPOTENT,
        timeout: float | None = None,
    ) -> Any:
        """A call on `/api/projects/{project_id}/{subpath}`: a 404 there means the project
        is gone (`ProjectNotFound`), so the project id always travels with it."""
        return await self._http.request(
            method,
            f"/api/projects/{project_id}/{subpath}",
            json_body=json_body,
            operation=operation,
            project_id=project_id,
            replay=replay,
            timeout=timeout,
        )
