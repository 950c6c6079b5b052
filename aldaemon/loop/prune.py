"""Pruning: delete the daemon's own old versions from Label Studio, bounded per call.

Slow on the server (about 10 ms per prediction), so it never holds back the next publish:
`prune_own_versions` is a coroutine the service runs beside cycles, not a cycle step.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import structlog

from aldaemon.errors import LabelStudioUnreachable
from aldaemon.loop.context import CycleContext
from aldaemon.loop.fence import confirm_owner
from aldaemon.store import VersionRow
from aldaemon.sync.drift import sent_versions
from aldaemon.sync.versions import VersionState, own_version_number

log = structlog.get_logger(__name__)


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
    # A version failed before it was sent may share its name with another writer's.
    sent = sent_versions(ours.values())
    candidates = sorted(
        (
            (number, name)
            for name in on_server
            if (number := own_version_number(options.version_prefix, name)) is not None
            and name in ours
            and name in sent
        ),
    )
    # Failed versions never count toward keep_versions and go first.
    failed = [name for _, name in candidates if ours[name].state == VersionState.FAILED]
    complete = [name for _, name in candidates if ours[name].state != VersionState.FAILED]
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
        confirm_owner(ctx)
        try:
            deleted = await ctx.gateway.delete_model_version(project_id, name)
        except LabelStudioUnreachable as exc:
            log.warning("prune.deferred", project_id=project_id, version=name, error=str(exc))
            break
        ctx.store.mark_pruned(project_id, name, pruned_at=ctx.clock())
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
        if row.state == VersionState.SUPERSEDED and row.n_predictions and row.name not in on_server:
            ctx.store.mark_pruned(ctx.project.id, row.name, pruned_at=ctx.clock())
            ctx.store.drop_predictions(ctx.project.id, row.name)
            log.info(
                "prune.found_deleted",
                project_id=ctx.project.id,
                version=row.name,
                reason="deleted in Label Studio before the last prune was recorded",
            )
