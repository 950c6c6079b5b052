"""When to send a Label Studio request again, and how long to wait first.

Two kinds of request, two rules:

- `Replay.IDEMPOTENT` (reads, PATCH, DELETE): sending twice is harmless, so any transport
  failure (connection refused or reset, timeout) and any 408/429/5xx is retried.
- `Replay.IF_NOT_SENT` (creating POSTs such as `import/predictions`): a second copy could
  create duplicates, so it is retried only when the request surely never reached the
  server, i.e. the connection could not even be opened. A timeout or a 5xx may come after
  the server already committed; the caller must look before sending again.

Waits grow exponentially with full jitter, honour a `Retry-After: <seconds>` header, and
are capped at `max_backoff`. Label Studio's SDK retries on its own; the gateway turns that
off so this module is the only place that decides.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, TypeVar

import httpx
import structlog
import tenacity

log = structlog.get_logger(__name__)

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({408, 429})  # and every 5xx but 501
FIRST_BACKOFF = 0.5  # seconds before the second attempt, before jitter


class Replay(enum.Enum):
    IDEMPOTENT = "idempotent"
    IF_NOT_SENT = "if_not_sent"


class HttpStatusError(Exception):
    """A Label Studio answer with status >= 400, from a raw call or the SDK's ApiError.

    Internal to the gateway: it is turned into an `aldaemon.errors` exception before it
    leaves. It keeps only the response's status, headers and parsed body, never the request.
    """

    def __init__(self, status_code: int, *, headers: Mapping[str, str], body: object) -> None:
        self.status_code = status_code
        self.headers = {key.lower(): value for key, value in headers.items()}
        self.body = body
        super().__init__(f"HTTP {status_code}")


# Raised before a single byte left: the connection could not be opened or no pooled
# connection became free. Anything later may have reached the server.
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def is_retryable(error: BaseException, replay: Replay) -> bool:
    """Whether `error` is temporary and sending again cannot do harm."""
    if isinstance(error, _NEVER_SENT):
        return True
    if replay is Replay.IF_NOT_SENT:
        return False
    if isinstance(error, httpx.TransportError):
        return True
    return isinstance(error, HttpStatusError) and is_retryable_status(error.status_code)


def is_retryable_status(status_code: int) -> bool:
    # 501 Not Implemented: the server does not know the method at all; no retry helps.
    return status_code in RETRYABLE_STATUS or (status_code >= 500 and status_code != 501)


def retry_after_seconds(error: BaseException | None) -> float | None:
    """The server's `Retry-After` in seconds, when it sent one (HTTP dates are ignored)."""
    if not isinstance(error, HttpStatusError):
        return None
    value = error.headers.get("retry-after", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def backoff_seconds(
    *,
    attempt: int,
    max_backoff: float,
    retry_after: float | None = None,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based).

    Full jitter spreads retries of several projects apart after a shared outage; a server
    that says when to come back is believed, up to the cap.
    """
    if retry_after is not None:
        return min(retry_after, max_backoff)
    ceiling = min(max_backoff, FIRST_BACKOFF * 2.0 ** (attempt - 1))
    return ceiling * rng()


def describe(error: BaseException) -> str:
    """A short, token-free name for a failure, for logs."""
    if isinstance(error, HttpStatusError):
        return f"HTTP {error.status_code}"
    return type(error).__name__


async def call_with_retries(
    send: Callable[[], Awaitable[T]],
    *,
    replay: Replay,
    max_attempts: int,
    max_backoff: float,
    operation: str,
    final_statuses: Collection[int] = (),
) -> T:
    """Await `send()` until it succeeds, fails for good, or `max_attempts` are spent.

    `final_statuses` are not retried for this call although they are temporary in general:
    while the gateway searches a page for an unreadable task, a 500 is the answer it wants.
    The last error is re-raised unchanged; mapping it to an aldaemon error is the caller's.
    """

    def should_retry(error: BaseException) -> bool:
        if isinstance(error, HttpStatusError) and error.status_code in final_statuses:
            return False
        return is_retryable(error, replay)

    def wait(state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        return backoff_seconds(
            attempt=state.attempt_number,
            max_backoff=max_backoff,
            retry_after=retry_after_seconds(error),
        )

    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.debug(
            "labelstudio.retry",
            operation=operation,
            attempt=state.attempt_number,
            error=describe(error) if error else None,
            wait_seconds=round(state.upcoming_sleep, 3),
        )

    retrying: tenacity.AsyncRetrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(max(1, max_attempts)),
        wait=wait,
        retry=tenacity.retry_if_exception(should_retry),
        before_sleep=before_sleep,
        reraise=True,
    )
    result: Any = await retrying(send)
    return result  # type: ignore[no-any-return]
