"""One project's cycle, as a sequence of steps that a crash can resume.

    read project -> poll -> reconcile -> (resync) -> resume or decide -> train -> score
        -> upload -> activate -> view                            -> prune (own task)

This module orchestrates; the steps live beside it: `poll.py` (poll, resync),
`schema_change.py` (labeling-config changes), `publish.py` (upload, verify, activate,
queue view), `prune.py` (run by the service beside cycles, never holding back a publish).

Progress of a version lives in the store's `versions.state` (`sync.versions.VersionState`),
written BEFORE the next step touches Label Studio: a crash resumes the unfinished step of
the unfinished version instead of starting a second one (invariant 5).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable
from typing import TypeVar

import structlog

from aldaemon.loop import backend, fixed_backend, intervals, poll, team, train
from aldaemon.loop.context import CycleContext, CycleReport
from aldaemon.loop.ownership import check_queue_view, handle_drift
from aldaemon.loop.publish import Publisher, fail_version
from aldaemon.loop.removed_labels import republish_without_removed_labels
from aldaemon.loop.schema_change import LabelingConfigWatch
from aldaemon.records import LabelingSchema
from aldaemon.store import VersionRow
from aldaemon.sync.policy import (
    IntervalAnchor,
    TrainingDecision,
    decide_training,
)
from aldaemon.sync.versions import (
    VersionState,
    label_changes_since_training,
    last_trained,
    model_misfit,
)

log = structlog.get_logger(__name__)

RESYNC_BEFORE_TRAINING_SECONDS = 300.0
T = TypeVar("T")


class Cycle:
    """One run of one project's loop. Create, `await run()`, read the report."""

    def __init__(
        self,
        ctx: CycleContext,
        *,
        force_resync: bool = False,
        forced_training: bool = False,
    ) -> None:
        self.ctx = ctx
        self.project_id = ctx.project.id
        self.force_resync = force_resync
        self.forced_training = forced_training
        self.report = CycleReport(project_id=self.project_id, cycle_id=uuid.uuid4().hex[:12])
        self._resynced = False
        self.log = log.bind(project_id=self.project_id, cycle_id=self.report.cycle_id)
        self.labeling_config = LabelingConfigWatch(ctx, logger=self.log)
        self.publisher = Publisher(
            ctx, report=self.report, resync_once=self._resync_once, logger=self.log
        )

    async def _step(self, name: str, work: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            return await work
        finally:
            self.report.seconds[name] = self.report.seconds.get(name, 0.0) + (
                time.perf_counter() - started
            )

    async def run(self) -> CycleReport:
        store = self.ctx.store
        started_at = self.ctx.clock()
        try:
            # Inside the try: a store that cannot record the start (a full disk) fails
            # the cycle like any other step, instead of escaping with the report "ok".
            store.record_cycle(
                self.project_id,
                cycle_id=self.report.cycle_id,
                started_at=started_at,
                finished_at=None,
                outcome="running",
                summary={},
            )
            await self._run_steps()
        except asyncio.CancelledError:
            self.report.outcome = "cancelled"
            raise
        except Exception as exc:
            self.report.outcome = "failed"
            self.report.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            store.record_cycle(
                self.project_id,
                cycle_id=self.report.cycle_id,
                started_at=started_at,
                finished_at=self.ctx.clock(),
                outcome=self.report.outcome,
                summary=self.report.as_log_fields(),
            )
        return self.report

    async def _run_steps(self) -> None:
        schema, change = await self._step("read_project", self.labeling_config.read())
        assert self.labeling_config.project is not None
        await handle_drift(self.ctx, self.labeling_config.project, logger=self.log)
        text_field_changed = change is not None and change.text_field_changed
        await self._step(
            "poll",
            poll.poll(
                self.ctx,
                schema,
                read_all=change is not None and (text_field_changed or change.answers_reshaped),
                report=self.report,
                logger=self.log,
            ),
        )
        if self.resync_due():
            await self._step("resync", self._resync())
            await self._step("resync", check_queue_view(self.ctx, logger=self.log))
        await self._step("team_views", team.refresh_views(self.ctx, logger=self.log))
        version = self.ctx.store.unfinished_version(self.project_id)
        if version is not None:
            version = self.labeling_config.abandon_if_outdated(
                version, schema, text_field_changed=text_field_changed
            )
        if version is None:
            version = await self._decide_and_train(schema, text_field_changed=text_field_changed)
            if version is None:
                return
        else:
            self.labeling_config.remember()
            self.log.info("version.resumed", version=version.name, state=version.state)
        await self._publish(version, schema)

    async def _resync(self) -> None:
        await poll.resync(self.ctx, report=self.report, logger=self.log)
        self._resynced = True
        # The interval to the next one starts now, on the monotonic clock.
        resynced_at = self.ctx.store.sync_state(self.project_id).last_resync_at
        if resynced_at is not None:
            self.ctx.intervals.resync = IntervalAnchor(
                attempt_at=resynced_at, elapsed=0.0, monotonic=self.ctx.monotonic()
            )

    async def _resync_once(self) -> None:
        """Resync unless this cycle already did."""
        if not self._resynced:
            await self._step("resync", self._resync())

    def _resync_older_than(self, seconds: float) -> bool:
        if self._resynced:
            return False
        elapsed = intervals.seconds_since_resync(self.ctx)
        return elapsed is None or elapsed >= seconds

    def resync_due(self) -> bool:
        """The periodic full id listing is due: `resync_interval` has passed since the
        last one, measured on the monotonic clock (a wall-clock step neither brings it
        forward nor holds it back), or it is forced, or there never was one."""
        if self.force_resync:
            return True
        elapsed = intervals.seconds_since_resync(self.ctx)
        return elapsed is None or elapsed >= self.ctx.daemon.resync_interval

    # --- decide and train -----------------------------------------------------------------

    async def _decide_and_train(
        self, schema: LabelingSchema, *, text_field_changed: bool
    ) -> VersionRow | None:
        if self.ctx.project.uses_ml_backend:
            topped = await self._step(
                "score", fixed_backend.top_up(self.ctx, schema, report=self.report, logger=self.log)
            )
            if topped is fixed_backend.TopUp.DONE:  # a fixed model: no training, ever
                self.labeling_config.remember()
                self.report.decision = "fixed ML backend model: new and changed tasks scored"
                self.report.outcome = "ok" if self.report.counts.get("tasks_scored") else "idle"
                return None
            if topped is fixed_backend.TopUp.NEW_VERSION:  # its model changed by itself
                self.report.decision = "ML backend's model changed: the whole pool rescored"
                rescore = backend.BackendCurrentModel(
                    self.ctx, schema, report=self.report, logger=self.log
                )
                return await self._step("train", self._train_model(rescore))
        decision = self._decide(schema, text_field_changed=text_field_changed)
        project = self.labeling_config.project
        if (
            decision.train
            and self._resync_older_than(RESYNC_BEFORE_TRAINING_SECONDS)
            and (project is None or poll.counts_disagree(self.ctx, project))
        ):
            # Labels of tasks deleted in Label Studio should not train the model, and a
            # deleted task makes Label Studio refuse a whole upload: list ids first, unless
            # that was done moments ago or Label Studio counts as many tasks as local
            # state (10k ids take seconds, 1M take minutes; a refused upload still fails
            # only its version, and a new one follows).
            await self._step("resync", self._resync())
            decision = self._decide(schema, text_field_changed=text_field_changed)
        decision = team.hold_if_stable(self.ctx, decision, logger=self.log)
        self.report.decision = decision.reason
        self.ctx.store.set_meta(self.project_id, last_decision=decision.reason)
        if not decision.train:
            self.labeling_config.remember()
            # No new model yet: the active one must still not show a label the config lost.
            republished = await republish_without_removed_labels(self.ctx, schema, logger=self.log)
            if republished is None:
                self.report.outcome = "idle"
            return republished
        return await self._step("train", self._train(schema))

    async def _train(self, schema: LabelingSchema) -> VersionRow:
        """Train a new version of the project's model: the built-in one or its ML backend."""
        return await self._train_model(self._model(schema))

    def _model(self, schema: LabelingSchema) -> train.ProjectModel:
        """The project's model for this cycle: the built-in one or its ML backend."""
        kind = backend.BackendModel if self.ctx.project.uses_ml_backend else train.BuiltInModel
        return kind(self.ctx, schema, report=self.report, logger=self.log)

    async def _train_model(self, model: train.ProjectModel) -> VersionRow:
        return await train.train_version(
            self.ctx, model, labeling_config=self.labeling_config, logger=self.log
        )

    def _decide(self, schema: LabelingSchema, *, text_field_changed: bool) -> TrainingDecision:
        store = self.ctx.store
        retrain = self.ctx.project.retrain
        versions = store.list_versions(self.project_id)
        last = last_trained(versions)
        counts = train.policy_class_counts(self.ctx, schema)
        changes = label_changes_since_training(
            label_changes=store.sync_state(self.project_id).label_changes, versions=versions
        )
        misfit = ", ".join(
            reason
            for reason in (
                model_misfit(
                    model_labels=last.class_counts if last else None, schema_labels=schema.labels
                ),
                "text field renamed" if text_field_changed and last else None,
            )
            if reason
        )
        # A model that does not fit the labeling config counts as no model: retrain at
        # once, new labels' cold start permitting, whatever the label-change threshold says.
        decision = decide_training(
            label_changes_since_training=changes,
            seconds_since_training=intervals.seconds_since_training_attempt(
                self.ctx, logger=self.log
            ),
            class_counts={label: counts.get(label, 0) for label in schema.labels},
            labels=schema.labels,
            min_new_annotations=retrain.min_new_annotations,
            min_interval=retrain.min_interval,
            min_per_class=retrain.min_per_class,
            max_interval=retrain.max_interval,
            forced=self.forced_training or bool(misfit),
            has_model=last is not None and not misfit,
        )
        if misfit and decision.train:
            decision = TrainingDecision(True, f"labeling config changed ({misfit}): retraining")
        return decision

    # --- publish --------------------------------------------------------------------------

    async def _publish(self, version: VersionRow, schema: LabelingSchema) -> None:
        self.report.version = version.name
        if version.state == VersionState.TRAINING:
            version = await self._step("train", self._retrain_interrupted(version, schema))
        if version.state == VersionState.TRAINED:
            version = await self._step("score", self._model(schema).score(version))
        if version.state in (VersionState.SCORED, VersionState.UPLOADING):
            version = await self._step("upload", self.publisher.upload(version, schema))
        if version.state == VersionState.UPLOADED:
            await self._step("activate", self.publisher.activate(version))
        await self._step("team_views", team.refresh_views(self.ctx, logger=self.log))

    async def _retrain_interrupted(self, version: VersionRow, schema: LabelingSchema) -> VersionRow:
        """A training killed mid-way left nothing in Label Studio: train that version again."""
        fail_version(self.ctx, version.name, reason="training interrupted", logger=self.log)
        self.log.info("train.restarting", interrupted=version.name)
        return await self._train(schema)
