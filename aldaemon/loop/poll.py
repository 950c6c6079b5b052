"""Reading Label Studio into local state: the incremental poll and the full id listing.

poll:   tasks whose `updated_at` passed the watermark (minus an overlap), page by page ->
        diff the page -> store its changes -> ... -> last page: move the watermark
resync: every task id -> tasks local state holds that Label Studio no longer lists

A poll holds one page at a time, however big the project: a first read of a million
tasks stores each page of 500 as it arrives. The watermark moves only once every page is
stored (pages come by id, not by `updated_at`, so a page cannot vouch for the tasks after
it); a crash mid-scan re-reads the scan, and re-reading stored annotations changes nothing.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

import structlog

from aldaemon.loop.context import CycleContext, CycleReport
from aldaemon.records import LabelingSchema, ProjectInfo
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
    started = ctx.clock()
    # Every task read into a store that held none: that read is the full id listing (a
    # second one would find nothing to delete; 451 s of a 1M-task first sync).
    lists_every_task = after is None and store.live_task_count(project_id) == 0
    tally = _PollTally()
    async for page in ctx.gateway.changed_task_pages(
        project_id, schema=schema, updated_after=after
    ):
        known = store.known_annotations(project_id, [task.id for task in page.tasks])
        outcome = reconcile.diff(page.tasks, known)
        # Each page's changes as they come; the watermark stays where it was.
        store.apply_reconcile(
            project_id, outcome, watermark=sync.current_watermark, now=ctx.clock()
        )
        tally.add(outcome, pages_read=page.pages_read, started_at=page.started_at)
    newest = reconcile.ReconcileOutcome(newest_updated_at=tally.newest_updated_at)
    if tally.pages_read > 1:
        newest = cap_watermark(newest, tally.started_at)
    record_poll(store, project_id, newest, now=ctx.clock())
    if lists_every_task:
        store.apply_resync(project_id, reconcile.DeletionDecision(frozenset()), now=started)
    report.count("tasks_read", tally.tasks_read)
    report.count("annotations_created", tally.annotations_created)
    report.count("annotations_updated", tally.annotations_updated)
    report.count("annotations_deleted", tally.annotations_deleted)
    report.count("label_changes", tally.label_changes)
    if tally.annotations_created or tally.annotations_updated or tally.annotations_deleted:
        logger.info(
            "reconcile.finished",
            tasks_read=tally.tasks_read,
            created=tally.annotations_created,
            updated=tally.annotations_updated,
            deleted=tally.annotations_deleted,
            label_changes=tally.label_changes,
        )


@dataclasses.dataclass
class _PollTally:
    """What a poll read and changed, summed over its pages (counts, not the records)."""

    tasks_read: int = 0
    annotations_created: int = 0
    annotations_updated: int = 0
    annotations_deleted: int = 0
    label_changes: int = 0
    newest_updated_at: str | None = None
    pages_read: int = 0
    started_at: datetime | None = None

    def add(
        self,
        outcome: reconcile.ReconcileOutcome,
        *,
        pages_read: int,
        started_at: datetime | None,
    ) -> None:
        self.tasks_read += len(outcome.tasks)
        self.annotations_created += len(outcome.created)
        self.annotations_updated += len(outcome.updated)
        self.annotations_deleted += len(outcome.deleted)
        self.label_changes += outcome.label_changes
        self.newest_updated_at = timestamps.later_ls_datetime(
            self.newest_updated_at, outcome.newest_updated_at
        )
        self.pages_read, self.started_at = pages_read, started_at


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


def counts_disagree(ctx: CycleContext, project: ProjectInfo) -> bool:
    """Label Studio's task count (read with the project, at the start of the cycle)
    differs from the live tasks local state holds after the poll.

    The poll stores every task created since the last one, so equal counts mean no task
    was deleted, unless as many appeared unseen (a task the poll cannot read) or one was
    deleted between the two reads. That equal-count churn is left to the listing every
    `resync_interval`; this check only spares the listing before a training, which at a
    million tasks is a thousand requests.
    """
    return project.task_count is None or project.task_count != ctx.store.live_task_count(
        ctx.project.id
    )


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
