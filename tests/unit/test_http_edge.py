"""The service server over real sockets: webhook, health, metrics; and the poll debouncer."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field

import aiohttp
import pytest
import pytest_asyncio
import structlog.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from aldaemon.config import parse_listen
from aldaemon.labelstudio import WEBHOOK_SECRET_HEADER as SECRET_HEADER
from aldaemon.secret import Secret
from aldaemon.service.debounce import PollDebouncer
from aldaemon.service.health import HealthReport
from aldaemon.service.http import (
    MAX_WEBHOOK_BYTES,
    HttpEdge,
    WebhookEvent,
    WebhookRejected,
    parse_webhook,
)
from aldaemon.service.metrics import Metrics
from tests.conftest import MakeProject
from tests.lsserver import LabelStudioClient

SECRET_VALUE = "s3cret-webhook-value"
KNOWN_PROJECT = 7
OTHER_KNOWN_PROJECT = 8


def annotation_created(project_id: int) -> dict[str, object]:
    """The shape Label Studio 1.23 posts for ANNOTATION_CREATED (trimmed)."""
    return {
        "action": "ANNOTATION_CREATED",
        "annotation": {"id": 11, "task": 3, "project": project_id, "result": []},
        "task": {"id": 3, "project": project_id, "data": {"text": "hi"}},
        "project": {"id": project_id, "title": "p"},
    }


@dataclass
class Daemon:
    """What the server calls back into, recorded for assertions."""

    polls: list[int] = field(default_factory=list)
    report: HealthReport = field(default_factory=lambda: HealthReport(healthy=True))
    metrics: Metrics = field(default_factory=Metrics)

    def request_poll(self, project_id: int) -> None:
        self.polls.append(project_id)

    def known_projects(self) -> set[int]:
        return {KNOWN_PROJECT, OTHER_KNOWN_PROJECT}

    def health(self) -> HealthReport:
        return self.report

    def server(self, secret: Secret | None) -> HttpEdge:
        return HttpEdge(
            listen="127.0.0.1:0",
            webhook_secret=secret,
            metrics=self.metrics,
            known_projects=self.known_projects,
            request_poll=self.request_poll,
            health=self.health,
        )


@dataclass
class Running:
    daemon: Daemon
    base_url: str
    session: aiohttp.ClientSession

    async def webhook(
        self,
        body: bytes | Mapping[str, object] | list[object],
        *,
        secret: str | None = SECRET_VALUE,
        query: str = "",
    ) -> aiohttp.ClientResponse:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {} if secret is None else {SECRET_HEADER: secret}
        async with self.session.post(
            f"{self.base_url}/webhook{query}", data=data, headers=headers
        ) as response:
            await response.read()
            return response


@pytest_asyncio.fixture(loop_scope="function")
async def running() -> AsyncIterator[Running]:
    """A started server with a webhook secret, and a client session for it."""
    daemon = Daemon()
    server = daemon.server(Secret(SECRET_VALUE))
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield Running(daemon, f"http://127.0.0.1:{server.bound_port}", session)
    finally:
        await server.stop()


@pytest_asyncio.fixture(loop_scope="function")
async def open_running() -> AsyncIterator[Running]:
    """A started server WITHOUT a webhook secret."""
    daemon = Daemon()
    server = daemon.server(None)
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield Running(daemon, f"http://127.0.0.1:{server.bound_port}", session)
    finally:
        await server.stop()


class TestParseListen:
    def test_host_and_port(self) -> None:
        """An IPv4 host and a port split at the last colon."""
        assert ("127.0.0.1", 9090) == parse_listen("127.0.0.1:9090")

    def test_bracketed_ipv6(self) -> None:
        """An IPv6 host is written in brackets, which are dropped."""
        assert ("::1", 9090) == parse_listen("[::1]:9090")

    def test_empty_turns_the_server_off(self) -> None:
        """An empty listen string means no server."""
        assert None is parse_listen("")

    @pytest.mark.parametrize("listen", [":9090", "9090", "localhost", "host:http", "h:70000"])
    def test_incomplete_or_invalid_addresses_are_refused(self, listen: str) -> None:
        """A missing host or a non-numeric or out-of-range port is a ValueError."""
        with pytest.raises(ValueError, match="listen"):
            parse_listen(listen)


class TestParseWebhook:
    def test_project_id_from_the_project_object(self) -> None:
        """ANNOTATION_CREATED carries the project as project.id."""
        event = parse_webhook(json.dumps(annotation_created(5)).encode())
        assert WebhookEvent(project_id=5, action="ANNOTATION_CREATED") == event

    def test_annotations_deleted_shape(self) -> None:
        """ANNOTATIONS_DELETED carries only annotation ids plus the project object."""
        body = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 5}], "project": {"id": 2}}
        assert 2 == parse_webhook(json.dumps(body).encode()).project_id

    def test_project_id_from_a_nested_annotation(self) -> None:
        """Without a project object, the annotation's own project field is used."""
        body = {"action": "ANNOTATION_UPDATED", "annotation": {"id": 1, "project": 4}}
        assert 4 == parse_webhook(json.dumps(body).encode()).project_id

    def test_project_id_from_a_task_list(self) -> None:
        """The `many` shapes (lists of tasks) yield the first item's project."""
        body = {"action": "TASKS_CREATED", "tasks": [{"id": 1, "project": 6}]}
        assert 6 == parse_webhook(json.dumps(body).encode()).project_id

    def test_project_id_from_the_query_when_the_body_has_none(self) -> None:
        """With send_payload false the body is only the action; ?project= supplies the id."""
        event = parse_webhook(b'{"action": "ANNOTATION_CREATED"}', query_project=9)
        assert 9 == event.project_id

    def test_a_boolean_is_not_a_project_id(self) -> None:
        """`true` is an int to Python but never a project id."""
        with pytest.raises(WebhookRejected, match="no_project_id"):
            parse_webhook(b'{"project": {"id": true}}')

    def test_conflicting_body_and_query_are_rejected(self) -> None:
        """A body naming another project than the URL is refused rather than guessed."""
        with pytest.raises(WebhookRejected, match="conflicting_project_ids"):
            parse_webhook(b'{"project": {"id": 1}}', query_project=2)

    def test_malformed_json_is_rejected(self) -> None:
        """Bytes that are not JSON give the reason malformed_json."""
        with pytest.raises(WebhookRejected, match="malformed_json"):
            parse_webhook(b"{not json")

    def test_absurd_nesting_is_rejected_not_crashed(self) -> None:
        """JSON nested deeper than the parser's recursion limit is malformed, not a crash."""
        with pytest.raises(WebhookRejected, match="malformed_json"):
            parse_webhook(b"[" * 100_000)

    def test_a_json_array_is_rejected(self) -> None:
        """A webhook body must be a JSON object."""
        with pytest.raises(WebhookRejected, match="not_an_object"):
            parse_webhook(b"[1, 2]")

    def test_a_body_without_project_is_rejected(self) -> None:
        """Nothing naming a project gives the reason no_project_id."""
        with pytest.raises(WebhookRejected, match="no_project_id"):
            parse_webhook(b'{"action": "ANNOTATION_CREATED"}')

    def test_project_updated_does_not_request_a_poll(self) -> None:
        """PROJECT_UPDATED (fired by the daemon's own activation PATCH) is no reason to poll."""
        event = parse_webhook(b'{"action": "PROJECT_UPDATED", "project": {"id": 1}}')
        assert False is event.requests_poll

    def test_tasks_deleted_requests_a_poll(self) -> None:
        """TASKS_DELETED can remove labels, so it asks for a poll."""
        event = parse_webhook(b'{"action": "TASKS_DELETED", "project": {"id": 1}}')
        assert True is event.requests_poll


class TestWebhookEndpoint:
    async def test_missing_secret_is_401(self, running: Running) -> None:
        """A request without X-Aldaemon-Secret is refused with 401 and polls nothing."""
        response = await running.webhook(annotation_created(KNOWN_PROJECT), secret=None)
        assert (401, []) == (response.status, running.daemon.polls)

    async def test_wrong_secret_is_401(self, running: Running) -> None:
        """A request with the wrong secret is refused with 401 and polls nothing."""
        response = await running.webhook(annotation_created(KNOWN_PROJECT), secret="guess")
        assert (401, []) == (response.status, running.daemon.polls)

    async def test_undecodable_secret_header_is_401(self, running: Running) -> None:
        """Non-UTF-8 bytes in the secret header are a wrong secret, not a server error."""
        port = int(running.base_url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = json.dumps(annotation_created(KNOWN_PROJECT)).encode()
        writer.write(
            b"POST /webhook HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            + SECRET_HEADER.encode()
            + b": \xff\xfe\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        status_line = await reader.readline()
        writer.close()
        assert b"401" == status_line.split()[1]

    async def test_valid_event_is_202_and_requests_a_poll(self, running: Running) -> None:
        """A valid event is answered 202 and request_poll gets the project id."""
        response = await running.webhook(annotation_created(KNOWN_PROJECT))
        assert (202, [KNOWN_PROJECT]) == (response.status, running.daemon.polls)

    async def test_project_from_the_query_parameter(self, running: Running) -> None:
        """A payload-less event on /webhook?project=8 polls project 8."""
        response = await running.webhook({"action": "ANNOTATION_CREATED"}, query="?project=8")
        assert (202, [OTHER_KNOWN_PROJECT]) == (response.status, running.daemon.polls)

    async def test_bad_query_parameter_is_400(self, running: Running) -> None:
        """?project= that is not a positive integer is a bad request."""
        response = await running.webhook({"action": "X"}, query="?project=-1")
        assert 400 == response.status

    async def test_malformed_json_is_400(self, running: Running) -> None:
        """A body that is not JSON is answered 400."""
        response = await running.webhook(b"{'action': nope")
        assert (400, []) == (response.status, running.daemon.polls)

    async def test_no_project_id_is_400(self, running: Running) -> None:
        """A JSON object naming no project is answered 400."""
        response = await running.webhook({"action": "ANNOTATION_CREATED"})
        assert 400 == response.status

    async def test_unknown_project_is_404(self, running: Running) -> None:
        """An event for a project the daemon does not serve is 404 and polls nothing."""
        response = await running.webhook(annotation_created(999))
        assert (404, []) == (response.status, running.daemon.polls)

    async def test_ignored_action_is_200_without_poll(self, running: Running) -> None:
        """PROJECT_UPDATED is acknowledged with 200 but requests no poll."""
        body = {"action": "PROJECT_UPDATED", "project": {"id": KNOWN_PROJECT}}
        response = await running.webhook(body)
        assert (200, []) == (response.status, running.daemon.polls)

    async def test_body_over_the_limit_is_413(self, running: Running) -> None:
        """A body larger than MAX_WEBHOOK_BYTES is answered 413."""
        response = await running.webhook(b" " * (MAX_WEBHOOK_BYTES + 1))
        assert (413, []) == (response.status, running.daemon.polls)

    async def test_chunked_body_over_the_limit_is_413(self, running: Running) -> None:
        """A chunked body (no Content-Length) is cut off at the limit with 413 too."""

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(MAX_WEBHOOK_BYTES // 65536 + 2):
                yield b" " * 65536

        async with running.session.post(
            f"{running.base_url}/webhook", data=chunks(), headers={SECRET_HEADER: SECRET_VALUE}
        ) as response:
            assert 413 == response.status

    async def test_body_at_the_limit_is_accepted(self, running: Running) -> None:
        """A valid body padded to exactly MAX_WEBHOOK_BYTES is still processed."""
        body = json.dumps(annotation_created(KNOWN_PROJECT)).encode()
        padded = body + b" " * (MAX_WEBHOOK_BYTES - len(body))
        response = await running.webhook(padded)
        assert 202 == response.status

    async def test_a_failing_request_poll_still_answers_202(self, running: Running) -> None:
        """A bug behind request_poll never turns into a 5xx for Label Studio."""

        def broken(project_id: int) -> None:
            raise RuntimeError("scheduler gone")

        server = HttpEdge(
            listen="127.0.0.1:0",
            webhook_secret=None,
            metrics=Metrics(),
            known_projects=running.daemon.known_projects,
            request_poll=broken,
            health=running.daemon.health,
        )
        await server.start()
        try:
            url = f"http://127.0.0.1:{server.bound_port}/webhook"
            body = json.dumps(annotation_created(KNOWN_PROJECT))
            async with running.session.post(url, data=body) as response:
                assert 202 == response.status
        finally:
            await server.stop()

    async def test_without_a_configured_secret_no_header_is_needed(
        self, open_running: Running
    ) -> None:
        """With no webhook secret configured, a valid event passes without the header."""
        response = await open_running.webhook(annotation_created(KNOWN_PROJECT), secret=None)
        assert (202, [KNOWN_PROJECT]) == (response.status, open_running.daemon.polls)

    async def test_outcomes_are_counted(self, running: Running) -> None:
        """Each webhook increments the counter of its outcome."""
        await running.webhook(annotation_created(KNOWN_PROJECT))
        await running.webhook(annotation_created(KNOWN_PROJECT), secret="no")
        registry = running.daemon.metrics.registry
        counts = {
            outcome: registry.get_sample_value("aldaemon_webhooks_total", {"outcome": outcome})
            for outcome in ("accepted", "unauthorized")
        }
        assert {"accepted": 1.0, "unauthorized": 1.0} == counts

    async def test_rejections_never_log_a_secret(self, running: Running) -> None:
        """The webhook.rejected line names the reason but neither presented nor real secret."""
        with structlog.testing.capture_logs() as logs:
            await running.webhook(annotation_created(KNOWN_PROJECT), secret="presented-guess")
        rejected = [entry for entry in logs if entry["event"] == "webhook.rejected"]
        text = repr(logs)
        assert (["wrong_secret"], False, False) == (
            [entry["reason"] for entry in rejected],
            SECRET_VALUE in text,
            "presented-guess" in text,
        )

    async def test_get_on_webhook_is_405(self, running: Running) -> None:
        """Only POST is routed to the webhook."""
        async with running.session.get(f"{running.base_url}/webhook") as response:
            assert 405 == response.status


class TestHealthEndpoint:
    async def test_healthy_is_200_with_json(self, running: Running) -> None:
        """A healthy report is served as 200 with its JSON."""
        running.daemon.report = HealthReport(healthy=True, projects={"7": {"state": "ok"}})
        async with running.session.get(f"{running.base_url}/healthz") as response:
            payload = await response.json()
            expected = {
                "healthy": True,
                "reasons": [],
                "projects": {"7": {"state": "ok"}},
                "model_runner": "local",
            }
            assert (200, expected) == (response.status, payload)

    async def test_unhealthy_is_503_with_reasons(self, running: Running) -> None:
        """An unhealthy report is served as 503 and lists its reasons."""
        running.daemon.report = HealthReport(healthy=False, reasons=("project 7: failed",))
        async with running.session.get(f"{running.base_url}/healthz") as response:
            payload = await response.json()
            assert (503, ["project 7: failed"]) == (response.status, payload["reasons"])

    async def test_a_raising_health_check_is_503(self, running: Running) -> None:
        """A health callback that raises makes the endpoint unhealthy, with a reason."""

        def broken() -> HealthReport:
            raise RuntimeError("token=abc")

        server = HttpEdge(
            listen="127.0.0.1:0",
            webhook_secret=None,
            metrics=Metrics(),
            known_projects=set,
            request_poll=running.daemon.request_poll,
            health=broken,
        )
        await server.start()
        try:
            url = f"http://127.0.0.1:{server.bound_port}/healthz"
            async with running.session.get(url) as response:
                payload = await response.json()
                assert (503, ["health check raised RuntimeError"]) == (
                    response.status,
                    payload["reasons"],
                )
        finally:
            await server.stop()


class TestMetricsEndpoint:
    async def test_metrics_are_served_as_prometheus_text(self, running: Running) -> None:
        """GET /metrics answers with prometheus_client's text content type."""
        async with running.session.get(f"{running.base_url}/metrics") as response:
            assert CONTENT_TYPE_PLAIN_0_0_4 == response.headers["Content-Type"]

    async def test_metrics_text_names_the_metrics(self, running: Running) -> None:
        """The exposition contains the daemon's metric names, including recorded samples."""
        running.daemon.metrics.cycles.labels(project="7", outcome="success").inc()
        async with running.session.get(f"{running.base_url}/metrics") as response:
            text = await response.text()
        expected = {
            "aldaemon_cycles_total": True,
            "aldaemon_webhooks_total": True,
            "aldaemon_seconds_since_last_success": True,
        }
        assert expected == {name: name in text for name in expected}


class TestServerLifecycle:
    async def test_empty_listen_leaves_the_server_off(self) -> None:
        """listen "" starts nothing and reports itself disabled."""
        daemon = Daemon()
        server = HttpEdge(
            listen="",
            webhook_secret=None,
            metrics=daemon.metrics,
            known_projects=daemon.known_projects,
            request_poll=daemon.request_poll,
            health=daemon.health,
        )
        await server.start()
        assert False is server.enabled
        await server.stop()

    def test_bound_port_before_start_raises(self) -> None:
        """Asking for the port before start() is an error, not a made-up number."""
        server = Daemon().server(None)
        with pytest.raises(RuntimeError, match="not listening"):
            _ = server.bound_port

    async def test_stop_twice_is_harmless(self) -> None:
        """Stopping an already stopped server does nothing."""
        server = Daemon().server(None)
        await server.start()
        await server.stop()
        await server.stop()
        with pytest.raises(RuntimeError):
            _ = server.bound_port

    async def test_an_address_in_use_raises_oserror(self, running: Running) -> None:
        """Binding a port someone else holds fails loudly at start()."""
        port = int(running.base_url.rsplit(":", 1)[1])
        daemon = Daemon()
        server = HttpEdge(
            listen=f"127.0.0.1:{port}",
            webhook_secret=None,
            metrics=daemon.metrics,
            known_projects=daemon.known_projects,
            request_poll=daemon.request_poll,
            health=daemon.health,
        )
        with pytest.raises(OSError):
            await server.start()


# --- random bodies: a server on its own loop in a thread, so hypothesis stays synchronous


@dataclass
class ThreadedServer:
    port: int
    daemon: Daemon


@pytest.fixture(scope="module")
def threaded_server() -> Iterator[ThreadedServer]:
    """One server for many generated examples, on an event loop in a background thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    daemon = Daemon()
    server = daemon.server(Secret(SECRET_VALUE))
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=10)
    try:
        yield ThreadedServer(server.bound_port, daemon)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def post_raw(port: int, body: bytes, query: str = "") -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(
            "POST", f"/webhook{query}", body=body, headers={SECRET_HEADER: SECRET_VALUE}
        )
        return connection.getresponse().status
    finally:
        connection.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
webhook_like = st.fixed_dictionaries(
    {},
    optional={
        "action": json_values | st.sampled_from(["ANNOTATION_CREATED", "PROJECT_UPDATED"]),
        "project": json_values | st.builds(lambda i: {"id": i}, json_values),
        "annotation": json_values | st.builds(lambda p: {"project": p}, json_values),
        "tasks": json_values | st.builds(lambda p: [{"project": p}], json_values),
    },
)
bodies = (
    st.binary(max_size=2000)
    | json_values.map(lambda value: json.dumps(value).encode())
    | webhook_like.map(lambda value: json.dumps(value).encode())
)
queries = st.sampled_from(["", "?project=7", "?project=x", "?project=", "?project=99999"])


class TestWebhookRobustness:
    @settings(max_examples=300, deadline=None)
    @given(body=bodies, query=queries)
    def test_no_body_gets_a_server_error(
        self, threaded_server: ThreadedServer, body: bytes, query: str
    ) -> None:
        """Whatever the authenticated body and query, the answer is below 500."""
        status = post_raw(threaded_server.port, body, query)
        assert status < 500, status


# --- the debouncer


class Recorder:
    """A fire callback that records project ids and signals each fire."""

    def __init__(self) -> None:
        self.fired: list[int] = []
        self.event = asyncio.Event()

    def __call__(self, project_id: int) -> None:
        self.fired.append(project_id)
        self.event.set()

    async def wait_for_fire(self) -> None:
        await asyncio.wait_for(self.event.wait(), timeout=5)
        self.event.clear()


DELAY = 0.05


class TestPollDebouncer:
    async def test_a_burst_of_fifty_fires_once(self) -> None:
        """Fifty requests for one project within the delay give exactly one fire."""
        recorder = Recorder()
        debouncer = PollDebouncer(DELAY, recorder)
        for _ in range(50):
            debouncer.request(KNOWN_PROJECT)
        await recorder.wait_for_fire()
        # The window has passed once a later request, held as long, has fired: a wrong
        # second fire of the burst would have come before it.
        debouncer.request(OTHER_KNOWN_PROJECT)
        await recorder.wait_for_fire()
        await debouncer.aclose()
        assert [KNOWN_PROJECT, OTHER_KNOWN_PROJECT] == recorder.fired

    async def test_two_separated_bursts_fire_twice(self) -> None:
        """A burst after the previous fire opens a new window and fires again."""
        recorder = Recorder()
        debouncer = PollDebouncer(DELAY, recorder)
        for _ in range(50):
            debouncer.request(KNOWN_PROJECT)
        await recorder.wait_for_fire()
        for _ in range(50):
            debouncer.request(KNOWN_PROJECT)
        await recorder.wait_for_fire()
        await debouncer.aclose()
        assert [KNOWN_PROJECT, KNOWN_PROJECT] == recorder.fired

    async def test_projects_are_debounced_separately(self) -> None:
        """Requests for two projects give one fire each."""
        recorder = Recorder()
        debouncer = PollDebouncer(DELAY, recorder)
        for _ in range(10):
            debouncer.request(KNOWN_PROJECT)
            debouncer.request(OTHER_KNOWN_PROJECT)
        while len(recorder.fired) < 2:
            await recorder.wait_for_fire()
        await debouncer.aclose()
        assert [KNOWN_PROJECT, OTHER_KNOWN_PROJECT] == sorted(recorder.fired)

    async def test_nothing_fires_before_the_delay(self) -> None:
        """A request is held, not fired synchronously: the burst gets time to finish."""
        recorder = Recorder()
        debouncer = PollDebouncer(60.0, recorder)
        debouncer.request(KNOWN_PROJECT)
        await asyncio.sleep(0)
        pending = debouncer.pending()
        await debouncer.aclose()
        assert ([], frozenset({KNOWN_PROJECT})) == (recorder.fired, pending)

    async def test_an_async_fire_is_awaited(self) -> None:
        """A coroutine-returning fire runs past its first await, once, for its project."""
        completed: list[int] = []
        done = asyncio.Event()

        async def fire(project_id: int) -> None:
            await asyncio.sleep(0)  # a fire that is called but never awaited stops here
            completed.append(project_id)
            done.set()

        debouncer = PollDebouncer(DELAY, fire)
        debouncer.request(KNOWN_PROJECT)
        await asyncio.wait_for(done.wait(), timeout=5)
        await debouncer.aclose()
        assert ([KNOWN_PROJECT], frozenset()) == (completed, debouncer.pending())

    async def test_a_failing_fire_does_not_stop_later_fires(self) -> None:
        """An exception in one fire is logged and the next request still fires."""
        recorder = Recorder()
        calls: list[int] = []

        def flaky(project_id: int) -> None:
            calls.append(project_id)
            if len(calls) == 1:
                raise RuntimeError("first poll failed")
            recorder(project_id)

        debouncer = PollDebouncer(DELAY, flaky)
        debouncer.request(KNOWN_PROJECT)
        while not calls:
            await asyncio.sleep(DELAY)
        debouncer.request(KNOWN_PROJECT)
        await recorder.wait_for_fire()
        await debouncer.aclose()
        assert [KNOWN_PROJECT, KNOWN_PROJECT] == calls

    async def test_close_drops_pending_requests(self) -> None:
        """After aclose, a pending request never fires."""
        recorder = Recorder()
        debouncer = PollDebouncer(DELAY, recorder)
        witness = PollDebouncer(DELAY, recorder)  # fires once the same window has passed
        debouncer.request(KNOWN_PROJECT)
        witness.request(OTHER_KNOWN_PROJECT)
        await debouncer.aclose()
        await recorder.wait_for_fire()
        await witness.aclose()
        assert [OTHER_KNOWN_PROJECT] == recorder.fired


# --- against the real Label Studio: what it actually posts reaches request_poll


async def wait_until(condition: Callable[[], bool], *, timeout: float = 10.0) -> None:
    """Poll `condition` until true; a bound on waiting, not a speed assertion."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met within the timeout")
        await asyncio.sleep(0.05)


@pytest.mark.labelstudio
class TestRealLabelStudioWebhooks:
    """Label Studio's own deliveries, with its real payloads, through the real server.

    The Label Studio calls run in a worker thread: Label Studio delivers a webhook inside
    the request that triggered it, so a blocking call on this loop would starve the server.
    """

    @staticmethod
    async def serve(project_id: int) -> tuple[Daemon, HttpEdge]:
        daemon = Daemon()
        server = HttpEdge(
            listen="127.0.0.1:0",
            webhook_secret=Secret(SECRET_VALUE),
            metrics=daemon.metrics,
            known_projects=lambda: {project_id},
            request_poll=daemon.request_poll,
            health=daemon.health,
        )
        await server.start()
        return daemon, server

    @staticmethod
    def register(
        ls_client: LabelStudioClient, project_id: int, *, url: str, **settings: object
    ) -> None:
        ls_client.call(
            "POST",
            "/api/webhooks/",
            {
                "url": url,
                "project": project_id,
                "send_payload": True,
                "send_for_all_actions": False,
                "actions": ["ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED"],
                "headers": {SECRET_HEADER: SECRET_VALUE},
                **settings,
            },
        )

    async def test_an_annotation_created_in_label_studio_requests_a_poll(
        self, make_project: MakeProject, ls_client: LabelStudioClient
    ) -> None:
        """Label Studio's ANNOTATION_CREATED payload makes request_poll get the project id."""
        project_id = make_project([{"text": "a"}])
        task_id = ls_client.task_ids(project_id)[0]
        daemon, server = await self.serve(project_id)
        try:
            url = f"http://127.0.0.1:{server.bound_port}/webhook"
            await asyncio.to_thread(self.register, ls_client, project_id, url=url)
            await asyncio.to_thread(ls_client.annotate, task_id, "pos")
            await wait_until(lambda: bool(daemon.polls))
        finally:
            await server.stop()
        assert [project_id] == daemon.polls

    async def test_a_payload_less_webhook_names_its_project_in_the_url(
        self, make_project: MakeProject, ls_client: LabelStudioClient
    ) -> None:
        """With send_payload false Label Studio posts only the action; ?project= suffices."""
        project_id = make_project([{"text": "a"}])
        task_id = ls_client.task_ids(project_id)[0]
        daemon, server = await self.serve(project_id)
        try:
            url = f"http://127.0.0.1:{server.bound_port}/webhook?project={project_id}"
            await asyncio.to_thread(
                self.register, ls_client, project_id, url=url, send_payload=False
            )
            await asyncio.to_thread(ls_client.annotate, task_id, "neg")
            await wait_until(lambda: bool(daemon.polls))
        finally:
            await server.stop()
        assert [project_id] == daemon.polls

    async def test_a_project_update_is_delivered_but_polls_nothing(
        self, make_project: MakeProject, ls_client: LabelStudioClient
    ) -> None:
        """The PROJECT_UPDATED a PATCH fires (as the daemon's activation does) is ignored."""
        project_id = make_project([{"text": "a"}])
        daemon, server = await self.serve(project_id)
        registry = daemon.metrics.registry

        def ignored() -> bool:
            count = registry.get_sample_value("aldaemon_webhooks_total", {"outcome": "ignored"})
            return count == 1.0

        try:
            url = f"http://127.0.0.1:{server.bound_port}/webhook"
            await asyncio.to_thread(
                self.register, ls_client, project_id, url=url, send_for_all_actions=True
            )
            await asyncio.to_thread(
                ls_client.call, "PATCH", f"/api/projects/{project_id}/", {"title": "renamed"}
            )
            await wait_until(ignored)
        finally:
            await server.stop()
        assert [] == daemon.polls
