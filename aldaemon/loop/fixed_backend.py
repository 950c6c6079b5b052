"""A backend that does not train (a fixed, pretrained model): only new or changed tasks.

How aldaemon recognises one: Label Studio is asked to train the backend (the first time
the retrain policy says train, as for any backend) and the backend's `model_version`,
read back from its `/setup`, did not move. That version is remembered in local state
(`backend.FIXED_MODEL_KEY`). From then on, while the backend still reports it:

    each cycle:  no training request (label thresholds do not matter), and
                 unlabeled tasks without a prediction of the active version (new tasks)
                 + tasks whose data changed since they were scored (their prediction of
                   the active version is deleted first)
                 -> /predict in batches (backend.predict_tasks)
                 -> uploaded under the ACTIVE version, so every unlabeled task keeps
                    exactly one prediction of it and the queue view shows the new ones

A backend that reports another version (a new model was deployed, or a training it ran
by itself finished) gets a new aldaemon version at once, scoring the whole pool with that
model WITHOUT a training request (asking would only start another training in a backend
that trains in the background, and so on forever); it stays "does not train on request".

Crash safety: the answers are kept in local state (`PENDING_KEY`) before the upload, and
the version's count in Label Studio says afterwards whether an interrupted upload landed
(count = stored + pending) or not (count = stored): never two predictions of one version
for a task. Any other count makes a new version instead of guessing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from enum import Enum
from typing import Any

import structlog

from aldaemon.labelstudio import ml_backends
from aldaemon.loop import backend
from aldaemon.loop.backend import data_digest as digest
from aldaemon.loop.context import CycleContext, CycleReport
from aldaemon.model import ml_backend
from aldaemon.records import LabelingSchema, PredictionRecord
from aldaemon.store import VersionRow
from aldaemon.sync.versions import VersionState

# {"version": name, "predictions": [PredictionRecord fields]}: answers not yet confirmed
PENDING_KEY = "ml_backend_pending_upload"


class TopUp(Enum):
    """What `top_up` did, and so what the cycle does next."""

    NOT_FIXED = "not_fixed"  # not a fixed model (or nothing active yet): decide as usual
    NEW_VERSION = "new_version"  # the backend changed its model, or counts disagree: rescore
    DONE = "done"  # the active version covers every unlabeled task


def fixed_model(ctx: CycleContext) -> str | None:
    """The version of the project's backend when it is known not to train, else None."""
    value = ctx.store.team_value(ctx.project.id, backend.FIXED_MODEL_KEY)
    return None if value is None else str(value)


async def top_up(
    ctx: CycleContext,
    schema: LabelingSchema,
    *,
    report: CycleReport,
    logger: structlog.typing.FilteringBoundLogger,
) -> TopUp:
    """Score and upload the new and changed unlabeled tasks of a fixed model's version."""
    store, project_id = ctx.store, ctx.project.id
    fixed = fixed_model(ctx)
    active = _active_version(ctx)
    if fixed is None or active is None or active.backend_version != fixed:
        return TopUp.NOT_FIXED
    if ctx.project.predictions.queue_depth:  # only the top K are published: rescore in full
        return TopUp.NOT_FIXED
    client = ctx.gateway.http_client
    connected = await ml_backends.find_backend(
        client, project_id=project_id, ml_backend_id=ctx.project.ml_backend_id
    )
    if connected.model_version != fixed:
        logger.info(
            "backend.model_changed", was=fixed, now=connected.model_version, action="new version"
        )
        return TopUp.NEW_VERSION
    report.version, report.backend_version = active.name, fixed
    live = set(store.known_task_ids(project_id))  # a deleted task took its prediction along
    stored = {
        p.task_id: p for p in store.load_predictions(project_id, active.name) if p.task_id in live
    }
    pool = {task_id: data for task_id, data in store.unlabeled_tasks(project_id) if data}
    digests = backend.scored_digests(ctx, active.name)
    changed = [
        t for t in pool if t in stored and digests.get(t, digest(pool[t])) != digest(pool[t])
    ]
    for task_id in changed:  # idempotent: redone after a crash, it finds nothing to delete
        await ml_backends.delete_task_predictions(
            client, task_id=task_id, model_version=active.name
        )
        del stored[task_id]
    if changed:
        _save(ctx, active.name, stored, digests)
    on_server = (await ctx.gateway.model_version_counts(project_id)).get(active.name, 0)
    pending = _pending(ctx, active.name)
    if pending and on_server == len(stored) + len(pending):
        stored.update({p.task_id: p for p in pending})  # the interrupted upload landed
        digests.update({p.task_id: digest(pool[p.task_id]) for p in pending if p.task_id in pool})
        _save(ctx, active.name, stored, digests)
    elif on_server != len(stored):
        logger.warning(
            "backend.count_mismatch",
            version=active.name,
            in_label_studio=on_server,
            stored=len(stored),
            action="a new version is made instead",
        )
        return TopUp.NEW_VERSION
    store.set_team_value(project_id, PENDING_KEY, None)
    todo = [t for t in pool if t not in stored]
    if not todo:
        return TopUp.DONE
    answers = await _predict(ctx, active, connected, todo)
    store.set_team_value(
        project_id,
        PENDING_KEY,
        {"version": active.name, "predictions": [asdict(p) for p in answers]},
    )
    created = await ctx.gateway.import_predictions(
        project_id, model_version=active.name, schema=schema, predictions=answers
    )
    if created != len(answers):
        return TopUp.NEW_VERSION  # the next cycle's count check sorts out what landed
    stored.update({p.task_id: p for p in answers})
    digests.update({p.task_id: digest(pool[p.task_id]) for p in answers})
    _save(ctx, active.name, stored, digests)
    store.set_team_value(project_id, PENDING_KEY, None)
    report.count("tasks_scored", len(answers))
    logger.info(
        "backend.topped_up",
        version=active.name,
        backend_version=fixed,
        new=len(todo) - len(changed),
        changed=len(changed),
    )
    return TopUp.DONE


def _active_version(ctx: CycleContext) -> VersionRow | None:
    active = [v for v in ctx.store.list_versions(ctx.project.id) if v.state == VersionState.ACTIVE]
    return max(active, key=lambda v: v.number) if active else None


def _pending(ctx: CycleContext, version: str) -> list[PredictionRecord]:
    value = ctx.store.team_value(ctx.project.id, PENDING_KEY)
    if not value or value.get("version") != version:
        return []
    return [_record(raw) for raw in value["predictions"]]


def _record(raw: Mapping[str, Any]) -> PredictionRecord:
    fields = dict(raw)
    for key in ("labels", "result"):
        if fields.get(key) is not None:
            fields[key] = tuple(fields[key])
    return PredictionRecord(**fields)


async def _predict(
    ctx: CycleContext,
    active: VersionRow,
    connected: ml_backends.MLBackend,
    task_ids: list[int],
) -> list[PredictionRecord]:
    client = ctx.gateway.http_client
    project = await ml_backends.project_for_backend(client, project_id=ctx.project.id)
    answers: list[ml_backend.BackendPrediction] = []

    async def keep(predictions: list[ml_backend.BackendPrediction]) -> None:
        backend.check_model(predictions, active)
        answers.extend(predictions)

    await backend.predict_tasks(
        ctx, backend_url=connected.url, project=project, task_ids=task_ids, on_batch=keep
    )
    return [backend.prediction_record(p) for p in answers]


def _save(
    ctx: CycleContext,
    version: str,
    stored: Mapping[int, PredictionRecord],
    digests: Mapping[int, str],
) -> None:
    """The version's predictions and the data each was made on, as they now stand."""
    ctx.store.save_predictions(ctx.project.id, version, [stored[t] for t in sorted(stored)])
    ctx.store.set_prediction_count(ctx.project.id, version, len(stored))
    backend.remember_scored(ctx, version, {t: d for t, d in digests.items() if t in stored})
