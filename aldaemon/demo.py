"""`make demo`: the whole loop on a real Label Studio, in one command.

    python -m aldaemon.demo [--simulate] [--seconds N] [--annotators N] [--dir .demo]

    1. Label Studio 1.23.2: reuse the one answering on 127.0.0.1:8080 (its token must be
       in .demo/labelstudio-token), else start our own on .demo/label-studio/.
    2. The "Fine food reviews" project: 4,000 training reviews as tasks (demo_data.py).
    3. .demo/config.toml, then the daemon in this process, logging to the console.
    4. --simulate: annotators (asyncio tasks, one Label Studio user each) ask
       `GET /api/projects/{id}/next` and answer with the true label.
    5. Ctrl-C or --seconds: stop annotators, daemon, then Label Studio if we started it,
       and print a summary: labels, versions, and each version's accuracy on the 1,000
       held-out test reviews (its artifact, loaded from the state dir).

Everything the demo creates lives in .demo/ and is reused by the next run: the Label
Studio data, the project (its id is in .demo/demo.json), the config and the daemon's
state. Delete .demo/ to start from nothing.

The daemon runs in-process (`Daemon.serve`, exactly what `aldaemon run` runs) rather than
as a subprocess: one Ctrl-C then stops everything in a known order, and the summary can
read the same state directory right after the daemon closed it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import secrets
import shutil
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from aldaemon.config import Config, load_config
from aldaemon.demo_data import (
    LABEL_CONFIG,
    PROJECT_TITLE,
    Review,
    ReviewSets,
    labels_by_review_id,
    load_reviews,
    task_data,
    true_label,
)
from aldaemon.demo_labelstudio import (
    DemoUser,
    LocalLabelStudio,
    annotator_token,
    install_label_studio,
    is_healthy,
)
from aldaemon.errors import (
    AldaemonError,
    ConfigError,
    LabelStudioAuthError,
    LabelStudioError,
    ProjectNotFound,
)
from aldaemon.labelstudio import LabelStudioGateway, parse_labeling_config
from aldaemon.records import LabelingSchema
from aldaemon.secret import Secret
from aldaemon.service.logs import configure_logging, register_secret
from aldaemon.store import Store

log = structlog.get_logger(__name__)

DEFAULT_PORT = 8080
DEMO_EMAIL = "demo@example.com"
PROGRESS_EVERY = 15.0  # seconds between two `demo.annotators.progress` lines


@dataclass(frozen=True)
class DemoPaths:
    """Where the demo keeps everything; all under one directory, reused across runs."""

    root: Path

    @property
    def token_file(self) -> Path:
        return self.root / "labelstudio-token"

    @property
    def demo_file(self) -> Path:
        return self.root / "demo.json"

    @property
    def annotators_file(self) -> Path:
        return self.root / "annotators.json"

    @property
    def config_file(self) -> Path:
        return self.root / "config.toml"

    @property
    def label_studio_dir(self) -> Path:
        return self.root / "label-studio"

    @property
    def label_studio_log(self) -> Path:
        return self.root / "label-studio.log"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"


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


@dataclass(frozen=True)
class VersionSummary:
    """One model version: what it trained on and how it did on the held-out reviews."""

    name: str
    state: str
    n_labels: int | None
    cv_accuracy: float | None
    test_accuracy: float | None
    test_macro_f1: float | None


@dataclass(frozen=True)
class DemoSummary:
    project_id: int
    seconds: float
    submitted: int  # annotations the simulated annotators created in this session
    labels_per_class: dict[str, int]  # training labels in local state at the end
    versions: tuple[VersionSummary, ...]
    test_labels: dict[str, int] = field(default_factory=dict)


# --- pure pieces ------------------------------------------------------------------------


def config_text(
    *,
    url: str,
    token_file: Path,
    state_dir: Path,
    project_id: int,
    options: SessionOptions,
    webhook_secret: str,
) -> str:
    """The demo's config.toml: short intervals so a few minutes show several versions."""
    return f"""\
# Written by the demo (python -m aldaemon.demo). It is reused while its project id and
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


def annotator_pause(*, annotators: int, labels_per_second: float) -> float:
    """Seconds each annotator "reads" a task so that all of them together reach the rate."""
    if annotators < 1 or labels_per_second <= 0:
        raise ValueError("need at least one annotator and a positive rate")
    return annotators / labels_per_second


def render_summary(summary: DemoSummary) -> str:
    """The table printed when the demo ends."""
    per_class = ", ".join(f"{label} {n}" for label, n in sorted(summary.labels_per_class.items()))
    lines = [
        f"demo summary: project {summary.project_id}, {summary.seconds:.0f} s",
        f"  labels submitted by simulated annotators this session: {summary.submitted}",
        f"  training labels in local state: {sum(summary.labels_per_class.values())}"
        + (f" ({per_class})" if per_class else ""),
    ]
    if summary.test_labels:
        total = sum(summary.test_labels.values())
        majority_label, majority = max(summary.test_labels.items(), key=lambda item: item[1])
        lines.append(
            f"  test set: {total} held-out reviews; always answering {majority_label!r} "
            f"scores accuracy {majority / total:.3f}"
        )
    if not summary.versions:
        lines.append("  no model version yet (each class needs 2 labels, then 20 new labels)")
        return "\n".join(lines)
    lines.append(
        f"  {'version':<16} {'state':<11} {'labels':>6} {'cv acc':>7} {'test acc':>9} "
        f"{'test F1':>8}"
    )
    for version in summary.versions:
        lines.append(
            f"  {version.name:<16} {version.state:<11} {_number(version.n_labels):>6} "
            f"{_fraction(version.cv_accuracy):>7} {_fraction(version.test_accuracy):>9} "
            f"{_fraction(version.test_macro_f1):>8}"
        )
    lines.append(
        "  (cv acc is measured on the labels active learning chose, the hard cases, so it may"
        " fall while test acc rises)"
    )
    return "\n".join(lines)


def _number(value: int | None) -> str:
    return "-" if value is None else str(value)


def _fraction(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


# --- files in the demo directory --------------------------------------------------------


def read_json(path: Path) -> dict[str, Any]:
    """A small JSON object from the demo dir; empty when the file does not exist yet."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise AldaemonError(f"{path} is not valid JSON ({exc}); delete it to start over") from None
    if not isinstance(loaded, dict):
        raise AldaemonError(f"{path} does not hold a JSON object; delete it to start over")
    return loaded


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it may hold a token or a password), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(temp, path)


def update_json(path: Path, **fields: object) -> dict[str, Any]:
    data = read_json(path)
    data.update(fields)
    write_private(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return data


def ensure_config(
    paths: DemoPaths, *, url: str, project_id: int, options: SessionOptions
) -> Config:
    """Reuse .demo/config.toml when it still points at this project and URL, else write it."""
    if paths.config_file.exists():
        try:
            existing = load_config(paths.config_file)
        except ConfigError as exc:
            log.warning("demo.config_rewritten", reason=str(exc))
        else:
            if existing.labelstudio.url == url and [p.id for p in existing.projects] == [
                project_id
            ]:
                log.info("demo.config_reused", path=str(paths.config_file))
                return existing
    text = config_text(
        url=url,
        token_file=paths.token_file,
        state_dir=paths.state_dir,
        project_id=project_id,
        options=options,
        webhook_secret=secrets.token_urlsafe(24),
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


@dataclass(frozen=True)
class AnnotatorPool:
    """Tokens for the simulated annotators; `shared` when they all act as one user."""

    tokens: tuple[Secret, ...]
    shared: bool


async def ensure_annotators(
    *, url: str, paths: DemoPaths, count: int, fallback: Secret
) -> AnnotatorPool:
    """One Label Studio user per simulated annotator, remembered in annotators.json.

    When the server refuses to make users (sign-up disabled, legacy tokens off), every
    annotator uses the demo's own token and they take turns (see demo_labelstudio.py).
    """
    stored = read_json(paths.annotators_file).get("annotators")
    accounts: list[dict[str, str]] = list(stored) if isinstance(stored, list) else []
    try:
        tokens = [
            await _annotator_secret(url, paths=paths, accounts=accounts, index=index)
            for index in range(count)
        ]
    except LabelStudioError as exc:
        log.warning(
            "demo.annotators_shared",
            reason=str(exc),
            action="all simulated annotators use the demo user and take turns",
        )
        return AnnotatorPool(tokens=(fallback,) * count, shared=True)
    return AnnotatorPool(tokens=tuple(tokens), shared=False)


async def _annotator_secret(
    url: str, *, paths: DemoPaths, accounts: list[dict[str, str]], index: int
) -> Secret:
    """The token of annotator `index`: stored and still valid, or fetched (and stored).

    A stored token stops working when the Label Studio data was deleted; the account is
    then signed up again with the same email and password.
    """
    if index >= len(accounts):
        accounts.append(
            {
                "email": f"annotator{index + 1}-{secrets.token_hex(3)}@example.com",
                "password": secrets.token_urlsafe(12),
            }
        )
        _save_accounts(paths, accounts)
    account = accounts[index]
    stored = account.get("token")
    if stored:
        register_secret(stored)
        secret = Secret(stored, source=f"annotator {account['email']}")
        try:
            async with LabelStudioGateway(url=url, token=secret, max_attempts=2) as gateway:
                await gateway.check_auth()
        except LabelStudioAuthError:
            log.info("demo.annotator_token_renewed", email=account["email"])
        else:
            return secret
    secret = await annotator_token(
        url, email=account["email"], password=Secret(account["password"])
    )
    register_secret(secret.reveal())
    account["token"] = secret.reveal()
    _save_accounts(paths, accounts)
    return secret


def _save_accounts(paths: DemoPaths, accounts: list[dict[str, str]]) -> None:
    write_private(paths.annotators_file, json.dumps({"annotators": accounts}, indent=2) + "\n")


@dataclass
class AnnotationCounter:
    submitted: int = 0
    failures: int = 0


async def simulate_annotator(
    *,
    url: str,
    token: Secret,
    project_id: int,
    schema: LabelingSchema,
    answers: Mapping[int, str],
    pause: float,
    counter: AnnotationCounter,
    turn: asyncio.Lock | None,
    seed: int,
) -> None:
    """Ask Label Studio for the next task, "read" it, answer with the true label; repeat.

    `pause` is the time from one `next` to the next, requests included (jittered), so the
    rate holds whatever Label Studio's latency is, until Label Studio itself is the limit.
    `turn`, when given, is held from `next` to the annotation: annotators that share one
    user must not ask for a task while another one's is still open.
    """
    rng = random.Random(seed)
    async with LabelStudioGateway(url=url, token=token) as gateway:
        while True:
            started = time.monotonic()
            try:
                async with turn if turn is not None else contextlib.nullcontext():
                    task = await gateway.next_task(project_id)
                    if task is None:
                        log.info("demo.annotators.queue_empty", project_id=project_id)
                        await asyncio.sleep(10.0)
                        continue
                    reading = pause * rng.uniform(0.6, 1.4) - (time.monotonic() - started)
                    await asyncio.sleep(max(0.0, reading))
                    label = true_label(task, answers)
                    await gateway.create_annotation(
                        int(task["id"]), schema=schema, label=label, was_cancelled=label is None
                    )
                counter.submitted += 1
            except LabelStudioError as exc:
                counter.failures += 1
                log.warning("demo.annotators.failed", error=str(exc))
                await asyncio.sleep(2.0)


async def report_progress(counter: AnnotationCounter, *, every: float) -> None:
    started = time.monotonic()
    while True:
        await asyncio.sleep(every)
        elapsed = time.monotonic() - started
        log.info(
            "demo.annotators.progress",
            submitted=counter.submitted,
            per_second=round(counter.submitted / elapsed, 2),
            failures=counter.failures,
        )


# --- a session: project, config, daemon, annotators, summary -----------------------------


async def run_session(
    *,
    url: str,
    token: Secret,
    paths: DemoPaths,
    reviews: ReviewSets,
    options: SessionOptions,
    on_ready: Callable[[int], None] | None = None,
    stop_when: Callable[[int], Awaitable[object]] | None = None,
) -> DemoSummary:
    """Set up the project and config, run the daemon (and annotators) until stopped.

    It stops on SIGINT/SIGTERM, after `options.seconds`, or when `stop_when(project_id)`
    returns (a test waits for a version that way instead of for a fixed time).
    `on_ready(project_id)` is called once the project and config exist, before the daemon
    starts: the command prints its banner there.
    """
    from aldaemon.service.daemon import Daemon  # the service shell; imported when a session runs
    from aldaemon.service.runtime import Runtime

    register_secret(token.reveal())
    async with LabelStudioGateway(url=url, token=token) as gateway:
        await gateway.check_auth()
        project_id, created = await ensure_project(gateway, paths, reviews.train)
    if created:
        forget_local_state(paths.state_dir, project_id)
    if not paths.token_file.exists():
        write_private(paths.token_file, token.reveal() + "\n")
    config = ensure_config(paths, url=url, project_id=project_id, options=options)
    schema = parse_labeling_config(LABEL_CONFIG)
    if on_ready is not None:
        on_ready(project_id)
    pool = None
    if options.annotators > 0:
        pool = await ensure_annotators(
            url=url, paths=paths, count=options.annotators, fallback=token
        )
    counter = AnnotationCounter()
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
                answers=labels_by_review_id(reviews.train),
                options=options,
                counter=counter,
            )
        try:
            await serving
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            _restore_default_signals()
    return await asyncio.to_thread(
        summarize,
        state_dir=config.state.dir,
        project_id=project_id,
        test=reviews.test,
        submitted=counter.submitted,
        seconds=time.monotonic() - started,
    )


def start_annotators(
    pool: AnnotatorPool,
    *,
    url: str,
    project_id: int,
    schema: LabelingSchema,
    answers: Mapping[int, str],
    options: SessionOptions,
    counter: AnnotationCounter,
) -> list[asyncio.Task[None]]:
    """One task per simulated annotator, plus one that logs their progress."""
    pause = annotator_pause(
        annotators=len(pool.tokens), labels_per_second=options.labels_per_second
    )
    turn = asyncio.Lock() if pool.shared else None
    log.info(
        "demo.annotators.started",
        annotators=len(pool.tokens),
        own_users=not pool.shared,
        labels_per_second=options.labels_per_second,
    )
    tasks = [
        asyncio.create_task(
            simulate_annotator(
                url=url,
                token=token,
                project_id=project_id,
                schema=schema,
                answers=answers,
                pause=pause,
                counter=counter,
                turn=turn,
                seed=index,
            ),
            name=f"demo-annotator-{index + 1}",
        )
        for index, token in enumerate(pool.tokens)
    ]
    tasks.append(asyncio.create_task(report_progress(counter, every=PROGRESS_EVERY)))
    return tasks


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


def summarize(
    *,
    state_dir: Path,
    project_id: int,
    test: Sequence[Review],
    submitted: int,
    seconds: float,
) -> DemoSummary:
    """Labels and versions from local state; each version's artifact scored on `test`."""
    from aldaemon.model.training import evaluate  # scikit-learn: only now, in this thread

    texts = [review.text for review in test]
    truth = [review.label for review in test]
    versions: list[VersionSummary] = []
    with Store.open(state_dir, lock=False) as store:
        labels = store.label_counts(project_id)
        rows = store.list_versions(project_id)
    for row in rows:
        quality: dict[str, float] = {}
        if row.artifact_path and Path(row.artifact_path).is_file() and texts:
            try:
                quality = evaluate(artifact_path=row.artifact_path, texts=texts, labels=truth)
            except AldaemonError as exc:
                log.warning("demo.evaluate_failed", version=row.name, error=str(exc))
        metrics = row.metrics or {}
        cv_accuracy = metrics.get("cv_accuracy")
        versions.append(
            VersionSummary(
                name=row.name,
                state=row.state,
                n_labels=row.n_labels,
                cv_accuracy=float(cv_accuracy) if cv_accuracy is not None else None,
                test_accuracy=quality.get("accuracy"),
                test_macro_f1=quality.get("macro_f1"),
            )
        )
    return DemoSummary(
        project_id=project_id,
        seconds=seconds,
        submitted=submitted,
        labels_per_class=labels,
        versions=tuple(versions),
        test_labels=dict(sorted(Counter(truth).items())),
    )


# --- the command ------------------------------------------------------------------------


@dataclass
class _Started:
    """The Label Studio this run started (and so must stop), if any."""

    server: LocalLabelStudio | None = None


async def connect_label_studio(
    paths: DemoPaths, *, port: int, started: _Started
) -> tuple[str, Secret, DemoUser | None]:
    """Reuse the Label Studio answering on `port`, or start ours; return URL and token."""
    url = f"http://127.0.0.1:{port}"
    demo = read_json(paths.demo_file)
    if await is_healthy(url):
        if not paths.token_file.exists():
            raise AldaemonError(
                f"a Label Studio already answers on {url}, but {paths.token_file} is missing: "
                "put an API token of that server in it (Account & Settings), or stop that "
                "server and run the demo again"
            )
        log.info("demo.label_studio_reused", url=url)
        return url, _read_token(paths), _stored_user(demo, paths)
    user = _stored_user(demo, paths)
    if user is None:
        if paths.label_studio_dir.exists():
            raise AldaemonError(
                f"{paths.label_studio_dir} exists but the demo user's token or password is "
                f"gone; delete {paths.root} to start over"
            )
        user = DemoUser(
            email=DEMO_EMAIL,
            password=Secret(secrets.token_urlsafe(9)),
            legacy_token=Secret(secrets.token_hex(20)),
        )
        update_json(paths.demo_file, email=user.email, password=user.password.reveal())
        write_private(paths.token_file, user.legacy_token.reveal() + "\n")
    register_secret(user.legacy_token.reveal())
    first_start = not paths.label_studio_dir.exists()
    log.info(
        "demo.label_studio_starting",
        url=url,
        data_dir=str(paths.label_studio_dir),
        log=str(paths.label_studio_log),
        note="the first start migrates a new database: about a minute" if first_start else None,
    )
    venv = await asyncio.to_thread(install_label_studio)
    server = LocalLabelStudio(
        venv=venv, data_dir=paths.label_studio_dir, port=port, log_path=paths.label_studio_log
    )
    started.server = server
    await server.start(user)
    log.info("demo.label_studio_ready", url=url)
    return url, user.legacy_token, user


def _read_token(paths: DemoPaths) -> Secret:
    value = paths.token_file.read_text(encoding="utf-8").strip()
    if not value:
        raise AldaemonError(f"{paths.token_file} is empty")
    return Secret(value, source=str(paths.token_file))


def _stored_user(demo: Mapping[str, Any], paths: DemoPaths) -> DemoUser | None:
    email, password = demo.get("email"), demo.get("password")
    if not isinstance(email, str) or not isinstance(password, str):
        return None
    if not paths.token_file.exists():
        return None
    return DemoUser(email=email, password=Secret(password), legacy_token=_read_token(paths))


def print_banner(
    *, url: str, user: DemoUser | None, paths: DemoPaths, options: SessionOptions, project_id: int
) -> None:
    config = paths.config_file
    login = f"{user.email} / {user.password.reveal()}" if user else "(your own account)"
    lines = [
        "",
        f"  Label Studio   {url}   (log: {paths.label_studio_log})",
        f"  login          {login}",
        f"  project        {url}/projects/{project_id}/data  ({PROJECT_TITLE})",
    ]
    if options.listen:
        lines.append(f"  daemon health  http://{options.listen}/healthz   metrics: /metrics")
    lines += [
        f"  status         aldaemon --config {config} status",
        f"  report         aldaemon --config {config} report --project {project_id} "
        f"--out {paths.root / 'report'}",
        "  Ctrl-C stops the daemon"
        + (", the annotators" if options.annotators else "")
        + " and Label Studio (if the demo started it).",
        "",
    ]
    print("\n".join(lines), flush=True)


async def _demo(
    args: argparse.Namespace, paths: DemoPaths, reviews: ReviewSets, started: _Started
) -> DemoSummary:
    options = SessionOptions(
        seconds=args.seconds,
        annotators=args.annotators if args.simulate else 0,
        labels_per_second=args.rate,
    )
    url, token, user = await connect_label_studio(paths, port=args.port, started=started)
    return await run_session(
        url=url,
        token=token,
        paths=paths,
        reviews=reviews,
        options=options,
        on_ready=lambda project_id: print_banner(
            url=url, user=user, paths=paths, options=options, project_id=project_id
        ),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m aldaemon.demo",
        description="Run aldaemon on a demo project in a local Label Studio.",
    )
    parser.add_argument("--simulate", action="store_true", help="add simulated annotators")
    parser.add_argument("--seconds", type=float, default=None, help="stop after N seconds")
    parser.add_argument("--annotators", type=int, default=3, help="simulated annotators (3)")
    parser.add_argument(
        "--rate", type=float, default=3.0, help="labels per second, all annotators (3)"
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="Label Studio port")
    parser.add_argument("--dir", default=".demo", help="demo directory (.demo)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.annotators < 1 or args.rate <= 0:
        print("demo: --annotators must be >= 1 and --rate > 0", file=sys.stderr)
        return 2
    configure_logging(log_format="console", level=os.environ.get("ALDAEMON_LOG_LEVEL", "info"))
    # A cycle that outlasts poll_interval (an upload takes ~10 s here) makes APScheduler warn
    # on every skipped tick; harmless (max_instances=1 is the point), but it floods a console.
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
    paths = DemoPaths(Path(args.dir).resolve())
    started = _Started()
    try:
        reviews = load_reviews()
        summary = asyncio.run(_demo(args, paths, reviews, started))
    except KeyboardInterrupt:
        print("\ndemo: interrupted", file=sys.stderr)
        return 130
    except AldaemonError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    finally:
        if started.server is not None:
            log.info("demo.label_studio_stopping", url=started.server.url)
            started.server.stop()
    print("\n" + render_summary(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
