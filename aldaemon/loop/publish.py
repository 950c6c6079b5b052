"""Publishing a version: upload its predictions, verify them, activate it, rewrite the view.

The upload is the delicate step. Batches are the stored predictions cut at fixed
positions, so after a crash the batch in flight is known exactly; Label Studio's count for
the version tells whether that batch landed (a bulk import is one transaction), so it is
sent again only when it did not. That keeps "at most one prediction per (task, version)".
A version is activated only after its upload is complete (invariant 3).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import structlog

from aldaemon.errors import ForeignWriter, LabelStudioRefused
from aldaemon.labelstudio import UNCERTAINTY_SAMPLING
from aldaemon.loop.context import CycleContext, CycleReport
from aldaemon.loop.fence import confirm_owner
from aldaemon.records import LabelingSchema, PredictionRecord
from aldaemon.store import VersionRow
from aldaemon.sync.drift import foreign_versions, foreign_writer_message
from aldaemon.sync.versions import VersionState, batches, queue_view_data, resume_position

log = structlog.get_logger(__name__)


class Publisher:
    """Uploads and activates one version for one cycle, counting into its report."""

    def __init__(
        self,
        ctx: CycleContext,
        *,
        report: CycleReport,
        resync_once: Callable[[], Awaitable[None]],
        logger: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self.ctx = ctx
        self.project_id = ctx.project.id
        self.report = report
        self._resync_once = resync_once  # a refused batch means a task was deleted meanwhile
        self.log = logger

    async def upload(self, version: VersionRow, schema: LabelingSchema) -> VersionRow:
        """Send the version's stored predictions, resuming an interrupted upload, and verify."""
        store = self.ctx.store
        predictions = store.load_predictions(self.project_id, version.name)
        if version.state == VersionState.SCORED:
            predictions = self._only_live_tasks(version.name, predictions)
        if not predictions:
            skipped = store.mark_superseded(self.project_id, version.name)
            self.log.info("publish.skipped", version=version.name, reason="no unlabeled task")
            self.report.outcome = "ok"
            return skipped
        batch_size = self.ctx.project.predictions.batch_size
        if version.state == VersionState.SCORED:
            await self._refuse_taken_name(version.name)
            store.mark_uploading(self.project_id, version.name)
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
            await self._resync_once()
            fail_version(
                self.ctx,
                version.name,
                reason=f"Label Studio refused an upload batch: {exc}",
                logger=self.log,
            )
            self.report.outcome = "failed"
            self.report.error = f"upload of {version.name} refused; a new version follows"
            uploaded = 0
        self.report.count("predictions_uploaded", uploaded)
        return store.require_version(self.project_id, version.name)

    async def _refuse_taken_name(self, name: str) -> None:
        """Another writer of our prefix may have published this name while we trained it:
        sending ours too would give its tasks two predictions of one version."""
        counts = await self.ctx.gateway.model_version_counts(self.project_id)
        prefix = self.ctx.project.predictions.version_prefix
        ours = self.ctx.store.list_versions(self.project_id)
        foreign = foreign_versions(prefix=prefix, names_on_server=list(counts), ours=ours)
        if name in foreign:
            # Never sent (uploaded_count stays None): prune leaves the other's version alone.
            fail_version(
                self.ctx, name, reason="another writer published this name first", logger=self.log
            )
        if foreign:
            raise ForeignWriter(foreign_writer_message(prefix=prefix, names=foreign))

    def _only_live_tasks(
        self, name: str, predictions: list[PredictionRecord]
    ) -> list[PredictionRecord]:
        """Drop predictions whose task was deleted since scoring (before anything is sent)."""
        live = self.ctx.store.task_texts(self.project_id, [p.task_id for p in predictions])
        kept = [p for p in predictions if p.task_id in live]
        if len(kept) != len(predictions):
            self.ctx.store.save_predictions(self.project_id, name, kept)
            self.ctx.store.set_prediction_count(self.project_id, name, len(kept))
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
            confirm_owner(self.ctx)
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
            self.ctx.store.record_upload_progress(self.project_id, name, position)
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
            fail_version(
                self.ctx,
                name,
                reason=f"{on_server} predictions in Label Studio, {len(predictions)} expected",
                logger=self.log,
            )
            self.report.outcome = "failed"
            self.report.error = (
                f"{name} failed its count check ({on_server} predictions in Label Studio, "
                f"{len(predictions)} expected); not activated, a new version follows"
            )
            return sent
        self.ctx.store.mark_uploaded(self.project_id, name, uploaded_count=len(predictions))
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
        present = await self.ctx.gateway.tasks_holding_version(self.project_id, name)
        held = [p for p in predictions if p.task_id in present]
        reordered = held + [p for p in predictions if p.task_id not in present]
        self.ctx.store.save_predictions(self.project_id, name, reordered)
        self.ctx.store.record_upload_progress(self.project_id, name, len(held))
        return reordered, len(held)

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
            self.ctx.store.record_upload_progress(self.project_id, version.name, position)
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

    async def activate(self, version: VersionRow) -> None:
        """Activate a fully uploaded version, unless a pin holds another one active."""
        store = self.ctx.store
        meta = store.get_meta(self.project_id)
        if meta.pinned_version:
            store.mark_superseded(self.project_id, version.name)
            self.log.info(
                "activate.skipped_pinned", version=version.name, pinned=meta.pinned_version
            )
            return
        await activate_version(self.ctx, version.name)
        self.report.count("activated", 1)


def fail_version(
    ctx: CycleContext, name: str, *, reason: str, logger: structlog.typing.FilteringBoundLogger
) -> None:
    """Give a version up for good: never activated; prune deletes what reached Label
    Studio; its model file goes now."""
    row = ctx.store.mark_failed(ctx.project.id, name, error=reason)
    if row.artifact_path:
        Path(row.artifact_path).unlink(missing_ok=True)
    logger.warning("version.failed", version=name, reason=reason)


async def activate_version(ctx: CycleContext, name: str) -> None:
    """Make `name` the project's active version, with uncertainty sampling and the view.

    Used by the cycle and by `aldaemon pin`. The store is updated after Label Studio
    agreed and the view was rewritten, so a crash in between re-activates on the next
    cycle (both calls are idempotent).
    """
    options = ctx.project.predictions
    project_id = ctx.project.id
    confirm_owner(ctx)
    await ctx.gateway.update_project(
        project_id,
        model_version=name,
        sampling=UNCERTAINTY_SAMPLING,
        show_collab_predictions=options.show_predictions,
    )
    await write_queue_view(ctx, name)
    # Recorded last: a crash before this line leaves the version "uploaded", and the next
    # cycle repeats the two idempotent calls above.
    ctx.store.mark_active(project_id, name, activated_at=ctx.clock())
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
    confirm_owner(ctx)
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
