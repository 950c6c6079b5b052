"""Authentication for every request the gateway sends: legacy token or personal access token.

Label Studio 1.23 knows two token kinds. A legacy token is sent as `Token <key>`. A
personal access token (PAT, the default) is a long-lived refresh JWT that must be
exchanged at `POST /api/token/refresh/` for an access JWT valid 300 s, sent as
`Bearer <access>`.

Why not let the SDK do it: `label_studio_sdk` 2.1.2 computes headers synchronously
(`BaseClientWrapper.get_headers` -> `TokensClientExt.api_key`), and when the access token
expires it builds a fresh *synchronous* `httpx.Client` and POSTs the refresh from inside
the event loop (`tokens/client_ext.py`, `refresh`). That blocks every project's loop for a
round trip every five minutes, or for the whole connect timeout while the server is down,
and the request bypasses our counting hooks. So the SDK gets a placeholder key and this
`httpx.Auth` sets the real header on every request of the one shared client, refreshing
asynchronously behind a lock.

Expiry is tracked on the local monotonic clock from the token's own lifetime (exp - iat),
so a skewed clock on the Label Studio host cannot make every token look expired; a 401 on
a PAT still forces one refresh and one resend, for the skew the margin did not cover.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import json
import time
from collections.abc import AsyncGenerator, Generator
from typing import Any

import httpx

from aldaemon.labelstudio.retry import HttpStatusError
from aldaemon.secret import Secret

REFRESH_PATH = "/api/token/refresh/"
REFRESH_MARGIN = 30.0  # seconds before expiry to get a new access token
DEFAULT_ACCESS_LIFETIME = 300.0  # Label Studio's, used when the token does not say


class TokenKind(enum.Enum):
    LEGACY = "legacy token"
    PERSONAL_ACCESS = "personal access token"
    ACCESS = "access token"


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The unverified claims of a JWT, or None when `token` is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


def token_kind(token: str) -> TokenKind:
    """Tell a PAT (refresh JWT) from an access JWT from a legacy key by its claims."""
    claims = jwt_claims(token)
    if claims is None:
        return TokenKind.LEGACY
    if claims.get("token_type") == "access":
        return TokenKind.ACCESS
    return TokenKind.PERSONAL_ACCESS


def access_lifetime(access_token: str) -> float:
    """Seconds an access token is valid, from its own claims (exp - iat)."""
    claims = jwt_claims(access_token) or {}
    issued, expires = claims.get("iat"), claims.get("exp")
    if isinstance(issued, int | float) and isinstance(expires, int | float) and expires > issued:
        return float(expires - issued)
    return DEFAULT_ACCESS_LIFETIME


class LabelStudioAuth(httpx.Auth):
    """Sets `Authorization` on each request; exchanges a PAT for access tokens as needed."""

    requires_request_body = True  # a 401 resend must be able to send the body again

    def __init__(self, token: Secret) -> None:
        self._token = token
        self.kind = token_kind(token.reveal())
        self._client: httpx.AsyncClient | None = None
        self._access: str | None = None
        self._access_deadline = 0.0  # time.monotonic() after which _access is stale
        self._lock = asyncio.Lock()

    def bind(self, client: httpx.AsyncClient) -> None:
        """The client the refresh is sent through, so it is counted like any request."""
        self._client = client

    def secrets(self) -> tuple[str, ...]:
        """Every credential this object may put on the wire, for redaction."""
        return tuple(value for value in (self._token.reveal(), self._access) if value)

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        raise RuntimeError("LabelStudioAuth works only with httpx.AsyncClient")

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        header = await self.authorization()
        request.headers["Authorization"] = header
        response = yield request
        if response.status_code == 401 and self.kind is TokenKind.PERSONAL_ACCESS:
            self._forget(header)
            request.headers["Authorization"] = await self.authorization()
            yield request

    async def authorization(self) -> str:
        """The `Authorization` header value to send now."""
        if self.kind is TokenKind.LEGACY:
            return f"Token {self._token.reveal()}"
        if self.kind is TokenKind.ACCESS:
            return f"Bearer {self._token.reveal()}"
        if self._fresh_access() is None:
            async with self._lock:
                if self._fresh_access() is None:  # another request may have refreshed
                    await self._refresh()
        return f"Bearer {self._access}"

    def _fresh_access(self) -> str | None:
        if self._access is not None and time.monotonic() < self._access_deadline:
            return self._access
        return None

    def _forget(self, header: str) -> None:
        if header == f"Bearer {self._access}":
            self._access = None

    async def _refresh(self) -> None:
        if self._client is None:
            raise RuntimeError("LabelStudioAuth.bind() was not called")
        started = time.monotonic()
        # A no-op Auth: the refresh itself must not go through this flow.
        response = await self._client.post(
            REFRESH_PATH, json={"refresh": self._token.reveal()}, auth=httpx.Auth()
        )
        body = _json_or_text(response)
        access = body.get("access") if isinstance(body, dict) else None
        if response.status_code != 200 or not isinstance(access, str):
            # Not a refresh answer (an HTML login page answers 200 too): classified by the
            # caller like any failed call, so it marks the project failed, not the cycle crashed.
            raise HttpStatusError(response.status_code, headers=dict(response.headers), body=body)
        self._access = access
        self._access_deadline = started + access_lifetime(access) - REFRESH_MARGIN


def _json_or_text(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return response.text
