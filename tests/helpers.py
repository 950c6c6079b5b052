"""What several test modules share: config writers, task builders, one-cycle runners.

Test modules import from here (and from conftest.py, lsserver.py, faultproxy.py), never
from one another, so moving or deleting a test never breaks an unrelated one.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from structlog.testing import LogCapture

from aldaemon.config import Config, load_config
from aldaemon.labelstudio.gateway import LabelStudioGateway
from aldaemon.loop.context import CycleReport
from aldaemon.records import LabelingSchema, TaskRecord
from aldaemon.service.health import HealthReport
from aldaemon.service.runtime import Runtime
from aldaemon.sync.timestamps import parse_ls_datetime
from tests.faultproxy import FaultProxy
from tests.lsserver import LabelStudioClient, LabelStudioServer

POSITIVE = ["great", "wonderful", "excellent", "love", "tasty", "perfect", "fresh", "yummy"]
NEGATIVE = ["awful", "terrible", "bad", "hate", "stale", "broken", "bland", "gross"]
IMPORT_PATH = "/import/predictions"
QUICK_BACKOFF = 0.2  # seconds: the cap on waits between attempts, to keep the suite quick
RETRAIN = "min_new_annotations = 4\nmin_interval = 0\nmin_per_class = 2"
# For tests that count one prediction per unlabeled task: publish every task, whatever
# the `queue_depth` default (their projects are far smaller than it anyway).
EVERY_TASK = "queue_depth = 0"


def review(rng: random.Random, label: str) -> str:
    """A text leaning to `label`, with some words of the other side so scores vary."""
    own, other = (POSITIVE, NEGATIVE) if label == "pos" else (NEGATIVE, POSITIVE)
    words = rng.sample(own, 3) + rng.sample(other, rng.randint(0, 2)) + ["food", "box"]
    rng.shuffle(words)
    return " ".join(words)


def make_tasks(n: int, *, seed: int = 0) -> tuple[list[dict[str, object]], list[str]]:
    rng = random.Random(seed)
    labels = ["pos" if i % 2 == 0 else "neg" for i in range(n)]  # every prefix has both classes
    return [{"text": review(rng, label)} for label in labels], labels


def choices_config(labels: Sequence[str], *, text_field: str = "text") -> str:
    """A labeling config with one single-choice `sentiment` over the text field."""
    choices = "".join(f'<Choice value="{label}"/>' for label in labels)
    return (
        f'<View><Text name="text" value="${text_field}"/>'
        f'<Choices name="sentiment" toName="text" choice="single">{choices}</Choices></View>'
    )


def write_projects_config(
    path: Path,
    server: LabelStudioServer,
    project_ids: Sequence[int],
    *,
    token: str | None = None,
    extra: str = "",
    retrain: str = RETRAIN,
    predictions: str = "",
    state: str = "",
) -> Config:
    """A config at `path` with one [[projects]] entry per id, all sharing `state/` beside it.

    `state` adds lines to [state] (a PostgreSQL `dsn`, say)."""
    projects = "".join(
        f"\n[[projects]]\nid = {project_id}\n[projects.retrain]\n{retrain}\n"
        f"[projects.predictions]\n{predictions}\n"
        for project_id in project_ids
    )
    path.write_text(
        f"""
[labelstudio]
url = "{server.url}"
token = "{token or server.legacy_token}"
max_attempts = 2

[state]
dir = "{path.parent / "state"}"
{state}

[daemon]
listen = ""
{extra}
{projects}"""
    )
    return load_config(path, env={})


def write_config(
    directory: Path,
    server: LabelStudioServer,
    project_id: int,
    *,
    token: str | None = None,
    extra: str = "",
    retrain: str = RETRAIN,
    predictions: str = "",
) -> Config:
    """`directory/config.toml` for one project, its state in `directory/state`."""
    return write_projects_config(
        directory / "config.toml",
        server,
        [project_id],
        token=token,
        extra=extra,
        retrain=retrain,
        predictions=predictions,
    )


async def one_cycle(config: Config, **kwargs: Any) -> CycleReport:
    async with Runtime(config) as runtime:
        report = await runtime.run_cycle(config.projects[0], **kwargs)
        await runtime.wait_for_prunes()  # leaving the Runtime cancels a prune still running
        return report


def annotate_some(
    client: LabelStudioClient, task_ids: list[int], labels: list[str], count: int
) -> list[int]:
    return [client.annotate(task_ids[i], labels[i]) for i in range(count)]


def predictions_by_version(client: LabelStudioClient, project_id: int) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = {}
    for prediction in client.predictions(project_id):
        grouped.setdefault(prediction["model_version"], []).append(prediction["task"])
    return grouped


def train_rounds(
    client: LabelStudioClient,
    config: Config,
    *,
    project_id: int,
    labels: list[str],
    rounds: int,
    per_round: int = 6,
) -> None:
    """Annotate `per_round` more tasks and run one cycle, `rounds` times."""
    ids = client.task_ids(project_id)
    for round_number in range(rounds):
        for i in range(round_number * per_round, (round_number + 1) * per_round):
            client.annotate(ids[i], labels[i])
        asyncio.run(one_cycle(config))


async def changed_tasks(
    gw: LabelStudioGateway,
    project_id: int,
    *,
    schema: LabelingSchema,
    updated_after: str | None,
    page_size: int = 500,
) -> list[TaskRecord]:
    """The tasks of one `changed_task_pages` scan, all pages, for tests that need no
    scan details."""
    return [
        task
        async for page in gw.changed_task_pages(
            project_id, schema=schema, updated_after=updated_after, page_size=page_size
        )
        for task in page.tasks
    ]


def start_ready_python(code: str, *args: str) -> subprocess.Popen[str]:
    """`python -c code args...`, returned once it printed the line "ready" (it holds
    something, a lock say, until `stop_process`)."""
    process = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:  # log lines may come first
        if line == "ready\n":
            return process
    raise AssertionError(f"the process exited early with {process.wait()}")


def stop_process(process: subprocess.Popen[str]) -> None:
    """SIGKILL it and close its pipes."""
    process.kill()
    process.wait()
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()


def statuses(proxy: FaultProxy, path: str, method: str | None = None) -> list[int | None]:
    """What each request to `path` got, in order; None where the connection was closed."""
    return [seen.status for seen in proxy.requests(method=method, path_contains=path)]


@contextmanager
def captured_events() -> Iterator[list[MutableMapping[str, Any]]]:
    """Every structlog event emitted inside the block, as dicts."""
    capture = LogCapture()
    previous = structlog.get_config()["processors"]
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    try:
        yield capture.entries
    finally:
        structlog.configure(processors=previous)


def events(logs: Sequence[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


def health_now(runtime: Runtime) -> HealthReport:
    now = time.time()
    return runtime.health_report(now=now, started_at=now)


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Return once `condition()` holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout} s waiting for {what}")
        time.sleep(0.1)


def newest_task_update(client: LabelStudioClient, project_id: int) -> datetime:
    """The latest `updated_at` of the project's tasks, as Label Studio's clock wrote it."""
    query = "fields=all&include=id,updated_at&page_size=100000&page=1"
    answer = client.call("GET", f"/api/tasks/?project={project_id}&{query}")
    return max(parse_ls_datetime(task["updated_at"]) for task in answer["tasks"])


def wait_for_server_clock(client: LabelStudioClient, moment: datetime) -> None:
    """Return once Label Studio's own clock (its Date header) reads `moment` or later."""
    wait_until(
        lambda: client.server_clock() >= moment,
        timeout=120.0,
        what=f"Label Studio's clock to reach {moment.isoformat()}",
    )


def make_users(client: LabelStudioClient, n: int, *, prefix: str = "annotator") -> list[int]:
    """`n` fresh Label Studio users (POST /api/users/ as the owner): annotators of a team."""
    ids = []
    for _ in range(n):
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        user = client.call(
            "POST",
            "/api/users/",
            {"username": name, "email": f"{name}@example.com", "password": uuid.uuid4().hex},
        )
        ids.append(int(user["id"]))
    return ids
