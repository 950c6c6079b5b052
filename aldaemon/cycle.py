"""One project's cycle, as a sequence of steps that a crash can resume.

    read project -> poll -> reconcile -> (resync) -> resume or decide -> train -> score
        -> upload -> activate -> view                            -> prune (own task)

Progress of a version lives in the store's `versions.state`, written BEFORE the next step
touches Label Studio:

    training -> trained -> scored -> uploading -> uploaded -> active -> superseded -> pruned
                                           \\-> (crash) resumed next cycle, never restarted

The upload is the delicate step. Batches are the stored predictions cut at fixed
positions, so after a crash the batch in flight is known exactly; Label Studio's count for
the version tells whether that batch landed (a bulk import is one transaction), so it is
sent again only when it did not. That keeps "at most one prediction per (task, version)".
A version is activated only after its upload is complete (invariant 3).

Pruning is slow on the server (about 10 ms per prediction) and never holds back the
next publish: `prune_own_versions` is a separate coroutine the daemon runs beside cycles.

The labeling config can change under the daemon. Each change is logged once, with what the
daemon does about it, and handled without a flag that could be lost in a crash:

- a label added or removed: the last model's labels (its `class_counts`) no longer match
  the config's, so the next decision retrains as if there were no model; a new label
  keeps the cold start (and the old model active) until it has `min_per_class` labels.
  Annotations with a removed label are left out of training, and an unfinished version
  that predicts a removed label is abandoned, so no prediction ever carries it.
- the text field renamed (`$text` -> `$review`): the poll only re-reads tasks whose
  `updated_at` moved, so that cycle re-reads every task's text, then retrains. The new
  config is stored only once a retraining is under way (or not possible yet): a crash
  before that repeats the re-read instead of forgetting it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import structlog

from aldaemon.config import DaemonConfig, ProjectConfig
from aldaemon.errors import LabelStudioRefused, LabelStudioUnreachable, ModelError
from aldaemon.labelstudio.gateway import LabelStudioGateway
from aldaemon.labelstudio.labeling_config import parse_labeling_config
from aldaemon.model.worker import ModelWorker
from aldaemon.records import LabelingSchema, PredictionRecord
from aldaemon.store import Store, VersionRow
from aldaemon.sync import reconcile
from aldaemon.sync.policy import TrainingDecision, decide_training
from aldaemon.sync.scoring import select_queue
from aldaemon.sync.timestamps import format_ls_datetime, parse_ls_datetime
from aldaemon.sync.watermark import query_after

log = structlog.get_logger(__name__)

UNCERTAINTY_SAMPLING = "Uncertainty sampling"
# Label Studio on SQLite waits up to 5 s for its write lock, so a row can commit that long
# after its timestamp; PostgreSQL commit order can differ from timestamp order too.
WATERMARK_OVERLAP_SECONDS = 10.0
WATERMARK_SETTLE_SECONDS = 15.0
RESYNC_BEFORE_TRAINING_SECONDS = 300.0
T = TypeVar("T")


@dataclass
class CycleContext:
    """Everything one project's cycle needs; built once per project by the service."""

    project: ProjectConfig
    daemon: DaemonConfig
    gateway: LabelStudioGateway
    store: Store
    worker: ModelWorker
    artifacts_dir: Path
    clock: Callable[[], float] = time.time


@dataclass
class CycleReport:
    """What one cycle did: the fields of the canonical `cycle.finished` line."""

    project_id: int
    cycle_id: str
    outcome: str = "ok"  # ok | idle | failed | cancelled
    decision: str = ""
    version: str | None = None
    error: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def count(self, name: str, value: int) -> None:
        if value:
            self.counts[name] = self.counts.get(name, 0) + value

    def as_log_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "outcome": self.outcome,
            "decision": self.decision,
            "version": self.version,
            **self.counts,
            "duration_s": round(sum(self.seconds.values()), 3),
            "steps_s": {k: round(v, 3) for k, v in self.seconds.items()},
        }
        if self.error:
            fields["error"] = self.error
        return fields


def version_name(prefix: str, number: int) -> str:
    return f"{prefix}-v{number}"


def own_version_number(prefix: str, name: str) -> int | None:
    """The n of "<prefix>-v<n>", or None when the name is not one of ours."""
    match = re.fullmatch(re.escape(prefix) + r"-v(\d+)", name)
    return int(match.group(1)) if match else None


def queue_view_data(*, title: str, version: str) -> dict[str, object]:
    """The whole `data` of the queue view (PATCH replaces it, so always send all of it)."""
    return {
        "title": title,
        "type": "list",
        "target": "tasks",
        "filters": {
            "conjunction": "and",
            "items": [
                {
                    "filter": "filter:tasks:total_annotations",
                    "operator": "equal",
                    "type": "Number",
                    "value": 0,
                },
                {
                    "filter": "filter:tasks:predictions_model_versions",
                    "operator": "contains",
                    "type": "List",
                    "value": [version],
                },
                # "contains" matches substrings ("-v1" matches "-v10"). The score column is
                # the task's score under the project's active version only, so requiring
                # one keeps out tasks that the active version did not score.
                {
                    "filter": "filter:tasks:predictions_score",
                    "operator": "greater_or_equal",
                    "type": "Number",
                    "value": 0,
                },
            ],
        },
        "ordering": ["tasks:predictions_score"],
        "hiddenColumns": {"explore": [], "labeling": []},
    }


def batches(total: int, size: int) -> list[tuple[int, int]]:
    """Fixed [start, end) cuts of the stored predictions; the same after any restart."""
    return [(start, min(start + size, total)) for start in range(0, total, size)]


def resume_position(
    *, uploaded_count: int, server_count: int, cuts: Sequence[tuple[int, int]]
) -> int | None:
    """Where an interrupted upload resumes, judged from Label Studio's count for the version.

    The batch after `uploaded_count` was in flight when the process died. Label Studio's
    import is one transaction, so the server holds either `uploaded_count` predictions (it
    did not land) or `uploaded_count + len(batch)` (it did). Anything else means someone
    else touched the version: None, and the caller falls back to listing predictions.
    """
    if server_count == uploaded_count:
        return uploaded_count
    for start, end in cuts:
        if start == uploaded_count and server_count == end:
            return end
    return None


@dataclass(frozen=True)
class SchemaChange:
    """What changed in the labeling config since the daemon last acted on it."""

    added_labels: tuple[str, ...] = ()
    removed_labels: tuple[str, ...] = ()
    text_field_before: str | None = None  # both set only when the text field was renamed
    text_field_after: str | None = None

    @property
    def text_field_changed(self) -> bool:
        return self.text_field_before is not None


def schema_change(
    previous: Mapping[str, Any] | None, schema: LabelingSchema
) -> SchemaChange | None:
    """How `schema` differs from the stored one in what the daemon must redo; None: nothing.

    A reordered label list or a renamed control is no change here: predictions are built
    from the current schema at upload time, and the model does not care.
    """
    if previous is None:
        return None
    before_labels = [str(label) for label in previous.get("labels", [])]
    added = tuple(label for label in schema.labels if label not in before_labels)
    removed = tuple(label for label in before_labels if label not in schema.labels)
    before_field = previous.get("text_field")
    field_changed = before_field is not None and before_field != schema.text_field
    if not (added or removed or field_changed):
        return None
    return SchemaChange(
        added_labels=added,
        removed_labels=removed,
        text_field_before=str(before_field) if field_changed else None,
        text_field_after=schema.text_field if field_changed else None,
    )


def schema_change_notices(
    change: SchemaChange, *, min_per_class: int, label_counts: Mapping[str, int]
) -> list[tuple[str, str]]:
    """(what changed, what happens and what to do) for each part of `change`, for the log."""
    notices: list[tuple[str, str]] = []
    for label in change.added_labels:
        have = label_counts.get(label, 0)
        notices.append(
            (
                f"label {label!r} added",
                f"retraining with {label!r} once it has {min_per_class} annotations "
                f"(min_per_class; it has {have}); until then the current model stays active: "
                f"annotate tasks as {label!r}",
            )
        )
    for label in change.removed_labels:
        notices.append(
            (
                f"label {label!r} removed",
                f"its {label_counts.get(label, 0)} annotation(s) are left out of training and "
                f"no new prediction carries {label!r}; retraining without it; relabel those "
                "annotations in Label Studio if they should count",
            )
        )
    if change.text_field_changed:
        notices.append(
            (
                f"text field renamed from {change.text_field_before!r} to "
                f"{change.text_field_after!r}",
                f"re-reading every task's text from data.{change.text_field_after}, then "
                "retraining; tasks without that field are skipped",
            )
        )
    return notices


def model_misfit(
    *, model_labels: Collection[str] | None, schema_labels: Sequence[str]
) -> str | None:
    """Why the last model's labels no longer match the labeling config's; None when they do.

    Read from the versions table (the labels a model was trained on), so a label added
    while it is short of examples still retrains the moment its cold start ends.
    """
    if model_labels is None:
        return None
    added = [f"label {label!r} added" for label in schema_labels if label not in model_labels]
    removed = [
        f"label {label!r} removed" for label in sorted(model_labels) if label not in schema_labels
    ]
    return ", ".join(added + removed) or None


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
        self._schema_to_store: dict[str, Any] | None = None  # see _remember_schema

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
        store.record_cycle(
            self.project_id,
            cycle_id=self.report.cycle_id,
            started_at=started_at,
            finished_at=None,
            outcome="running",
            summary={},
        )
        try:
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
        schema, change = await self._step("read_project", self._read_project())
        text_field_changed = change is not None and change.text_field_changed
        await self._step("poll", self._poll(schema, read_all=text_field_changed))
        if self._resync_due():
            await self._step("resync", self._resync())
        version = self._unfinished_version()
        if version is not None:
            version = self._abandon_if_outdated(version, schema, text_field_changed)
        if version is None:
            version = await self._decide_and_train(schema, text_field_changed=text_field_changed)
            if version is None:
                return
        else:
            self._remember_schema()
            self.log.info("version.resumed", version=version.name, state=version.state)
        await self._publish(version, schema)

    # --- read and reconcile -------------------------------------------------------------

    async def _read_project(self) -> tuple[LabelingSchema, SchemaChange | None]:
        """Read the labeling config, and log once what changed in it and what happens now."""
        info = await self.ctx.gateway.get_project(self.project_id)
        schema = parse_labeling_config(info.label_config)
        previous = self.ctx.store.get_meta(self.project_id).schema
        change = schema_change(previous, schema)
        if change is not None:
            notices = schema_change_notices(
                change,
                min_per_class=self.ctx.project.retrain.min_per_class,
                label_counts=self.ctx.store.label_counts(self.project_id),
            )
            for what, action in notices:
                self.log.warning("project.labeling_config_changed", change=what, action=action)
        stored = _schema_to_json(schema, previous=previous, change=change)
        if previous is None:
            self.ctx.store.set_meta(self.project_id, schema=stored)
        elif stored != previous:
            self._schema_to_store = stored
        return schema, change

    def _remember_schema(self) -> None:
        """Store the new labeling config once what it asks for is done or under way.

        Until then the next cycle sees the change again, re-logs it and redoes the full
        re-read, rather than forgetting that the texts or the model are stale.
        """
        if self._schema_to_store is not None:
            self.ctx.store.set_meta(self.project_id, schema=self._schema_to_store)
            self._schema_to_store = None

    async def _poll(self, schema: LabelingSchema, *, read_all: bool = False) -> None:
        store = self.ctx.store
        sync = store.sync_state(self.project_id)
        # Settled only once a poll ran `settle` seconds after the move: every move of the
        # watermark is followed by at least one re-read of the overlap window.
        after = query_after(
            watermark=sync.watermark,
            moved_at=sync.watermark_moved_at,
            now=sync.last_poll_at if sync.last_poll_at is not None else self.ctx.clock(),
            overlap_seconds=WATERMARK_OVERLAP_SECONDS,
            settle_seconds=WATERMARK_SETTLE_SECONDS,
        )
        if read_all:
            # A renamed text field changes every task's text without moving its updated_at.
            after = None
        changes = await self.ctx.gateway.fetch_changes(
            self.project_id, schema=schema, updated_after=after
        )
        tasks = changes.tasks
        known = store.known_annotations(self.project_id, [task.id for task in tasks])
        outcome = reconcile.diff(tasks, known)
        if changes.pages > 1:
            outcome = _cap_watermark(outcome, changes.started_at)
        store.apply_reconcile(self.project_id, outcome, now=self.ctx.clock())
        self.report.count("tasks_read", len(tasks))
        self.report.count("annotations_created", len(outcome.created))
        self.report.count("annotations_updated", len(outcome.updated))
        self.report.count("annotations_deleted", len(outcome.deleted))
        self.report.count("label_changes", outcome.label_changes)
        if outcome.created or outcome.updated or outcome.deleted:
            self.log.info(
                "reconcile.finished",
                tasks_read=len(tasks),
                created=len(outcome.created),
                updated=len(outcome.updated),
                deleted=len(outcome.deleted),
                label_changes=outcome.label_changes,
            )

    def _resync_older_than(self, seconds: float) -> bool:
        if self._resynced:
            return False
        last = self.ctx.store.sync_state(self.project_id).last_resync_at
        return last is None or self.ctx.clock() - last >= seconds

    def _resync_due(self) -> bool:
        sync = self.ctx.store.sync_state(self.project_id)
        if self.force_resync or sync.last_resync_at is None:
            return True
        return self.ctx.clock() - sync.last_resync_at >= self.ctx.daemon.resync_interval

    async def _resync(self) -> None:
        """A full id listing finds tasks deleted in Label Studio (they leave no trace)."""
        listed = await self.ctx.gateway.list_task_ids(self.project_id)
        known = self.ctx.store.known_task_ids(self.project_id)
        decision = reconcile.find_deleted_tasks(listed_ids=listed, known_ids=known)
        if decision.refused:
            self.log.error("resync.refused", reason=decision.refused, known_tasks=len(known))
        elif decision.deleted_task_ids:
            self.log.info("resync.tasks_deleted", count=len(decision.deleted_task_ids))
        self.ctx.store.apply_resync(self.project_id, decision, now=self.ctx.clock())
        self.report.count("tasks_deleted", len(decision.deleted_task_ids))
        self._resynced = True

    # --- decide and train -----------------------------------------------------------------

    def _unfinished_version(self) -> VersionRow | None:
        return self.ctx.store.unfinished_version(self.project_id)

    def _abandon_if_outdated(
        self, version: VersionRow, schema: LabelingSchema, text_field_changed: bool
    ) -> VersionRow | None:
        """Give up an unfinished version the labeling config change made wrong.

        Its model predicts a removed label (Label Studio would drop those predictions, and
        annotators must never see them), or it read the old text field. A fresh training
        follows in the same cycle; prune removes what of it reached Label Studio.
        """
        removed = sorted(set(version.class_counts or {}) - set(schema.labels))
        if not removed and not text_field_changed:
            return version
        reason = (
            f"labeling config changed: it predicts removed label(s) {', '.join(map(repr, removed))}"
            if removed
            else "labeling config changed: it was trained on the old text field"
        )
        self.ctx.store.update_version(self.project_id, version.name, state="failed", error=reason)
        self.log.info("version.abandoned", version=version.name, state=version.state, reason=reason)
        return None

    async def _decide_and_train(
        self, schema: LabelingSchema, *, text_field_changed: bool
    ) -> VersionRow | None:
        decision = self._decide(schema, text_field_changed=text_field_changed)
        if decision.train and self._resync_older_than(RESYNC_BEFORE_TRAINING_SECONDS):
            # Labels of tasks deleted in Label Studio should not train the model, and a
            # deleted task makes Label Studio refuse a whole upload: list ids first, unless
            # that was done moments ago (10k ids take seconds; a refused upload still fails
            # only its version, and a new one follows).
            await self._step("resync", self._resync())
            decision = self._decide(schema, text_field_changed=text_field_changed)
        self.report.decision = decision.reason
        self.ctx.store.set_meta(self.project_id, last_decision=decision.reason)
        if not decision.train:
            self._remember_schema()
            self.report.outcome = "idle"
            return None
        label_changes = self.ctx.store.sync_state(self.project_id).label_changes
        return await self._step("train", self._train(schema, label_changes=label_changes))

    def _seconds_since_last_attempt(self) -> float | None:
        """Since the last training that finished or failed: min_interval throttles both,
        so a model that cannot be trained is not retried on every poll."""
        attempts = [
            v.trained_at if v.trained_at is not None else v.created_at
            for v in self.ctx.store.list_versions(self.project_id)
            if v.trained_at is not None or v.state == "failed"
        ]
        times = [t for t in attempts if t is not None]
        return self.ctx.clock() - max(times) if times else None

    def _decide(self, schema: LabelingSchema, *, text_field_changed: bool) -> TrainingDecision:
        store = self.ctx.store
        retrain = self.ctx.project.retrain
        last = store.last_trained_version(self.project_id)
        counts = store.label_counts(self.project_id)
        changes = store.label_changes_since_training(self.project_id)
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
            seconds_since_training=self._seconds_since_last_attempt(),
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

    async def _next_version_number(self) -> int:
        """Above every number we used and every "<prefix>-v<n>" Label Studio already holds.

        Label Studio may hold our versions that local state forgot (a rebuilt state dir);
        reusing a name would put two predictions on one task under one version.
        """
        prefix = self.ctx.project.predictions.version_prefix
        on_server = await self.ctx.gateway.model_version_counts(self.project_id)
        numbers = [own_version_number(prefix, name) for name in on_server]
        highest_remote = max((n for n in numbers if n is not None), default=0)
        return max(self.ctx.store.next_version_number(self.project_id), highest_remote + 1)

    async def _train(self, schema: LabelingSchema, *, label_changes: int) -> VersionRow:
        store = self.ctx.store
        number = await self._next_version_number()
        name = version_name(self.ctx.project.predictions.version_prefix, number)
        store.create_version(self.project_id, name=name, number=number, now=self.ctx.clock())
        store.update_version(self.project_id, name, label_changes_at_training=label_changes)
        self._remember_schema()  # from here on, an interrupted training is resumed
        examples = store.labeled_examples(self.project_id)
        allowed = set(schema.labels)
        removed = set((store.get_meta(self.project_id).schema or {}).get("removed_labels", []))
        # Labels removed from the config were announced once when the config changed.
        foreign = [task_id for task_id, _, label in examples if label not in allowed | removed]
        if foreign:
            self.log.warning(
                "train.labels_not_in_config",
                task_ids=foreign[:50],
                count=len(foreign),
                action="annotations with labels the config no longer has are left out",
            )
        examples = [e for e in examples if e[2] in allowed]
        artifact = self.ctx.artifacts_dir / f"{name}.joblib"
        artifact.parent.mkdir(parents=True, exist_ok=True)
        self.log.info("train.started", version=name, n_labels=len(examples))
        try:
            result = await self.ctx.worker.train(
                factory_ref=self.ctx.project.model,
                texts=[text for _, text, _ in examples],
                labels=[label for _, _, label in examples],
                artifact_path=str(artifact),
            )
        except ModelError as exc:
            self._fail_version(name, f"training failed: {exc}")
            raise
        store.update_version(
            self.project_id,
            name,
            state="trained",
            trained_at=self.ctx.clock(),
            n_labels=result.n_labels,
            class_counts=result.class_counts,
            metrics=result.metrics,
            train_seconds=result.train_seconds,
            artifact_path=result.artifact_path,
        )
        self.report.version = name
        self.log.info(
            "train.finished",
            version=name,
            n_labels=result.n_labels,
            seconds=round(result.train_seconds, 3),
            **result.metrics,
        )
        version = store.get_version(self.project_id, name)
        assert version is not None
        return version

    # --- publish --------------------------------------------------------------------------

    async def _publish(self, version: VersionRow, schema: LabelingSchema) -> None:
        self.report.version = version.name
        if version.state == "training":
            version = await self._step("train", self._retrain_interrupted(version, schema))
        if version.state == "trained":
            version = await self._step("score", self._score(version))
        if version.state in ("scored", "uploading"):
            version = await self._step("upload", self._upload(version, schema))
        if version.state == "uploaded":
            await self._step("activate", self._activate(version))

    async def _retrain_interrupted(self, version: VersionRow, schema: LabelingSchema) -> VersionRow:
        """A training killed mid-way left nothing in Label Studio: train that version again."""
        store = self.ctx.store
        sync = store.sync_state(self.project_id)
        self._fail_version(version.name, "training interrupted")
        self.log.info("train.restarting", interrupted=version.name)
        return await self._train(schema, label_changes=sync.label_changes)

    async def _score(self, version: VersionRow) -> VersionRow:
        store = self.ctx.store
        options = self.ctx.project.predictions
        pool = store.unlabeled_tasks(self.project_id)
        skipped = [task_id for task_id, text in pool if not text or not text.strip()]
        if skipped:
            self.log.warning(
                "score.tasks_skipped",
                reason="text field missing, empty or not a string",
                task_ids=skipped[:50],
                count=len(skipped),
            )
        scorable = [(task_id, text) for task_id, text in pool if text and text.strip()]
        assert version.artifact_path is not None
        scored = await self.ctx.worker.score(
            artifact_path=version.artifact_path,
            task_ids=[task_id for task_id, _ in scorable],
            texts=[text for _, text in scorable],
            strategy=options.strategy,
            random_fraction=options.random_fraction,
            clusters=options.clusters,
            seed=version.number,
        )
        chosen = select_queue(np.asarray(scored.scores, dtype=float), depth=options.queue_depth)
        predictions = [
            PredictionRecord(
                task_id=scored.task_ids[i],
                label=scored.labels[i],
                score=float(scored.scores[i]),
                cluster=scored.clusters[i] if scored.clusters is not None else None,
            )
            for i in sorted(int(i) for i in chosen)
        ]
        store.save_predictions(self.project_id, version.name, predictions)
        store.update_version(
            self.project_id,
            version.name,
            state="scored",
            n_predictions=len(predictions),
            uploaded_count=0,
        )
        self.report.count("tasks_scored", len(scorable))
        self.report.count("tasks_skipped", len(skipped))
        refreshed = store.get_version(self.project_id, version.name)
        assert refreshed is not None
        return refreshed

    async def _upload(self, version: VersionRow, schema: LabelingSchema) -> VersionRow:
        store = self.ctx.store
        predictions = store.load_predictions(self.project_id, version.name)
        if version.state == "scored":
            predictions = self._only_live_tasks(version.name, predictions)
        if not predictions:
            store.update_version(self.project_id, version.name, state="superseded")
            self.log.info("publish.skipped", version=version.name, reason="no unlabeled task")
            self.report.outcome = "ok"
            refreshed = store.get_version(self.project_id, version.name)
            assert refreshed is not None
            return refreshed
        batch_size = self.ctx.project.predictions.batch_size
        if version.state == "scored":
            store.update_version(self.project_id, version.name, state="uploading")
            position = 0
        else:
            position = await self._resume_upload(
                version, predictions, batches(len(predictions), batch_size)
            )
            predictions = store.load_predictions(self.project_id, version.name)
        try:
            uploaded = await self._send_from(version.name, predictions, position, schema)
            uploaded += await self._verify_upload(version.name, predictions, schema)
        except LabelStudioRefused as exc:
            if exc.status_code != 400:
                raise
            # An unknown task rejects the whole request: a task was deleted meanwhile.
            if not self._resynced:
                await self._step("resync", self._resync())
            self._fail_version(version.name, f"Label Studio refused an upload batch: {exc}")
            self.report.outcome = "failed"
            self.report.error = f"upload of {version.name} refused; a new version follows"
            uploaded = 0
        self.report.count("predictions_uploaded", uploaded)
        refreshed = store.get_version(self.project_id, version.name)
        assert refreshed is not None
        return refreshed

    def _only_live_tasks(
        self, name: str, predictions: list[PredictionRecord]
    ) -> list[PredictionRecord]:
        """Drop predictions whose task was deleted since scoring (before anything is sent)."""
        live = self.ctx.store.known_task_ids(self.project_id)
        kept = [p for p in predictions if p.task_id in live]
        if len(kept) != len(predictions):
            self.ctx.store.save_predictions(self.project_id, name, kept)
            self.ctx.store.update_version(self.project_id, name, n_predictions=len(kept))
        return kept

    async def _send_from(
        self,
        name: str,
        predictions: Sequence[PredictionRecord],
        position: int,
        schema: LabelingSchema,
    ) -> int:
        """Send the stored predictions from `position` on, one fixed batch at a time."""
        uploaded = 0
        for start, end in batches(len(predictions), self.ctx.project.predictions.batch_size):
            if end <= position:
                continue
            batch = predictions[max(start, position) : end]
            created = await self.ctx.gateway.import_predictions(
                self.project_id, model_version=name, schema=schema, predictions=batch
            )
            if created != len(batch):
                raise LabelStudioRefused(
                    f"Label Studio stored {created} of {len(batch)} predictions of "
                    f"{name} (it drops labels it does not know); the version stays inactive"
                )
            position = end
            uploaded += created
            self.ctx.store.update_version(self.project_id, name, uploaded_count=position)
        return uploaded

    async def _verify_upload(
        self, name: str, predictions: Sequence[PredictionRecord], schema: LabelingSchema
    ) -> int:
        """Before a version may become active, Label Studio must hold exactly its predictions.

        Fewer: send what is missing (found by listing). More: an import that was still in
        flight when an earlier process died landed after its batch was re-sent; such a
        version is never activated, it is marked failed and pruned like any other.
        """
        counts = await self.ctx.gateway.model_version_counts(self.project_id)
        on_server = counts.get(name, 0)
        sent = 0
        if on_server < len(predictions):
            reordered, held = await self._held_first(name, predictions)
            self.log.warning("upload.incomplete", version=name, missing=len(reordered) - held)
            sent = await self._send_from(name, reordered, held, schema)
            on_server = (await self.ctx.gateway.model_version_counts(self.project_id)).get(name, 0)
        if on_server != len(predictions):
            self.log.error(
                "upload.count_mismatch",
                version=name,
                on_server=on_server,
                expected=len(predictions),
                action="the version is not activated; a new one follows",
            )
            self._fail_version(
                name, f"{on_server} predictions in Label Studio, {len(predictions)} expected"
            )
            return sent
        self.ctx.store.update_version(
            self.project_id, name, state="uploaded", uploaded_count=len(predictions)
        )
        return sent

    async def _held_first(
        self, name: str, predictions: Sequence[PredictionRecord]
    ) -> tuple[list[PredictionRecord], int]:
        """Reorder the version's stored predictions: those Label Studio holds first.

        Returns the new order and how many it holds, the position to send from. Both are
        stored before anything is sent, so `uploaded_count` always counts positions in the
        stored order: a process killed during the re-send resumes on the same list and
        cannot send a prediction twice.
        """
        listed = await self.ctx.gateway.list_predictions(self.project_id)
        present = {task_id for task_id, version, _ in listed if version == name}
        held = [p for p in predictions if p.task_id in present]
        reordered = held + [p for p in predictions if p.task_id not in present]
        self.ctx.store.save_predictions(self.project_id, name, reordered)
        self.ctx.store.update_version(self.project_id, name, uploaded_count=len(held))
        return reordered, len(held)

    def _fail_version(self, name: str, reason: str) -> None:
        """Give a version up for good: never activated; prune deletes what reached Label
        Studio; its model file goes now."""
        row = self.ctx.store.get_version(self.project_id, name)
        self.ctx.store.update_version(self.project_id, name, state="failed", error=reason)
        if row is not None and row.artifact_path:
            Path(row.artifact_path).unlink(missing_ok=True)
        self.log.warning("version.failed", version=name, reason=reason)

    async def _resume_upload(
        self,
        version: VersionRow,
        predictions: Sequence[PredictionRecord],
        cuts: Sequence[tuple[int, int]],
    ) -> int:
        """Find out how much of an interrupted upload Label Studio holds."""
        uploaded = version.uploaded_count or 0
        counts = await self.ctx.gateway.model_version_counts(self.project_id)
        server_count = counts.get(version.name, 0)
        position = resume_position(uploaded_count=uploaded, server_count=server_count, cuts=cuts)
        if position is not None:
            self.log.info(
                "upload.resumed", version=version.name, position=position, on_server=server_count
            )
            self.ctx.store.update_version(self.project_id, version.name, uploaded_count=position)
            return position
        # Unexpected count: send only what the server lacks, task by task.
        reordered, held = await self._held_first(version.name, predictions)
        self.log.warning(
            "upload.resumed_by_listing",
            version=version.name,
            on_server=held,
            missing=len(reordered) - held,
        )
        return held

    async def _activate(self, version: VersionRow) -> None:
        store = self.ctx.store
        meta = store.get_meta(self.project_id)
        if meta.pinned_version:
            store.update_version(self.project_id, version.name, state="superseded")
            self.log.info(
                "activate.skipped_pinned", version=version.name, pinned=meta.pinned_version
            )
            return
        await activate_version(self.ctx, version.name)
        self.report.count("activated", 1)


async def activate_version(ctx: CycleContext, name: str) -> None:
    """Make `name` the project's active version, with uncertainty sampling and the view.

    Used by the cycle and by `aldaemon pin`. The store is updated after Label Studio
    agreed and the view was rewritten, so a crash in between re-activates on the next
    cycle (both calls are idempotent).
    """
    options = ctx.project.predictions
    project_id = ctx.project.id
    await ctx.gateway.update_project(
        project_id,
        model_version=name,
        sampling=UNCERTAINTY_SAMPLING,
        show_collab_predictions=options.show_predictions,
    )
    await write_queue_view(ctx, name)
    # Recorded last: a crash before this line leaves the version "uploaded", and the next
    # cycle repeats the two idempotent calls above.
    for row in ctx.store.list_versions(project_id):
        if row.state == "active" and row.name != name:
            ctx.store.update_version(project_id, row.name, state="superseded")
    ctx.store.update_version(project_id, name, state="active", activated_at=ctx.clock())
    log.info("version.activated", project_id=project_id, version=name)


async def write_queue_view(ctx: CycleContext, version: str) -> None:
    """Create the queue view once, then replace its whole data on every activation.

    The view is found by its stored id, else by its title (a crash between creating it and
    storing its id must not leave a second one behind).
    """
    project_id = ctx.project.id
    title = ctx.project.view.title
    data = queue_view_data(title=title, version=version)
    meta = ctx.store.get_meta(project_id)
    if meta.view_id is None:
        existing = [v for v in await ctx.gateway.list_views(project_id) if v.title == title]
        if existing:
            ctx.store.set_meta(project_id, view_id=existing[0].id)
            meta = ctx.store.get_meta(project_id)
    if meta.view_id is not None:
        try:
            await ctx.gateway.replace_view(meta.view_id, project_id=project_id, data=data)
            return
        except LabelStudioRefused as exc:
            if exc.status_code != 404:
                raise
            log.warning("view.recreated", project_id=project_id, reason="view was deleted")
    view = await ctx.gateway.create_view(project_id, data=data)
    ctx.store.set_meta(project_id, view_id=view.id)


async def prune_own_versions(ctx: CycleContext) -> list[str]:
    """Delete our own versions beyond `keep_versions`, oldest first, bounded per call.

    Never the active one, never the pinned one, never a name without our prefix, and
    never a version local state does not know it created (invariant 4).
    """
    options = ctx.project.predictions
    project_id = ctx.project.id
    if options.prune_per_cycle == 0:
        return []
    # Read before listing the server: a version superseded by then was uploaded by then.
    ours = {row.name: row for row in ctx.store.list_versions(project_id)}
    on_server = await ctx.gateway.model_version_counts(project_id)
    _record_deletions_already_done(ctx, ours.values(), on_server)
    candidates = sorted(
        (
            (number, name)
            for name in on_server
            if (number := own_version_number(options.version_prefix, name)) is not None
            and name in ours
        ),
    )
    # Failed versions never count toward keep_versions and go first.
    failed = [name for _, name in candidates if ours[name].state == "failed"]
    complete = [name for _, name in candidates if ours[name].state != "failed"]
    keep = set(complete[-options.keep_versions :])
    doomed = [name for name in failed + complete if name not in keep][: options.prune_per_cycle]
    pruned: list[str] = []
    for name in doomed:
        # Re-read right before deleting: a pin or an activation may have happened meanwhile
        # (deleting the active version would leave the project with none).
        info = await ctx.gateway.get_project(project_id)
        if name in (info.model_version, ctx.store.get_meta(project_id).pinned_version):
            continue
        started = time.perf_counter()
        try:
            deleted = await ctx.gateway.delete_model_version(project_id, name)
        except LabelStudioUnreachable as exc:
            log.warning("prune.deferred", project_id=project_id, version=name, error=str(exc))
            break
        ctx.store.update_version(project_id, name, state="pruned", pruned_at=ctx.clock())
        ctx.store.drop_predictions(project_id, name)
        if ours[name].artifact_path:
            Path(str(ours[name].artifact_path)).unlink(missing_ok=True)
        pruned.append(name)
        log.info(
            "prune.deleted",
            project_id=project_id,
            version=name,
            predictions=deleted,
            seconds=round(time.perf_counter() - started, 3),
        )
    return pruned


def _record_deletions_already_done(
    ctx: CycleContext, versions: Iterable[VersionRow], on_server: Mapping[str, int]
) -> None:
    """Mark "pruned" the superseded versions Label Studio no longer holds.

    A process killed while its DELETE was in flight leaves the version "superseded" here,
    yet Label Studio finishes the deletion anyway (the request runs to its end on the
    server). Without this the version would stay "superseded" for ever: the server listing
    no longer offers it for pruning.
    """
    for row in versions:
        if row.state == "superseded" and row.n_predictions and row.name not in on_server:
            ctx.store.update_version(
                ctx.project.id, row.name, state="pruned", pruned_at=ctx.clock()
            )
            ctx.store.drop_predictions(ctx.project.id, row.name)
            log.info(
                "prune.found_deleted",
                project_id=ctx.project.id,
                version=row.name,
                reason="deleted in Label Studio before the last prune was recorded",
            )


def _cap_watermark(
    outcome: reconcile.ReconcileOutcome, started_at: datetime | None
) -> reconcile.ReconcileOutcome:
    """A scan of several pages may claim no watermark past the moment it started.

    A task on an early page annotated while later pages were read would otherwise fall
    below the watermark unseen. Without the server's clock the watermark stays put and
    the next poll reads the same window again (dedup makes that harmless).
    """
    newest = outcome.newest_updated_at
    if newest is None:
        return outcome
    if started_at is None:
        return dataclasses.replace(outcome, newest_updated_at=None)
    cap = format_ls_datetime(started_at)
    if parse_ls_datetime(newest) <= started_at:
        return outcome
    return dataclasses.replace(outcome, newest_updated_at=cap)


def _schema_to_json(
    schema: LabelingSchema,
    *,
    previous: Mapping[str, Any] | None = None,
    change: SchemaChange | None = None,
) -> dict[str, Any]:
    """The stored form, with every label ever removed from the config (announced once)."""
    removed = [str(label) for label in (previous or {}).get("removed_labels", [])]
    removed += [
        label for label in (change.removed_labels if change else ()) if label not in removed
    ]
    return {
        "text_field": schema.text_field,
        "from_name": schema.from_name,
        "to_name": schema.to_name,
        "labels": list(schema.labels),
        "removed_labels": [label for label in removed if label not in schema.labels],
    }
