"""A fault-injecting reverse proxy in front of the real Label Studio, for the tests only.

A real server cannot be made to answer 503, to reset a connection, or to commit an import
and then lose the answer, on demand. This proxy can, and it forwards everything else
untouched, so the server behind it stays the real one:

    gateway --HTTP--> FaultProxy (127.0.0.1:<free port>) --HTTP--> Label Studio
                        |
                        +-- rules: "the next 3 POSTs to /import/predictions: 503"
                        +-- log:   every request seen, when, and what it got

Faults, each applied by the first rule that matches a request's method and path:

    STATUS         answer `status` (optionally with `Retry-After`) without forwarding
    RESET          close the connection without forwarding or answering
    DELAY          forward, then hold the answer `seconds` before sending it
    DROP_RESPONSE  forward (the server acts), then close the connection instead of
                   answering: the client cannot tell whether the request landed

The proxy runs its own event loop in a daemon thread, so sync tests, async tests (any
loop) and code that calls `asyncio.run` itself (the CLI) can all use it the same way:

    with FaultProxy(label_studio.url) as proxy:
        proxy.fail_next(n=3, status=503, method="POST", path_contains="/import/predictions")
        ...  # point the gateway at proxy.url
        assert 4 == len(proxy.requests(method="POST", path_contains="/import/predictions"))
"""

from __future__ import annotations

import asyncio
import enum
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

# Hop-by-hop headers (RFC 9110 7.6.1) belong to one connection, and Host/Content-Length
# are rewritten by the client; everything else is passed through as it came.
_REQUEST_HEADERS_NOT_FORWARDED = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
     "upgrade", "host", "content-length"}
)  # fmt: skip
_RESPONSE_HEADERS_NOT_FORWARDED = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
     "upgrade", "content-length"}
)  # fmt: skip
# The client adds these on its own when absent; a faithful proxy must not invent them.
_NO_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


class FaultKind(enum.Enum):
    STATUS = "status"
    RESET = "reset"
    DELAY = "delay"
    DROP_RESPONSE = "drop_response"


@dataclass
class FaultRule:
    """Apply `kind` to the next `remaining` matching requests (None: until cleared)."""

    kind: FaultKind
    method: str | None = None
    path_contains: str | None = None
    remaining: int | None = 1
    status: int = 503
    retry_after: float | None = None
    seconds: float = 0.0
    spare_first: int = 0  # matching requests let through untouched before the fault starts

    def matches(self, method: str, path: str) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path_contains is None or self.path_contains in path


@dataclass(frozen=True)
class SeenRequest:
    """One request as the proxy received it, and what became of it."""

    method: str
    path: str
    query: str
    arrived_at: float  # time.monotonic() in the proxy, when the request head arrived
    fault: FaultKind | None  # None: forwarded untouched
    status: int | None  # the answer's status (sent late for DELAY); None: connection closed


class FaultProxy:
    """A reverse proxy to `upstream` with injectable faults; `start()`/`stop()` or `with`."""

    def __init__(self, upstream: str, *, host: str = "127.0.0.1") -> None:
        self.upstream = upstream.rstrip("/")
        self.host = host
        self.port: int | None = None
        self._rules: list[FaultRule] = []
        self._seen: list[SeenRequest] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"FaultProxy(url={self.url if self.port else None!r}, upstream={self.upstream!r})"

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the proxy is not started")
        return f"http://{self.host}:{self.port}"

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Listen on a free port in a background thread; returns once it accepts requests."""
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="fault-proxy", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        asyncio.run_coroutine_threadsafe(self._serve(), loop).result(timeout=30)
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
            loop.close()
            self._loop = self._thread = None
            self.port = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- rules and log --------------------------------------------------------------------

    def add_rule(self, rule: FaultRule) -> FaultRule:
        """Append a rule; earlier rules win when several match one request."""
        with self._lock:
            self._rules.append(rule)
        return rule

    def fail_next(
        self,
        n: int | None = 1,
        *,
        status: int,
        retry_after: float | None = None,
        method: str | None = None,
        path_contains: str | None = None,
        spare_first: int = 0,
    ) -> FaultRule:
        """Answer `status` (with `Retry-After: retry_after` if given) without forwarding,
        once `spare_first` matching requests went through untouched."""
        return self.add_rule(
            FaultRule(
                FaultKind.STATUS,
                method=method,
                path_contains=path_contains,
                remaining=n,
                status=status,
                retry_after=retry_after,
                spare_first=spare_first,
            )
        )

    def reset_next(
        self, n: int | None = 1, *, method: str | None = None, path_contains: str | None = None
    ) -> FaultRule:
        """Close the connection without forwarding: the server never sees the request."""
        return self.add_rule(
            FaultRule(FaultKind.RESET, method=method, path_contains=path_contains, remaining=n)
        )

    def delay_next(
        self,
        n: int | None = 1,
        *,
        seconds: float,
        method: str | None = None,
        path_contains: str | None = None,
    ) -> FaultRule:
        """Forward at once, hold the answer for `seconds`, then send it."""
        return self.add_rule(
            FaultRule(
                FaultKind.DELAY,
                method=method,
                path_contains=path_contains,
                remaining=n,
                seconds=seconds,
            )
        )

    def drop_response_next(
        self, n: int | None = 1, *, method: str | None = None, path_contains: str | None = None
    ) -> FaultRule:
        """Forward (the server acts), then close the connection instead of answering."""
        return self.add_rule(
            FaultRule(
                FaultKind.DROP_RESPONSE, method=method, path_contains=path_contains, remaining=n
            )
        )

    def clear_rules(self) -> None:
        with self._lock:
            self._rules.clear()

    def requests(
        self, *, method: str | None = None, path_contains: str | None = None
    ) -> list[SeenRequest]:
        """Requests seen so far (faulted ones included), oldest first, optionally filtered."""
        with self._lock:
            seen = list(self._seen)
        return [
            request
            for request in seen
            if (method is None or request.method == method.upper())
            and (path_contains is None or path_contains in request.path)
        ]

    def clear_log(self) -> None:
        with self._lock:
            self._seen.clear()

    def _take_rule(self, method: str, path: str) -> FaultRule | None:
        """The first matching rule, with one use consumed; atomic across concurrent requests."""
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path):
                    if rule.spare_first > 0:
                        rule.spare_first -= 1
                        return None
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    return rule
        return None

    def _record(self, request: SeenRequest) -> None:
        with self._lock:
            self._seen.append(request)

    # --- serving (runs on the proxy's own loop) -------------------------------------------

    async def _serve(self) -> None:
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # auto_decompress=False: bodies pass through byte for byte, encoding header included.
        self._session = aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None)
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock).start()

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        arrived_at = time.monotonic()
        method, path, query = request.method, request.path, request.query_string
        rule = self._take_rule(method, path)
        kind = rule.kind if rule is not None else None

        def record(status: int | None) -> None:
            self._record(
                SeenRequest(
                    method=method,
                    path=path,
                    query=query,
                    arrived_at=arrived_at,
                    fault=kind,
                    status=status,
                )
            )

        if rule is not None and rule.kind is FaultKind.STATUS:
            record(rule.status)
            headers = {} if rule.retry_after is None else {"Retry-After": f"{rule.retry_after:g}"}
            return web.json_response(
                {"detail": f"injected by FaultProxy: HTTP {rule.status}"},
                status=rule.status,
                headers=headers,
            )
        if rule is not None and rule.kind is FaultKind.RESET:
            record(None)
            return _close_without_answer(request)
        body = await request.read()
        upstream = await self._forward(request, body)
        if rule is not None and rule.kind is FaultKind.DROP_RESPONSE:
            record(None)
            return _close_without_answer(request)
        # Recorded before a delay, so a test sees the request even if the client gave up.
        record(upstream.status)
        if rule is not None and rule.kind is FaultKind.DELAY:
            await asyncio.sleep(rule.seconds)
        return upstream

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        """Send the request on to Label Studio and wrap its complete answer."""
        assert self._session is not None
        headers = _filtered(request.headers.items(), _REQUEST_HEADERS_NOT_FORWARDED)
        target = URL(self.upstream + request.raw_path, encoded=True)
        async with self._session.request(
            request.method,
            target,
            headers=headers,
            data=body if body else None,
            allow_redirects=False,
            skip_auto_headers=_NO_AUTO_HEADERS,
        ) as answer:
            payload = await answer.read()
            return web.Response(
                status=answer.status,
                reason=answer.reason,
                headers=_filtered(answer.headers.items(), _RESPONSE_HEADERS_NOT_FORWARDED),
                body=payload,
            )


def _filtered(items: Iterable[tuple[str, str]], dropped: frozenset[str]) -> CIMultiDict[str]:
    return CIMultiDict((key, value) for key, value in items if key.lower() not in dropped)


def _close_without_answer(request: web.Request) -> web.StreamResponse:
    """Abort the TCP connection: the client sees a reset or 'disconnected without answer'."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    # aiohttp cannot write to an aborted transport; it notices and drops this response.
    return web.Response(status=599)
