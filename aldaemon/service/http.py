"""The HTTP edge: one small server for Label Studio's webhooks, health and metrics.

    POST /webhook   Label Studio says something changed -> 202, and the project's next
                    poll is requested. The webhook is a hint, never data: whatever its
                    body says, the poll reads the truth from Label Studio.
    GET  /healthz   200 when healthy, 503 otherwise; JSON with the reasons.
    GET  /metrics   Prometheus (or OpenMetrics, when asked for) exposition.

Why answer at once: Label Studio without Redis delivers webhooks synchronously inside the
annotator's own request, with a 1 s timeout and no retry. Anything slow here slows the
annotator, and anything lost is found by the next regular poll anyway.

Webhook status codes (Label Studio ignores them; they are for people reading logs):

    401  X-Aldaemon-Secret missing or wrong (only when a secret is configured)
    413  body larger than MAX_WEBHOOK_BYTES
    400  not a JSON object, no project id, or a project id that contradicts ?project=
    404  a project the daemon is not configured for
    200  authentic, but an action that cannot change tasks or annotations (ignored)
    202  poll requested

No body can produce a 5xx: every way a body can be wrong is a 4xx.

Where the project id comes from, first match wins: `project.id` (every payload Label
Studio sends with `send_payload: true` for a project webhook), then the `project` field
of `annotation`/`task`/`tasks` (their serializers use all model fields), then the
`?project=N` query parameter of the webhook URL. The last one is what makes
`send_payload: false` usable: Label Studio then posts only `{"action": ...}` but skips
serializing the project with all its counters inside the annotator's request.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from aldaemon.config import parse_listen
from aldaemon.labelstudio import WEBHOOK_SECRET_HEADER
from aldaemon.secret import Secret
from aldaemon.service.health import HealthReport
from aldaemon.service.metrics import Metrics

log = structlog.get_logger(__name__)

MAX_WEBHOOK_BYTES = 1024 * 1024

# Authentic events that cannot change a task or an annotation. PROJECT_UPDATED matters
# most: the daemon's own PATCH of model_version fires it, and polling on it would echo.
IGNORED_ACTIONS = frozenset(
    {
        "PROJECT_CREATED",
        "PROJECT_UPDATED",
        "LABEL_LINK_CREATED",
        "LABEL_LINK_UPDATED",
        "LABEL_LINK_DELETED",
    }
)


@dataclass(frozen=True)
class WebhookEvent:
    """An authentic, well-formed webhook reduced to what the daemon acts on."""

    project_id: int
    action: str | None  # None when the body names no action

    @property
    def requests_poll(self) -> bool:
        """Whether this event can have changed tasks or annotations."""
        return self.action not in IGNORED_ACTIONS


class WebhookRejected(Exception):
    """A webhook body the daemon cannot act on; `reason` is a stable, loggable word."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _as_project_id(value: object) -> int | None:
    """A Label Studio id is a positive int; bool is an int in Python, but not an id."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _first_item(value: object) -> object:
    """The object itself, or the first element of a non-empty list (the `many` shapes)."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def project_id_from_body(body: Mapping[str, object]) -> int | None:
    """The project id a Label Studio webhook body carries, or None."""
    project = body.get("project")
    if isinstance(project, dict):
        project_id = _as_project_id(project.get("id"))
        if project_id is not None:
            return project_id
    for key in ("annotation", "task", "tasks", "annotations"):
        item = _first_item(body.get(key))
        if isinstance(item, dict):
            project_id = _as_project_id(item.get("project"))
            if project_id is not None:
                return project_id
    return None


def parse_query_project(value: str | None) -> int | None:
    """The `?project=N` query parameter; raises WebhookRejected when present but not an id."""
    if value is None:
        return None
    project_id = int(value) if value.isascii() and value.isdigit() else 0
    if project_id <= 0:
        raise WebhookRejected("bad_project_parameter")
    return project_id


def parse_webhook(raw_body: bytes, *, query_project: int | None = None) -> WebhookEvent:
    """Decode a webhook body into a WebhookEvent; raises WebhookRejected with the reason."""
    try:
        body = json.loads(raw_body)
    except (ValueError, RecursionError):  # bad JSON or encoding; absurd nesting
        raise WebhookRejected("malformed_json") from None
    if not isinstance(body, dict):
        raise WebhookRejected("not_an_object")
    action = body.get("action")
    if action is not None and not isinstance(action, str):
        raise WebhookRejected("bad_action")
    body_project = project_id_from_body(body)
    if body_project is not None and query_project is not None and body_project != query_project:
        raise WebhookRejected("conflicting_project_ids")
    project_id = body_project if body_project is not None else query_project
    if project_id is None:
        raise WebhookRejected("no_project_id")
    return WebhookEvent(project_id=project_id, action=action)


class _StructlogAccessLogger(AbstractAccessLogger):
    """Access log at debug through structlog; the path only (no query, no headers)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        log.debug(
            "http.request",
            method=request.method,
            path=request.path,
            status=response.status,
            duration_ms=round(time * 1000, 1),
        )


def _loggable_action(action: str | None) -> str | None:
    """The action as a log field: it comes from the body, so cap what it can add to a line."""
    return None if action is None else action[:64]


def _json_response(status: int, payload: Mapping[str, object]) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(payload, default=str, sort_keys=True),
        content_type="application/json",
    )


class HttpEdge:
    """The aiohttp server behind `[daemon].listen`; `""` leaves it off."""

    def __init__(
        self,
        *,
        listen: str,
        webhook_secret: Secret | None,
        metrics: Metrics,
        known_projects: Callable[[], Collection[int]],
        request_poll: Callable[[int], None],
        health: Callable[[], HealthReport],
    ) -> None:
        """`listen` is validated here (ValueError); nothing binds before `start()`."""
        self._address = parse_listen(listen)
        self._webhook_secret = webhook_secret
        self._metrics = metrics
        self._known_projects = known_projects
        self._request_poll = request_poll
        self._health = health
        self._runner: web.AppRunner | None = None

    @property
    def enabled(self) -> bool:
        """False when `listen` is empty: start() and stop() then do nothing."""
        return self._address is not None

    @property
    def bound_port(self) -> int:
        """The port actually bound (the one the OS chose for port 0); only after start()."""
        if self._runner is None or not self._runner.addresses:
            raise RuntimeError("the HTTP edge is not listening")
        port: int = self._runner.addresses[0][1]
        return port

    async def start(self) -> None:
        """Bind and serve; raises OSError when the address cannot be bound."""
        if self._address is None:
            log.info("server.disabled")
            return
        if self._runner is not None:
            return
        host, port = self._address
        app = web.Application(client_max_size=MAX_WEBHOOK_BYTES)
        app.router.add_post("/webhook", self._handle_webhook)
        app.router.add_get("/healthz", self._handle_health)
        app.router.add_get("/metrics", self._handle_metrics)
        runner = web.AppRunner(app, access_log_class=_StructlogAccessLogger, shutdown_timeout=5.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        log.info(
            "server.listening",
            host=host,
            port=self.bound_port,
            webhook_authenticated=self._webhook_secret is not None,
        )
        if self._webhook_secret is None:
            log.warning("server.webhook_unauthenticated", header=WEBHOOK_SECRET_HEADER)

    async def stop(self) -> None:
        """Stop listening; safe to call twice or without start()."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
            log.info("server.stopped")

    def _reject(self, *, status: int, outcome: str, reason: str, **context: object) -> web.Response:
        self._metrics.webhooks.labels(outcome=outcome).inc()
        log.warning("webhook.rejected", reason=reason, status=status, **context)
        return _json_response(status, {"error": reason})

    def _secret_problem(self, presented: str | None) -> str | None:
        """None when the request may pass, else the rejection reason."""
        if self._webhook_secret is None:
            return None
        if presented is None:
            return "missing_secret"
        try:
            matches = self._webhook_secret.matches(presented)
        except UnicodeEncodeError:  # undecodable header bytes arrive as surrogates
            matches = False
        return None if matches else "wrong_secret"

    async def _handle_webhook(self, request: web.Request) -> web.Response:
        secret_problem = self._secret_problem(request.headers.get(WEBHOOK_SECRET_HEADER))
        if secret_problem is not None:
            return self._reject(
                status=401, outcome="unauthorized", reason=secret_problem, remote=request.remote
            )
        if (request.content_length or 0) > MAX_WEBHOOK_BYTES:
            return self._reject(status=413, outcome="too_large", reason="too_large")
        try:
            raw_body = await request.read()  # enforces client_max_size on chunked bodies
        except web.HTTPRequestEntityTooLarge:
            return self._reject(status=413, outcome="too_large", reason="too_large")
        try:
            query_project = parse_query_project(request.query.get("project"))
            event = parse_webhook(raw_body, query_project=query_project)
        except WebhookRejected as rejected:
            return self._reject(status=400, outcome="bad_request", reason=rejected.reason)
        if event.project_id not in self._known_projects():
            return self._reject(
                status=404,
                outcome="unknown_project",
                reason="unknown_project",
                project_id=event.project_id,
                action=_loggable_action(event.action),
            )
        if not event.requests_poll:
            self._metrics.webhooks.labels(outcome="ignored").inc()
            log.debug(
                "webhook.ignored",
                project_id=event.project_id,
                action=_loggable_action(event.action),
            )
            return _json_response(200, {"status": "ignored", "project": event.project_id})
        self._metrics.webhooks.labels(outcome="accepted").inc()
        log.debug(
            "webhook.accepted",
            project_id=event.project_id,
            action=_loggable_action(event.action),
        )
        try:
            self._request_poll(event.project_id)
        except Exception:  # the poll will still come on schedule; Label Studio needs no 5xx
            log.exception("webhook.request_poll_failed", project_id=event.project_id)
        return _json_response(202, {"status": "accepted", "project": event.project_id})

    async def _handle_health(self, request: web.Request) -> web.Response:
        try:
            report = self._health()
        except Exception as error:  # the type only: a message could quote anything
            log.exception("server.health_failed")
            reason = f"health check raised {type(error).__name__}"
            report = HealthReport(healthy=False, reasons=(reason,))
        payload = {
            "healthy": report.healthy,
            "reasons": list(report.reasons),
            "projects": dict(report.projects),
            "model_runner": report.model_runner,
        }
        return _json_response(200 if report.healthy else 503, payload)

    async def _handle_metrics(self, request: web.Request) -> web.Response:
        body, content_type = self._metrics.render_for(request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})
