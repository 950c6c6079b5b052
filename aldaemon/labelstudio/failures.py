"""Turn a failed Label Studio call into one of aldaemon's errors, with a useful message.

Pure: it gets the low-level failure (an httpx error or an `HttpStatusError`) plus what the
call was about, and returns the exception to raise. Messages say what to do next and are
scrubbed of every credential the gateway holds.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping

import httpx

from aldaemon.errors import (
    LabelStudioAuthError,
    LabelStudioError,
    LabelStudioRefused,
    LabelStudioUnreachable,
    NotLabelStudio,
    ProjectNotFound,
)
from aldaemon.labelstudio.auth import TokenKind
from aldaemon.labelstudio.payloads import redact, server_message
from aldaemon.labelstudio.retry import HttpStatusError, is_retryable_status

# A gateway or proxy in front of a restarting Label Studio answers these with its own
# (HTML) page: temporary, whatever the body looks like.
_GATEWAY_STATUSES = frozenset({500, 502, 503, 504})
_EXCERPT_LIMIT = 80

# SsrfBlockedUrlError's detail (core/utils/exceptions.py): a 403 that is not about the token.
_SSRF_REFUSAL = "URL was not allowed"

# SQLite's own error, passed on as the detail of a 500 (core/utils/common.py's handler).
# Label Studio 1.23's default prediction import recounts every task of the project with
# one SQL variable per task id (data_import/api.py, `_create_legacy`); the SQLite Label
# Studio ships with allows 250,000, so the import fails on any bigger project.
SQLITE_TOO_MANY_VARIABLES = "too many SQL variables"
MEMORY_EFFICIENT_IMPORT_FLAG = (
    "fflag_fix_back_4620_memory_efficient_predictions_import_08012025_short"
)

_TOKEN_HINTS = {
    TokenKind.LEGACY: (
        "the configured token looks like a legacy token: check the token file, and that "
        "legacy tokens are enabled for the organization (Organization > API Tokens "
        "Settings) or use a personal access token instead"
    ),
    TokenKind.PERSONAL_ACCESS: (
        "the configured token looks like a personal access token (JWT): check the token "
        "file, and create a new one under Account & Settings if it was revoked or belongs "
        "to another Label Studio"
    ),
    TokenKind.ACCESS: (
        "the configured token is a short-lived access token: configure the personal "
        "access token (the refresh token) instead"
    ),
}


def to_labelstudio_error(
    failure: BaseException,
    *,
    operation: str,
    url: str,
    token_kind: TokenKind,
    project_id: int | None,
    secrets: Iterable[str],
) -> LabelStudioError:
    """The aldaemon exception for `failure` of `operation` against the server at `url`."""
    secrets = tuple(secrets)
    error = _classify(
        failure, operation=operation, url=url, token_kind=token_kind, project_id=project_id
    )
    message = redact(str(error), secrets)
    return type(error)(message, status_code=error.status_code)


def _classify(
    failure: BaseException,
    *,
    operation: str,
    url: str,
    token_kind: TokenKind,
    project_id: int | None,
) -> LabelStudioError:
    if isinstance(failure, httpx.TimeoutException):
        return LabelStudioUnreachable(
            f"{operation}: Label Studio at {url} did not answer in time ({type(failure).__name__})"
        )
    if isinstance(failure, httpx.TransportError):
        return LabelStudioUnreachable(
            f"{operation}: cannot reach Label Studio at {url} ({type(failure).__name__})"
        )
    if not isinstance(failure, HttpStatusError):
        return LabelStudioRefused(f"{operation}: unexpected failure ({type(failure).__name__})")
    status = failure.status_code
    foreign = foreign_answer(status=status, headers=failure.headers, body=failure.body)
    if foreign is not None and status not in _GATEWAY_STATUSES:
        return NotLabelStudio(
            f"{operation}: {url} answered {foreign}; this does not look like Label Studio "
            "(its API answers JSON, errors included): check [labelstudio] url (scheme, host, "
            "port, no path) and any proxy in front of it",
            status_code=status,
        )
    detail = server_message(failure.body)
    said = foreign or (f"HTTP {status}: {detail}" if detail else f"HTTP {status}")
    if status == 403 and _SSRF_REFUSAL in detail:
        return LabelStudioRefused(
            f"{operation}: Label Studio at {url} refused the URL ({said}); it blocks local and "
            "private addresses unless it runs with SSRF_PROTECTION_ENABLED=false",
            status_code=status,
        )
    if status in (401, 403):
        return LabelStudioAuthError(
            f"{operation}: Label Studio at {url} rejected the token ({said}); "
            + _TOKEN_HINTS[token_kind],
            status_code=status,
        )
    if status == 404 and project_id is not None:
        return ProjectNotFound(
            f"{operation}: project {project_id} does not exist in Label Studio at {url}, "
            f"or the token's user cannot see it ({said})",
            status_code=status,
        )
    if status == 500 and SQLITE_TOO_MANY_VARIABLES in detail:
        return LabelStudioRefused(
            f"{operation}: Label Studio at {url} failed on its SQLite database ({said}): "
            "Label Studio 1.23 on SQLite passes one SQL variable per task of the project "
            "when it imports predictions, and fails above about 250,000 tasks. Retrying "
            f"will not help: start Label Studio with {MEMORY_EFFICIENT_IMPORT_FLAG}=true in "
            "its environment (it imports in batches and recounts only the tasks it "
            "touched), or run it on PostgreSQL",
            status_code=status,
        )
    if is_retryable_status(status):
        return LabelStudioUnreachable(
            f"{operation}: Label Studio at {url} is failing ({said})", status_code=status
        )
    return LabelStudioRefused(f"{operation}: Label Studio refused ({said})", status_code=status)


def foreign_answer(*, status: int, headers: Mapping[str, str], body: object) -> str | None:
    """What was answered, when it is not Label Studio's JSON; None when it is.

    Label Studio's API answers JSON, its errors too (`{"detail": ...}`); a login page, a
    proxy's error page or another server's 404 is HTML or text. A 2xx/3xx reaching this
    point was not what the call expects either (JSON without the expected fields).
    """
    content_type = next(
        (value for key, value in headers.items() if key.lower() == "content-type"), ""
    )
    kind = content_type.split(";")[0].strip() or "no content type"
    if isinstance(body, Mapping | list):
        if status < 300:
            return f"HTTP {status} ({kind}) without the fields Label Studio sends"
        return None
    return f"HTTP {status} ({kind}): {excerpt(body)!r}"


def excerpt(body: object) -> str:
    """A short, readable excerpt of a page: its <title>, else its text without tags."""
    text = str(body or "")
    title = re.search(r"<title[^>]*>(.*?)</title>", text, flags=re.IGNORECASE | re.DOTALL)
    if title:
        text = title.group(1)
    else:
        text = re.sub(r"<(script|style)\b.*?</\1>", " ", text, flags=re.IGNORECASE | re.DOTALL)
        text = re.sub(r"<[^>]+>", " ", text)
    text = " ".join(html.unescape(text).split()) or "(empty)"
    return text if len(text) <= _EXCERPT_LIMIT else text[: _EXCERPT_LIMIT - 3] + "..."
