"""A URL that answers, but is not Label Studio: a login page, another server's 404, a 501.

The "other server" is a real HTTP server (aiohttp, in a thread) answering HTML, as a
wrong port or a reverse proxy's login page does; the right URL is the real Label Studio.
Each scenario runs `Runtime` twice against the wrong URL, then reloads with the right one.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from aldaemon.config import Config, load_config
from aldaemon.service.health import HealthReport
from aldaemon.service.runtime import Runtime
from tests.helpers import captured_events, events, health_now
from tests.lsserver import LabelStudioClient, LabelStudioServer, free_port

pytestmark = pytest.mark.labelstudio

LOGIN_PAGE = (
    "<!DOCTYPE html><html><head><title>Sign in - Corporate SSO</title></head>"
    "<body><form><input name=user></form></body></html>"
)
NGINX_404 = "<html><head><title>404 Not Found</title></head><body>nginx</body></html>"
NOT_IMPLEMENTED = "<html><head><title>501 Not Implemented</title></head></html>"

# Each kind of foreign server: (HTTP status, HTML page) it answers to every request.
FOREIGN_SERVERS = {
    "login page (200)": (200, LOGIN_PAGE),
    "another server's 404": (404, NGINX_404),
    "501": (501, NOT_IMPLEMENTED),
}


@contextmanager
def html_server(status: int, page: str) -> Iterator[str]:
    """An HTTP server answering `status` with `page` (text/html) to everything; its URL."""
    port = free_port()
    started = threading.Event()
    loop = asyncio.new_event_loop()

    async def answer(_request: web.Request) -> web.Response:
        return web.Response(status=status, text=page, content_type="text/html")

    async def serve() -> web.AppRunner:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", answer)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    def run() -> None:
        asyncio.set_event_loop(loop)
        holder.append(loop.run_until_complete(serve()))
        started.set()
        loop.run_forever()

    holder: list[web.AppRunner] = []
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(holder[0].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def write_config(path: Path, *, url: str, token: str, project_id: int) -> Config:
    path.write_text(
        f"""
[labelstudio]
url = "{url}"
token = "{token}"
max_attempts = 2

[state]
dir = "{path.parent / "state"}"

[daemon]
listen = ""

[[projects]]
id = {project_id}
[projects.retrain]
min_new_annotations = 4
min_interval = 0
min_per_class = 2
"""
    )
    return load_config(path, env={})


@dataclass
class ForeignScenario:
    server: str
    logs: list[MutableMapping[str, Any]] = field(default_factory=list)
    health_wrong: HealthReport | None = None
    health_right: HealthReport | None = None
    version_right: str | None = None


@pytest.fixture(
    scope="class",
    params=[(server, token) for server in FOREIGN_SERVERS for token in ("pat", "legacy")],
    ids=lambda param: f"{param[0]}, {param[1]} token",
)
def foreign(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
) -> ForeignScenario:
    server, token_kind = request.param
    token = label_studio.pat if token_kind == "pat" else label_studio.legacy_token
    rng = random.Random(5)
    project_id = ls_client.create_project(title=f"not label studio: {server}")
    labels = ["pos" if i % 2 == 0 else "neg" for i in range(12)]
    task_ids = ls_client.import_tasks(
        project_id, [{"text": f"{label} words {rng.random()}"} for label in labels]
    )
    for task_id, label in zip(task_ids[:8], labels[:8], strict=True):
        ls_client.annotate(task_id, label)
    directory = tmp_path_factory.mktemp("foreign")
    seen = ForeignScenario(server=server)
    status, page = FOREIGN_SERVERS[server]
    with html_server(status, page) as wrong_url:
        wrong = write_config(
            directory / "wrong.toml", url=wrong_url, token=token, project_id=project_id
        )
        right = write_config(
            directory / "right.toml", url=label_studio.url, token=token, project_id=project_id
        )

        async def run() -> None:
            async with Runtime(wrong) as runtime:
                (project,) = runtime.config.projects
                await runtime.run_cycle(project)
                await runtime.run_cycle(project)
                seen.health_wrong = health_now(runtime)
                await runtime.reload(right)
                report = await runtime.run_cycle(right.projects[0])
                seen.version_right = report.version
                seen.health_right = health_now(runtime)

        with captured_events() as logs:
            asyncio.run(run())
    seen.logs = list(logs)
    return seen


class TestNotLabelStudio:
    def test_no_cycle_crashes(self, foreign: ForeignScenario) -> None:
        """No traceback: the answer is classified, not a `cycle.crashed`."""
        assert [] == [entry.get("error") for entry in events(foreign.logs, "cycle.crashed")]

    def test_project_failed_once_saying_it_is_not_label_studio(
        self, foreign: ForeignScenario
    ) -> None:
        """One `project.failed` (kind not_label_studio) naming status, page and the verdict."""
        failed = events(foreign.logs, "project.failed")
        status, page = FOREIGN_SERVERS[foreign.server]
        title = page.split("<title>")[1].split("</title>")[0]
        assert [("not_label_studio", True, True, True)] == [
            (
                entry["kind"],
                "does not look like Label Studio" in entry["error"],
                f"HTTP {status} (text/html)" in entry["error"],
                title in entry["error"],
            )
            for entry in failed
        ]

    def test_health_is_503_while_the_url_is_wrong(self, foreign: ForeignScenario) -> None:
        """/healthz is unhealthy, the project named as failed."""
        health = foreign.health_wrong
        assert health is not None
        assert (False, True) == (
            health.healthy,
            any("does not look like Label Studio" in reason for reason in health.reasons),
        )

    def test_health_is_200_again_with_the_right_url(self, foreign: ForeignScenario) -> None:
        """After a reload with the right URL the project recovers and publishes."""
        health = foreign.health_right
        assert health is not None
        assert (True, 1, "aldaemon-v1") == (
            health.healthy,
            len(events(foreign.logs, "project.recovered")),
            foreign.version_right,
        )
