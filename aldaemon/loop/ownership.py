"""Acting on what changed in Label Studio under aldaemon (the rules: `sync.drift`).

`handle_drift` runs once per cycle on the project just read for its labeling config, so
finding a change costs no request; acting on one costs one or two. `check_queue_view`
runs with the periodic full id listing: one view listing per `resync_interval`.
"""

from __future__ import annotations

import structlog

from aldaemon.errors import ForeignWriter
from aldaemon.labelstudio import UNCERTAINTY_SAMPLING
from aldaemon.loop.context import CycleContext
from aldaemon.loop.fence import confirm_owner
from aldaemon.loop.publish import activate_version, write_queue_view
from aldaemon.records import ProjectInfo
from aldaemon.sync.drift import (
    Drift,
    DriftKind,
    detect_drift,
    foreign_versions,
    foreign_writer_message,
    lost_predictions,
    queue_view_drift,
)
from aldaemon.sync.versions import VersionState, queue_view_data


def refuse_foreign_writer(ctx: CycleContext, names_on_server: list[str]) -> None:
    """Raise `ForeignWriter` when another writer put versions of our prefix there."""
    prefix = ctx.project.predictions.version_prefix
    ours = ctx.store.list_versions(ctx.project.id)
    foreign = foreign_versions(prefix=prefix, names_on_server=names_on_server, ours=ours)
    if foreign:
        raise ForeignWriter(foreign_writer_message(prefix=prefix, names=foreign))


async def handle_drift(
    ctx: CycleContext, info: ProjectInfo, *, logger: structlog.typing.FilteringBoundLogger
) -> None:
    """Find and handle one change a person made (at most one per poll)."""
    store = ctx.store
    project_id = ctx.project.id
    if info.model_version:
        refuse_foreign_writer(ctx, [info.model_version])
    drift = detect_drift(
        ls_model_version=info.model_version,
        ls_sampling=info.sampling,
        ours=store.list_versions(project_id),
        pinned=store.get_meta(project_id).pinned_version,
        uncertainty_sampling=UNCERTAINTY_SAMPLING,
    )
    if drift is None:
        return
    _log_drift(drift, logger)
    confirm_owner(ctx)
    if drift.what is DriftKind.SAMPLING:
        await ctx.gateway.update_project(project_id, sampling=UNCERTAINTY_SAMPLING)
    elif drift.what is DriftKind.ACTIVE_SWITCHED:
        assert drift.expected is not None
        store.set_meta(project_id, pinned_version=drift.found)
        store.mark_superseded(project_id, drift.expected)
    elif drift.what is DriftKind.ACTIVATION_INTERRUPTED:
        assert drift.found is not None
        await activate_version(ctx, drift.found)
    elif drift.what is DriftKind.ACTIVE_LOST:
        assert drift.expected is not None
        counts = await ctx.gateway.model_version_counts(project_id)
        if lost_predictions(name=drift.expected, counts=counts):
            # Its stored predictions are sent again and it is activated again, this cycle.
            store.mark_for_republish(project_id, drift.expected)
        else:
            await activate_version(ctx, drift.expected)


async def check_queue_view(
    ctx: CycleContext, *, logger: structlog.typing.FilteringBoundLogger
) -> None:
    """Restore aldaemon's queue view when a person edited or deleted it.

    Only while one of aldaemon's versions is active (the view lists that version's tasks);
    under a person's pin the view is left as it is until the next activation.
    """
    store = ctx.store
    project_id = ctx.project.id
    meta = store.get_meta(project_id)
    active = next(
        (v for v in store.list_versions(project_id) if v.state == VersionState.ACTIVE), None
    )
    if active is None or meta.view_id is None:
        return
    views = await ctx.gateway.list_views(project_id)
    found = next((view.data for view in views if view.id == meta.view_id), None)
    drift = queue_view_drift(
        found=found, expected=queue_view_data(title=ctx.project.view.title, version=active.name)
    )
    if drift is None:
        return
    _log_drift(drift, logger)
    if found is None:
        store.set_meta(project_id, view_id=None)  # found again by title, or created
    await write_queue_view(ctx, active.name)


def _log_drift(drift: Drift, logger: structlog.typing.FilteringBoundLogger) -> None:
    logger.warning(
        "drift.detected",
        what=str(drift.what),
        found=drift.found,
        expected=drift.expected,
        action=drift.action,
    )
