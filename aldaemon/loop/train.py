"""Training and scoring a version.

`train_version` owns a training's protocol for both model kinds (`ProjectModel`): the
version is started, trained, recorded, or failed on the model's error. `BuiltInModel`
trains and scores in the model worker; `backend.BackendModel` drives an ML backend.
Both steps record their result in the store in one transition (`mark_trained`, `mark_scored`)
before the cycle moves on, so a crash after either resumes at the next step.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import structlog

from aldaemon.errors import ModelError
from aldaemon.loop import team
from aldaemon.loop.context import CycleContext, CycleReport
from aldaemon.loop.ownership import refuse_foreign_writer
from aldaemon.loop.publish import fail_version
from aldaemon.loop.schema_change import LabelingConfigWatch
from aldaemon.model import requests
from aldaemon.model.queue import merge_pool_scores
from aldaemon.records import LabelingSchema, PredictionRecord
from aldaemon.store import VersionRow
from aldaemon.sync.label_sets import answer_labels, cold_start_counts, keep_config_answers
from aldaemon.sync.versions import (
    TrainingExample,
    own_version_number,
    training_examples,
    version_name,
)


def policy_examples(ctx: CycleContext) -> list[TrainingExample]:
    """One example per labeled task, as the project's `[projects.labels] policy` decides."""
    return training_examples(ctx.store.annotated_tasks(ctx.project.id), ctx.project.labels.policy)


def policy_class_counts(ctx: CycleContext, schema: LabelingSchema) -> dict[str, int]:
    """Per config label, the count `min_per_class` is held against, under the label policy."""
    return cold_start_counts(
        ctx.store.annotated_tasks(ctx.project.id), schema, ctx.project.labels.policy
    )


async def next_version_number(ctx: CycleContext) -> int:
    """Above every number we used and every "<prefix>-v<n>" Label Studio already holds.

    Label Studio may hold our versions that local state forgot (a rebuilt state dir);
    reusing a name would put two predictions on one task under one version.
    """
    prefix = ctx.project.predictions.version_prefix
    on_server = await ctx.gateway.model_version_counts(ctx.project.id)
    refuse_foreign_writer(ctx, list(on_server))
    numbers = [own_version_number(prefix, name) for name in on_server]
    highest_remote = max((n for n in numbers if n is not None), default=0)
    return max(ctx.store.next_version_number(ctx.project.id), highest_remote + 1)


async def start_version(ctx: CycleContext, *, labeling_config: LabelingConfigWatch) -> str:
    """Record the next version as started, from the sync's label-change count, and
    return its name (both model kinds)."""
    number = await next_version_number(ctx)
    name = version_name(ctx.project.predictions.version_prefix, number)
    label_changes = ctx.store.sync_state(ctx.project.id).label_changes
    ctx.store.create_version(
        ctx.project.id, name=name, number=number, label_changes=label_changes, now=ctx.clock()
    )
    labeling_config.remember()  # from here on, an interrupted training is resumed
    return name


@dataclass(frozen=True)
class Trained:
    """What a model's training produced: the facts `mark_trained` records."""

    n_labels: int
    class_counts: Mapping[str, int]
    train_seconds: float
    metrics: Mapping[str, Any] = field(default_factory=dict)
    artifact_path: str | None = None
    backend_version: str | None = None
    finished_fields: Mapping[str, Any] = field(default_factory=dict)  # for train.finished

    def recorded(self) -> dict[str, Any]:
        """The facts as `Store.mark_trained` takes them."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "finished_fields"}


class ProjectModel(abc.ABC):
    """The project's model as one cycle drives it: the built-in one or an ML backend.

    `train_version` owns the protocol of a training; the model trains and scores.
    """

    failure: ClassVar[type[Exception]]  # the model's error: the version fails, it goes on

    def __init__(
        self,
        ctx: CycleContext,
        schema: LabelingSchema,
        *,
        report: CycleReport,
        logger: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self.ctx, self.schema, self.report, self.logger = ctx, schema, report, logger

    @abc.abstractmethod
    def failure_reason(self, exc: Exception) -> str:
        """Why the version failed, for `version.failed`."""

    @abc.abstractmethod
    async def prepare(self, name: str) -> dict[str, Any]:
        """Get ready to train version `name`; the fields of `train.started` (n_labels...)."""

    @abc.abstractmethod
    async def train(self, name: str) -> Trained:
        """Train the model for version `name`."""

    @abc.abstractmethod
    def trained(self, name: str, trained: Trained) -> None:
        """What follows the recorded training (suspects, the backend's state...)."""

    @abc.abstractmethod
    async def score(self, version: VersionRow) -> VersionRow:
        """Score the unlabeled pool with the trained version; store the chosen predictions."""


async def train_version(
    ctx: CycleContext,
    model: ProjectModel,
    *,
    labeling_config: LabelingConfigWatch,
    logger: structlog.typing.FilteringBoundLogger,
) -> VersionRow:
    """Record a new version, train `model` for it and record the training."""
    name = await start_version(ctx, labeling_config=labeling_config)
    logger.info("train.started", version=name, **await model.prepare(name))
    try:
        trained = await model.train(name)
    except model.failure as exc:
        fail_version(ctx, name, reason=model.failure_reason(exc), logger=logger)
        raise
    version = ctx.store.mark_trained(
        ctx.project.id,
        name,
        trained_at=ctx.clock(),
        **trained.recorded(),
    )
    model.trained(name, trained)
    logger.info(
        "train.finished",
        version=name,
        n_labels=trained.n_labels,
        seconds=round(trained.train_seconds, 3),
        **trained.finished_fields,
    )
    return version


class BuiltInModel(ProjectModel):
    """The built-in model: trained in the worker on the current training examples, and
    scoring the unlabeled pool there."""

    failure = ModelError
    examples: Sequence[TrainingExample] = ()  # what it trains on, once prepared
    suspects: Sequence[int] = ()  # task ids, once trained

    def failure_reason(self, exc: Exception) -> str:
        return f"training failed: {exc}"

    async def prepare(self, name: str) -> dict[str, Any]:
        self.examples = self._config_examples()
        self.ctx.artifacts_dir.mkdir(parents=True, exist_ok=True)
        return {"n_labels": len(self.examples)}

    def _config_examples(self) -> list[TrainingExample]:
        """The policy's examples, without the answers the labeling config no longer has."""
        schema = self.schema
        examples = policy_examples(self.ctx)
        allowed = set(schema.labels)
        meta_schema = self.ctx.store.get_meta(self.ctx.project.id).schema or {}
        removed = set(meta_schema.get("removed_labels", []))
        # Labels removed from the config were announced once when the config changed.
        foreign = [
            e.task_id for e in examples if not set(answer_labels(e, schema)) <= allowed | removed
        ]
        if foreign:
            self.logger.warning(
                "train.labels_not_in_config",
                task_ids=foreign[:50],
                count=len(foreign),
                action="annotations with labels the config no longer has are left out",
            )
        if schema.multiple or schema.spans or schema.controls:
            return keep_config_answers(examples, schema)  # the example stays; unknown labels go
        return [e for e in examples if e.label in allowed]

    async def train(self, name: str) -> Trained:
        artifact = self.ctx.artifacts_dir / f"{name}.joblib"
        result = await self.ctx.worker.train(
            _training_request(self.ctx, self.schema, self.examples, artifact_path=str(artifact))
        )
        self.suspects = [self.examples[i].task_id for i in result.suspects]
        return Trained(
            n_labels=result.n_labels,
            class_counts=result.class_counts,
            train_seconds=result.train_seconds,
            metrics=result.metrics,
            artifact_path=result.artifact_path,
            finished_fields=result.metrics,
        )

    def trained(self, name: str, trained: Trained) -> None:
        self.report.version = name
        team.record_suspects(self.ctx, name, self.suspects, report=self.report, logger=self.logger)

    async def score(self, version: VersionRow) -> VersionRow:
        """Score the unlabeled pool with the version's model; store the chosen predictions.

        The worker reads the pool from the store itself (model/pool_scoring.py) and sends
        back the `queue_depth` most informative tasks only.
        """
        ctx, report, logger = self.ctx, self.report, self.logger
        project_id = ctx.project.id
        options = ctx.project.predictions
        assert version.artifact_path is not None
        request = requests.PoolScoringRequest(
            artifact_path=version.artifact_path,
            store=ctx.store.address,
            project_id=project_id,
            strategy=options.strategy,
            depth=options.queue_depth,
            random_fraction=options.random_fraction,
            clusters=options.clusters,
            seed=version.number,
        )
        started = ctx.monotonic()
        if analyzed := ctx.store.refresh_pool_statistics():
            logger.info(
                "store.analyzed",
                tables=analyzed,
                seconds=round(ctx.monotonic() - started, 3),
                reason="the planner's statistics were missing or stale",
            )
        # Clusters group the whole queue, so a clustered scoring stays in one job.
        shards = 1 if options.clusters else ctx.worker.parallelism
        scored = merge_pool_scores(
            await asyncio.gather(
                *(
                    ctx.worker.score_pool(dataclasses.replace(request, shard=shard))
                    for shard in ctx.store.pool_shards(project_id, shards=shards)
                )
            ),
            depth=options.queue_depth,
        )
        if scored.n_skipped:
            logger.warning(
                "score.tasks_skipped",
                reason="text field missing, empty or not a string",
                task_ids=list(scored.skipped_ids),
                count=scored.n_skipped,
            )
        queue = scored.queue
        predictions = [
            PredictionRecord(
                task_id=queue.task_ids[i],
                label=queue.labels[i],
                score=float(queue.scores[i]),
                cluster=queue.clusters[i] if queue.clusters is not None else None,
                labels=queue.label_sets[i] if queue.label_sets is not None else None,
            )
            for i in range(len(queue.task_ids))
        ]
        store = ctx.store
        store.save_predictions(project_id, version.name, predictions)
        scored_version = store.mark_scored(project_id, version.name, n_predictions=len(predictions))
        report.count("tasks_scored", scored.n_scored)
        report.count("tasks_skipped", scored.n_skipped)
        report.count("features_computed", scored.features_computed)
        report.count("features_reused", scored.features_reused)
        await team.score_stop_set(ctx, scored_version, logger=logger)
        return scored_version


def _training_request(
    ctx: CycleContext,
    schema: LabelingSchema,
    examples: Sequence[TrainingExample],
    *,
    artifact_path: str,
) -> requests.TrainingRequest:
    """The training job the labeling config's shape calls for."""
    texts = [e.text for e in examples]
    answers = [e.labels for e in examples]  # per example: codes, label sets or spans
    if schema.controls:
        return requests.ControlsTraining(
            texts=texts,
            artifact_path=artifact_path,
            factory_ref=ctx.project.model,
            answers=answers,
            controls=schema.controls,
        )
    if schema.spans:
        return requests.SpanTraining(
            texts=texts, artifact_path=artifact_path, answers=answers, labels=schema.labels
        )
    if schema.multiple:
        return requests.MultiLabelTraining(
            texts=texts, artifact_path=artifact_path, answers=answers, labels=schema.labels
        )
    return requests.SingleLabelTraining(
        texts=texts,
        artifact_path=artifact_path,
        factory_ref=ctx.project.model,
        labels=[e.label for e in examples],
    )
