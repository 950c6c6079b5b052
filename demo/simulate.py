"""Simulated annotators: asyncio tasks that label the demo project with the true labels.

Each one asks `GET /api/projects/{id}/next` as its own Label Studio user (see
demo/labelstudio.py for why one user each), "reads" the task for a while, and answers with
the label the dataset holds for it (demo/data.py). Together they keep a fixed rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from aldaemon.errors import LabelStudioAuthError, LabelStudioError
from aldaemon.records import LabelingSchema
from aldaemon.secret import Secret
from aldaemon.service.logs import register_secret
from demo.labelstudio import DemoGateway as LabelStudioGateway
from demo.labelstudio import annotator_token
from demo.paths import DemoPaths, read_json, write_private

log = structlog.get_logger(__name__)

# The true label of a task Label Studio served (None: skip it), from the data set.
Answer = Callable[[Mapping[str, Any]], str | None]
PROGRESS_EVERY = 15.0  # seconds between two `demo.annotators.progress` lines


def annotator_pause(*, annotators: int, labels_per_second: float) -> float:
    """Seconds each annotator "reads" a task so that all of them together reach the rate."""
    if annotators < 1 or labels_per_second <= 0:
        raise ValueError("need at least one annotator and a positive rate")
    return annotators / labels_per_second


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
    annotator uses the demo's own token and they take turns (see demo/labelstudio.py).
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
    answer: Answer,
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
                    label = answer(task)
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


def start_annotators(
    pool: AnnotatorPool,
    *,
    url: str,
    project_id: int,
    schema: LabelingSchema,
    answer: Answer,
    labels_per_second: float,
    counter: AnnotationCounter,
) -> list[asyncio.Task[None]]:
    """One task per simulated annotator, plus one that logs their progress."""
    pause = annotator_pause(annotators=len(pool.tokens), labels_per_second=labels_per_second)
    turn = asyncio.Lock() if pool.shared else None
    log.info(
        "demo.annotators.started",
        annotators=len(pool.tokens),
        own_users=not pool.shared,
        labels_per_second=labels_per_second,
    )
    tasks = [
        asyncio.create_task(
            simulate_annotator(
                url=url,
                token=token,
                project_id=project_id,
                schema=schema,
                answer=answer,
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
