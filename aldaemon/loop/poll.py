"""Reading Label Studio into local state: the incremental poll and the full id listing.

poll:   tasks whose `updated_at` passed the watermark (minus an overlap) -> diff ->
        store the changes and the moved watermark in one transaction
resync: every task id -> tasks local state holds that Label Studio no longer lists
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

import structlog

from aldaemon.loop.context import CycleContext, CycleReport
from aldaemon.records import LabelingSchema
from aldaemon.store import Store
from aldaemon.sync import reconcile, timestamps, watermark

# Label Studio on SQLite waits up to 5 s for its write lock, so a row can commit that long
# after its timestamp; PostgreSQL commit order can differ from timestamp order too.
WATERMARK_OVERLAP_SECONDS = 10.0
WATERMARK_SETTLE_SECONDS = 15.0


def record_poll(
    store: Store, project_id: int, outcome: reconcile.ReconcileOutcome, *, now: float
) -> None:
    """Store one poll's outcome with the watermark `watermark.next_watermark` moves to."""
    moved = watermark.next_watermark(
        current=store.sync_state(project_id).current_watermark,
        newest_updated_at=outcome.newest_updated_at,
        now=now,
    )
    store.apply_reconcile(project_id, outcome, watermark=moved, now=now)


async def poll(
    ctx: CycleContext,
    schema: LabelingSchema,
    *,
    read_all: bool,
    report: CycleReport,
    logger: structlog.typing.FilteringBoundLogger,
) -> None:
    """Read what changed since the watermark (everything when `read_all`) into the store."""
    store = ctx.store
    project_id = ctx.project.id
    sync = store.sync_state(project_id)
    # Settled only once a poll ran `settle` seconds after the move: every move of the
    # watermark is followed by at least one re-read of the overlap window.
    after = watermark.query_after(
        watermark=sync.watermark,
        moved_at=sync.watermark_moved_at,
        now=sync.last_poll_at if sync.last_poll_at is not None else ctx.clock(),
        overlap_seconds=WATERMARK_OVERLAP_SECONDS,
        settle_seconds=WATERMARK_SETTLE_SECONDS,
    )
    if read_all:
        # A renamed text field changes every task's text without moving its updated_at.
        after = None
    changes = await ctx.gateway.fetch_changes(project_id, schema=schema, updated_after=after)
    tasks = changes.tasks
    known = store.known_annotations(project_id, [task.id for task in tasks])
    outcome = reconcile.diff(tasks, known)
    if changes.pages > 1:
        outcome = cap_watermark(outcome, changes.started_at)
    record_poll(store, project_id, outcome, now=ctx.clock())
    report.count("tasks_read", len(tasks))
    report.count("annotations_created", len(outcome.created))
    report.count("annotations_updated", len(outcome.updated))
    report.count("annotations_deleted", len(outcome.deleted))
    report.count("label_changes", outcome.label_changes)
    if outcome.created or outcome.updated or outcome.deleted:
        logger.info(
            "reconcile.finished",
            tasks_read=len(tasks),
            created=len(outcome.created),
            updated=len(outcome.updated),
            deleted=len(outcome.deleted),
            label_changes=outcome.label_changes,
        )


async def resync(
    ctx: CycleContext, *, report: CycleReport, logger: structlog.typing.FilteringBoundLogger
) -> None:
    """A full id listing finds tasks deleted in Label Studio (they leave no trace)."""
    project_id = ctx.project.id
    listed = await ctx.gateway.list_task_ids(project_id)
    known = ctx.store.known_task_ids(project_id)
    decision = reconcile.find_deleted_tasks(listed_ids=listed, known_ids=known)
    if decision.refused:
        logger.error("resync.refused", reason=decision.refused, known_tasks=len(known))
    elif decision.deleted_task_ids:
        logger.info("resync.tasks_deleted", count=len(decision.deleted_task_ids))
    ctx.store.apply_resync(project_id, decision, now=ctx.clock())
    report.count("tasks_deleted", len(decision.deleted_task_ids))


def cap_watermark(
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
    cap = timestamps.format_ls_datetime(started_at)
    if timestamps.parse_ls_datetime(newest) <= started_at:
        return outcome
    return dataclasses.replace(outcome, newest_updated_at=cap)
