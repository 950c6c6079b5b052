"""One demo session: the project, its config, the daemon in-process, annotators, summary.

The daemon runs in-process (`Daemon.serve`, exactly what `aldaemon run` runs) rather than
as a subprocess: one Ctrl-C then stops everything in a known order, and the summary can
read the same state directory right after the daemon closed it. The test suite runs a
short session through `run_session` too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from aldaemon.config import Config, load_config
from aldaemon.errors import AldaemonError, ConfigError, ProjectNotFound
from aldaemon.labelstudio import parse_labeling_config
from aldaemon.secret import Secret
from aldaemon.service.logs import register_secret
from aldaemon.store import Store
from demo.data import (
    LABEL_CONFIG,
    PROJECT_TITLE,
    Review,
    ReviewSets,
    labels_by_review_id,
    task_data,
    true_label,
)
from demo.digits import (
    BACKEND_TITLE,
    DigitsSummary,
    digit_answer,
    digit_targets,
    digits_versions,
    ensure_digits_project,
    start_backend,
)
from demo.digits import SCHEMA as DIGITS_SCHEMA
from demo.labelstudio import DemoGateway as LabelStudioGateway
from demo.paths import DemoPaths, read_json, update_json, write_private
from demo.simulate import AnnotationCounter, ensure_annotators, start_annotators
from demo.summary import DemoSummary, summarize
from examples.ml_backend.process import BackendProcess

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class SessionOptions:
    """How long and how fast one demo session runs, and the daemon settings it writes."""

    seconds: float | None = None  # None: until Ctrl-C
    annotators: int = 0  # 0: no simulation, a person labels in the browser
    labels_per_second: float = 3.0  # all simulated annotators together
    poll_interval: float = 5.0
    min_new_annotations: int = 20
    min_interval: float = 10.0
    listen: str = "127.0.0.1:9090"
    digits: bool = True  # the second project, served through the example ML backend
    backend_port: int = 9091  # where the demo runs the example backend


# --- the config file ---------------------------------------------------------------


def config_text(
    *,
    url: str,
    token_file: Path,
    state_dir: Path,
    project_id: int,
    options: SessionOptions,
    webhook_secret: str,
    digits_project_id: int | None = None,
) -> str:
    """The demo's config.toml: short intervals so a few minutes show several versions."""
    return _reviews_config(
        url=url,
        token_file=token_file,
        state_dir=state_dir,
        project_id=project_id,
        options=options,
        webhook_secret=webhook_secret,
    ) + ("" if digits_project_id is None else _digits_config(digits_project_id, options))


def _digits_config(project_id: int, options: SessionOptions) -> str:
    return f"""
# The digits images, served by the example ML backend connected to the project in
# Label Studio (python -m examples.ml_backend, started by the demo).
[[projects]]
id = {project_id}
model = "ml-backend"

[projects.ml_backend]
batch_size = 200
timeout = 50

[projects.retrain]
min_new_annotations = {options.min_new_annotations}
min_interval = {options.min_interval:g}
min_per_class = 1

[projects.predictions]
keep_versions = 2
prune_per_cycle = 0

[projects.view]
title = "Active learning queue"
"""


def _reviews_config(
    *,
    url: str,
    token_file: Path,
    state_dir: Path,
    project_id: int,
    options: SessionOptions,
    webhook_secret: str,
) -> str:
    return f"""\
# Written by the demo (python -m demo). It is reused while its project id and
# URL match the demo's, so edit freely.

[labelstudio]
url = {json.dumps(url)}
token_file = {json.dumps(str(token_file))}

[state]
dir = {json.dumps(str(state_dir))}

[daemon]
poll_interval = {options.poll_interval:g}
resync_interval = 300
listen = {json.dumps(options.listen)}
webhook_secret = {json.dumps(webhook_secret)}  # fine for a demo; use webhook_secret_file in earnest

[[projects]]
id = {project_id}

[projects.retrain]
min_new_annotations = {options.min_new_annotations}
min_interval = {options.min_interval:g}
min_per_class = 2

[projects.predictions]
strategy = "margin"
keep_versions = 2
# No pruning in the demo: deleting one version's 4,000 predictions holds Label Studio's
# SQLite write lock for half a minute, and the simulated annotators would stall behind it.
prune_per_cycle = 0

[projects.view]
title = "Active learning queue"
"""


def ensure_config(
    paths: DemoPaths,
    *,
    url: str,
    project_id: int,
    options: SessionOptions,
    digits_project_id: int | None = None,
) -> Config:
    """Reuse .demo/config.toml when it still points at these projects and URL, else write it."""
    wanted = [project_id] + ([] if digits_project_id is None else [digits_project_id])
    if paths.config_file.exists():
        try:
            existing = load_config(paths.config_file)
        except ConfigError as exc:
            log.warning("demo.config_rewritten", reason=str(exc))
        else:
            if existing.labelstudio.url == url and [p.id for p in existing.projects] == wanted:
                log.info("demo.config_reused", path=str(paths.config_file))
                return existing
    text = config_text(
        url=url,
        token_file=paths.token_file,
        state_dir=paths.state_dir,
        project_id=project_id,
        options=options,
        webhook_secret=secrets.token_urlsafe(24),
        digits_project_id=digits_project_id,
    )
    write_private(paths.config_file, text)
    log.info("demo.config_written", path=str(paths.config_file))
    return load_config(paths.config_file)


def forget_local_state(state_dir: Path, project_id: int) -> None:
    """A NEW Label Studio project may reuse the id of one local state still remembers
    (the Label Studio data was deleted, .demo/state was not): forget the old one."""
    with Store.open(state_dir) as store:
        if project_id in store.project_ids():
            store.wipe_project(project_id)
            log.info("demo.stale_state_forgotten", project_id=project_id)
    shutil.rmtree(state_dir / "models" / str(project_id), ignore_errors=True)


# --- Label Studio side ------------------------------------------------------------------


async def ensure_project(
    gateway: LabelStudioGateway, paths: DemoPaths, reviews: Sequence[Review]
) -> tuple[int, bool]:
    """The demo project's id, and whether it was created now; tasks imported once.

    The id is remembered in demo.json right after creation, before the import, so a
    failed import is retried on the project that exists instead of making a second one.
    Label Studio imports one request's tasks in one transaction: all of them or none.
    """
    remembered = read_json(paths.demo_file).get("project_id")
    if isinstance(remembered, int):
        try:
            info = await gateway.get_project(remembered)
        except ProjectNotFound:
            log.info("demo.project_gone", project_id=remembered)
        else:
            await _import_if_empty(gateway, remembered, info.task_count or 0, reviews)
            return remembered, False
    project_id = await gateway.create_project(title=PROJECT_TITLE, label_config=LABEL_CONFIG)
    update_json(paths.demo_file, project_id=project_id)
    log.info("demo.project_created", project_id=project_id, title=PROJECT_TITLE)
    await _import_if_empty(gateway, project_id, 0, reviews)
    return project_id, True


async def _import_if_empty(
    gateway: LabelStudioGateway, project_id: int, task_count: int, reviews: Sequence[Review]
) -> None:
    if task_count == 0:
        imported = await gateway.import_tasks(project_id, task_data(reviews))
        log.info("demo.tasks_imported", project_id=project_id, tasks=imported)
    elif task_count != len(reviews):
        log.warning(
            "demo.project_task_count",
            project_id=project_id,
            tasks=task_count,
            expected=len(reviews),
            action="using the project as it is",
        )


# --- a session: project, config, daemon, annotators, summary -----------------------------


async def run_session(
    *,
    url: str,
    token: Secret,
    paths: DemoPaths,
    reviews: ReviewSets,
    options: SessionOptions,
    on_ready: Callable[[int, int | None], None] | None = None,
    stop_when: Callable[[int], Awaitable[object]] | None = None,
) -> DemoSummary:
    """Set up the project and config, run the daemon (and annotators) until stopped.

    It stops on SIGINT/SIGTERM, after `options.seconds`, or when `stop_when(project_id)`
    returns (a test waits for a version that way instead of for a fixed time).
    `on_ready(project_id, digits_project_id)` is called once the projects and config
    exist, before the daemon starts: the command prints its banner there. The digits
    project (None when not served) gets its own annotators and its own summary lines.
    """
    register_secret(token.reveal())
    async with LabelStudioGateway(url=url, token=token) as gateway:
        await gateway.check_auth()
        project_id, created = await ensure_project(gateway, paths, reviews.train)
        digits_id, backend = await _digits_project(gateway, paths, url=url, token=token,
                                                   options=options)  # fmt: skip
    if created:
        forget_local_state(paths.state_dir, project_id)
    if not paths.token_file.exists():
        write_private(paths.token_file, token.reveal() + "\n")
    try:
        config = ensure_config(
            paths, url=url, project_id=project_id, options=options, digits_project_id=digits_id
        )
        if on_ready is not None:
            on_ready(project_id, digits_id)
        return await _serve(
            config, url=url, token=token, paths=paths, reviews=reviews, options=options,
            project_id=project_id, digits_id=digits_id, stop_when=stop_when,
        )  # fmt: skip
    finally:
        if backend is not None:
            backend.stop()


async def _digits_project(
    gateway: LabelStudioGateway,
    paths: DemoPaths,
    *,
    url: str,
    token: Secret,
    options: SessionOptions,
) -> tuple[int | None, BackendProcess | None]:
    """The digits project and its running, connected backend; (None, None) when the demo
    cannot serve it here (it says why, and the reviews project runs on)."""
    if not options.digits:
        return None, None
    backend = None
    try:
        digits_id, created = await ensure_digits_project(gateway, paths)
        if created:
            forget_local_state(paths.state_dir, digits_id)
        backend = start_backend(paths, url=url, token=token.reveal(), port=options.backend_port)
        await gateway.connect_ml_backend(digits_id, url=backend.url, title=BACKEND_TITLE)
    except AldaemonError as exc:
        if backend is not None:
            backend.stop()
        log.warning(
            "demo.digits_skipped",
            reason=str(exc),
            action="the reviews project runs alone; a Label Studio of your own must run "
            "with ML_BLOCK_LOCAL_IP=false and SSRF_PROTECTION_ENABLED=false to connect a "
            "backend on 127.0.0.1",
        )
        return None, None
    return digits_id, backend


async def _serve(
    config: Config,
    *,
    url: str,
    token: Secret,
    paths: DemoPaths,
    reviews: ReviewSets,
    options: SessionOptions,
    project_id: int,
    digits_id: int | None,
    stop_when: Callable[[int], Awaitable[object]] | None,
) -> DemoSummary:
    """Run the daemon (and annotators) until stopped; then the summary."""
    from aldaemon.service.daemon import Daemon  # the service shell; imported when a session runs
    from aldaemon.service.runtime import Runtime

    schema = parse_labeling_config(LABEL_CONFIG)
    pool = None
    if options.annotators > 0:
        pool = await ensure_annotators(
            url=url, paths=paths, count=options.annotators, fallback=token
        )
    counter, digits_counter = AnnotationCounter(), AnnotationCounter()
    targets = digit_targets() if digits_id is not None else []
    answers = labels_by_review_id(reviews.train)
    helpers: list[asyncio.Task[None]] = []
    started = time.monotonic()
    async with Runtime(config) as runtime:
        daemon = Daemon(runtime, config_path=str(paths.config_file))
        serving = asyncio.create_task(daemon.serve(), name="demo-daemon")
        if options.seconds is not None:
            asyncio.get_running_loop().call_later(options.seconds, daemon.stop, "demo time is up")
        if stop_when is not None:
            helpers.append(asyncio.create_task(_stop_when(stop_when(project_id), daemon)))
        if pool is not None:
            helpers += start_annotators(
                pool,
                url=url,
                project_id=project_id,
                schema=schema,
                answer=lambda task: true_label(task, answers),
                labels_per_second=options.labels_per_second,
                counter=counter,
            )
            if digits_id is not None:
                helpers += start_annotators(
                    pool,
                    url=url,
                    project_id=digits_id,
                    schema=DIGITS_SCHEMA,
                    answer=lambda task: digit_answer(task, targets),
                    labels_per_second=options.labels_per_second,
                    counter=digits_counter,
                )
        try:
            await serving
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            _restore_default_signals()
    summary = await asyncio.to_thread(
        summarize,
        state_dir=config.state.dir,
        project_id=project_id,
        test=reviews.test,
        submitted=counter.submitted,
        seconds=time.monotonic() - started,
    )
    if digits_id is None:
        return summary
    async with LabelStudioGateway(url=url, token=token) as gateway:
        data = await gateway.task_data(digits_id)
    truth = {
        task_id: label
        for task_id, fields in data.items()
        if (label := digit_answer({"data": fields}, targets)) is not None
    }
    versions = await asyncio.to_thread(digits_versions, config.state.dir, digits_id, truth)
    digits = DigitsSummary(
        project_id=digits_id, submitted=digits_counter.submitted, versions=tuple(versions)
    )
    return dataclasses.replace(summary, digits=digits)


async def _stop_when(condition: Awaitable[object], daemon: Any) -> None:
    try:
        await condition
    finally:  # a condition that fails must not leave the daemon running forever
        daemon.stop("stop condition met")


def _restore_default_signals() -> None:
    """Give Ctrl-C back its default meaning once the daemon stopped listening for it."""
    import signal

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, RuntimeError):
            loop.remove_signal_handler(signum)
