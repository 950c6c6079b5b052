"""Training and scoring through the ML backend connected to the project in Label Studio.

`BackendModel`: the `ProjectModel` of train.py for `model = "ml-backend"`; upload,
activation, the queue view and pruning are the built-in model's (publish.py, prune.py),
under aldaemon's own `<prefix>-v<n>`; the backend's own version is kept beside it
(`backend_version`).

Training: Label Studio is asked to train (`POST /api/ml/{id}/train`); it answers 200
whatever happened, so the outcome is read afterwards from the backend's state, error
message and model_version (`GET /api/ml/{id}`, labelstudio/ml_backends.py). State "ER"
is a failed training: the version fails and the project fails with the backend's
message. A version that did not move is a backend that does not train (a fixed model):
allowed, and the pool is scored again under a new aldaemon version.

Scoring: aldaemon calls the backend's `/predict` itself, `batch_size` tasks per call,
`timeout` seconds each, with the payload Label Studio sends. Each checked answer is
stored (store/backend.py) before the next call, so a crash or a backend restart resumes
with the tasks no stored batch holds. A short answer, a result for another config or an
answer without scores fails the version (nothing of it is uploaded); an unreachable
backend fails the cycle only, and the next cycle resumes the scoring.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import httpx
import numpy as np

from aldaemon.labelstudio import ml_backends
from aldaemon.loop.context import CycleContext
from aldaemon.loop.publish import fail_version
from aldaemon.loop.train import ProjectModel, Trained, policy_class_counts, policy_examples
from aldaemon.model import ml_backend
from aldaemon.records import PredictionRecord
from aldaemon.store import VersionRow
from aldaemon.store.backend import StoredBackendPrediction
from aldaemon.sync.scoring import select_queue

# Label Studio waits for the backend's /webhook up to its ML_TIMEOUT_TRAIN; wait longer.
TRAIN_REQUEST_TIMEOUT = 330.0
# Whole tasks are read from Label Studio this many at a time (rounded to whole batches).
TASKS_PER_READ = 500
# The backend's model_version when a training left it unchanged (a fixed model), or null.
FIXED_MODEL_KEY = "ml_backend_fixed_model"
# {"version": name, "digests": {task id: digest of the data its prediction was made on}}
SCORED_KEY = "ml_backend_scored_data"


class BackendModelChanged(ml_backend.BackendAnswerRejected):
    """The backend answered with another model than the one trained for this version."""


class BackendModel(ProjectModel):
    """The project's ML backend: Label Studio asks it to train (its version is kept), and
    aldaemon scores the pool through its `/predict`."""

    failure = ml_backends.MLBackendTrainingFailed
    ask_to_train = True
    n_labels = 0  # what it trains on, once prepared
    backend: ml_backends.MLBackend | None = None  # as connected, once prepared
    retrained = False  # the backend's version moved, once trained

    def failure_reason(self, exc: Exception) -> str:
        return str(exc)

    async def prepare(self, name: str) -> dict[str, Any]:
        self.report.version = name
        self.backend = await _connected_backend(self.ctx)
        self.n_labels = len(policy_examples(self.ctx))
        return {"n_labels": self.n_labels, "ml_backend": self.backend.id}

    async def train(self, name: str) -> Trained:
        backend = self.backend
        assert backend is not None
        started = time.perf_counter()
        outcome = (
            await ml_backends.train_backend(
                self.ctx.gateway.http_client, backend_id=backend.id, timeout=TRAIN_REQUEST_TIMEOUT
            )
            if self.ask_to_train
            else ml_backends.TrainingOutcome(
                backend=backend,
                version_before=backend.model_version,
                version_after=backend.model_version,
            )
        )
        seconds = time.perf_counter() - started
        self.retrained = outcome.version_moved
        return Trained(
            n_labels=self.n_labels,
            class_counts=policy_class_counts(self.ctx, self.schema),
            train_seconds=seconds,
            backend_version=outcome.version_after,
            finished_fields={
                "backend_version": outcome.version_after,
                "backend_retrained": outcome.version_moved,
            },
        )

    def trained(self, name: str, trained: Trained) -> None:
        self.report.backend_version = trained.backend_version
        # A version that did not move: a fixed model. Remembered, so later cycles score only
        # new or changed tasks instead of asking it to train (fixed_backend.py).
        fixed = None if self.retrained else trained.backend_version
        self.ctx.store.set_team_value(self.ctx.project.id, FIXED_MODEL_KEY, fixed)

    async def score(self, version: VersionRow) -> VersionRow:
        """Score the unlabeled pool through `/predict`, batch by batch; store the predictions."""
        ctx, report, logger = self.ctx, self.report, self.logger
        project_id = ctx.project.id
        store = ctx.store
        report.backend_version = version.backend_version
        client = ctx.gateway.http_client
        backend = await _connected_backend(ctx)
        project = await ml_backends.project_for_backend(client, project_id=project_id)
        pool = [task_id for task_id, data in store.unlabeled_tasks(project_id) if data]
        done = store.backend_batches(project_id, version.name)
        done_ids = {p.task_id for p in done}
        next_batch = max((p.batch for p in done), default=-1) + 1
        if done:
            logger.info(
                "score.resumed", version=version.name, batch=next_batch, tasks_done=len(done_ids)
            )

        async def record(predictions: list[ml_backend.BackendPrediction]) -> None:
            nonlocal next_batch
            check_model(predictions, version)
            store.record_backend_batch(
                project_id,
                version.name,
                batch=next_batch,
                predictions=[_stored(next_batch, p) for p in predictions],
            )
            report.count("tasks_scored", len(predictions))
            logger.info(
                "score.batch", version=version.name, batch=next_batch, tasks=len(predictions)
            )
            next_batch += 1

        try:
            await predict_tasks(
                ctx,
                backend_url=backend.url,
                project=project,
                task_ids=[task_id for task_id in pool if task_id not in done_ids],
                on_batch=record,
            )
        except ml_backend.BackendAnswerRejected as exc:
            store.drop_backend_batches(project_id, version.name)
            fail_version(ctx, version.name, reason=str(exc), logger=logger)
            raise
        live = set(pool)
        scored = [p for p in store.backend_batches(project_id, version.name) if p.task_id in live]
        predictions = _chosen(scored, depth=ctx.project.predictions.queue_depth)
        store.save_predictions(project_id, version.name, predictions)
        texts = dict(store.unlabeled_tasks(project_id))
        remember_scored(
            ctx, version.name, {p.task_id: data_digest(texts[p.task_id] or "") for p in predictions}
        )
        store.drop_backend_batches(project_id, version.name)
        return store.mark_scored(project_id, version.name, n_predictions=len(predictions))


class BackendCurrentModel(BackendModel):
    """A backend known not to train on request, whose model changed by itself: no
    training request; the new version scores the pool with its current model."""

    ask_to_train = False


async def predict_tasks(
    ctx: CycleContext,
    *,
    backend_url: str,
    project: ml_backends.ProjectForBackend,
    task_ids: Sequence[int],
    on_batch: Callable[[list[ml_backend.BackendPrediction]], Awaitable[None]],
) -> None:
    """Send `task_ids` to the backend's `/predict`, whole (as Label Studio sends them),
    `batch_size` per call; `on_batch` gets each checked answer before the next call."""
    options = ctx.project.ml_backend
    per_read = options.batch_size * max(1, TASKS_PER_READ // options.batch_size)
    async with httpx.AsyncClient() as backend_http:
        for start in range(0, len(task_ids), per_read):
            tasks = await ml_backends.tasks_for_predict(
                ctx.gateway.http_client,
                project_id=ctx.project.id,
                task_ids=task_ids[start : start + per_read],
            )
            await ml_backend.predict_all(
                backend_http,
                url=backend_url,
                tasks=tasks,
                project=ml_backend.project_uid(project.id, project.created_at),
                label_config=project.label_config,
                batch_size=options.batch_size,
                timeout=options.timeout,
                on_batch=lambda _number, predictions: on_batch(predictions),
            )


async def _connected_backend(ctx: CycleContext) -> ml_backends.MLBackend:
    """The ML backend the project's config names, as Label Studio has it connected."""
    return await ml_backends.find_backend(
        ctx.gateway.http_client, project_id=ctx.project.id, ml_backend_id=ctx.project.ml_backend_id
    )


def check_model(predictions: Sequence[ml_backend.BackendPrediction], version: VersionRow) -> None:
    """Refuse answers of another model than the trained one (a backend restarted untrained)."""
    expected = version.backend_version
    others = sorted(
        {p.model_version for p in predictions if p.model_version not in (expected, None)} - {None}
    )
    if expected is not None and others:
        raise BackendModelChanged(
            f"the ML backend now answers with model version {', '.join(map(str, others))}, "
            f"not {expected} which it trained for {version.name} (did it restart without its "
            "model?); nothing of this version is uploaded, a new training follows"
        )
    out_of_range = [p.task_id for p in predictions if not 0.0 <= p.score <= 1.0]
    if out_of_range:
        raise ml_backend.BackendAnswerRejected(
            f"the ML backend's scores must be in [0, 1] (lower = less confident); tasks "
            f"{out_of_range[:10]} are not"
        )


def data_digest(data: str) -> str:
    """A short digest of the task data a prediction was made on, to notice a change."""
    return hashlib.blake2b(data.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def remember_scored(ctx: CycleContext, version: str, digests: Mapping[int, str]) -> None:
    """Record the data (digests, by task id) the version's predictions were made on."""
    value = {"version": version, "digests": {str(t): d for t, d in digests.items()}}
    ctx.store.set_team_value(ctx.project.id, SCORED_KEY, value)


def scored_digests(ctx: CycleContext, version: str) -> dict[int, str]:
    """What `remember_scored` recorded for `version` (empty for another version)."""
    value = ctx.store.team_value(ctx.project.id, SCORED_KEY) or {}
    if value.get("version") != version:
        return {}
    return {int(t): str(d) for t, d in value.get("digests", {}).items()}


def _stored(batch: int, prediction: ml_backend.BackendPrediction) -> StoredBackendPrediction:
    return StoredBackendPrediction(
        batch=batch,
        task_id=prediction.task_id,
        result=tuple(prediction.result),
        score=prediction.score,
        model_version=prediction.model_version,
    )


def _chosen(
    scored: Sequence[StoredBackendPrediction], *, depth: int | None
) -> list[PredictionRecord]:
    """The predictions to upload, by task id: all, or the `queue_depth` least confident."""
    chosen = select_queue(np.asarray([p.score for p in scored], dtype=float), depth=depth)
    records = [prediction_record(scored[int(i)]) for i in chosen]
    return sorted(records, key=lambda record: record.task_id)


def prediction_record(
    prediction: StoredBackendPrediction | ml_backend.BackendPrediction,
) -> PredictionRecord:
    """A backend's checked prediction as aldaemon uploads it."""
    return PredictionRecord(
        task_id=prediction.task_id,
        label=_first_label(prediction.result),
        score=prediction.score,
        result=tuple(prediction.result),
    )


def _first_label(result: Sequence[dict[str, Any]]) -> str:
    """For display and agreement only: the first label any region chose, else ""."""
    for region in result:
        value = region.get("value")
        if not isinstance(value, dict):
            continue
        for key, chosen in value.items():
            if (key == "choices" or key.endswith("labels")) and chosen:
                return str(chosen[0])
    return ""
