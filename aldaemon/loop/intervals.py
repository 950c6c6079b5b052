"""How long since a project's last resync and last training attempt, on the monotonic clock.

Both intervals start from a stored wall-clock time and are carried on across cycles by
an anchor in the context (`ctx.intervals`), so a step of the wall clock neither brings
the next resync or training forward nor holds it back (see `sync.policy`).
"""

from __future__ import annotations

import structlog

from aldaemon.loop.context import CycleContext
from aldaemon.sync.policy import CLOCK_STEP_TOLERANCE_SECONDS, seconds_since_attempt
from aldaemon.sync.versions import VersionState


def seconds_since_resync(ctx: CycleContext) -> float | None:
    """Since the last full id listing; None when there never was one."""
    last = ctx.store.sync_state(ctx.project.id).last_resync_at
    if last is None:
        return None
    elapsed = seconds_since_attempt(
        attempt_at=last,
        wall_now=ctx.clock(),
        monotonic_now=ctx.monotonic(),
        anchor=ctx.intervals.resync,
    )
    ctx.intervals.resync = elapsed.anchor
    return elapsed.seconds


def seconds_since_training_attempt(
    ctx: CycleContext, *, logger: structlog.typing.FilteringBoundLogger
) -> float | None:
    """Since the last training that finished or failed: min_interval throttles both,
    so a model that cannot be trained is not retried on every poll."""
    attempts = [
        v.trained_at if v.trained_at is not None else v.created_at
        for v in ctx.store.list_versions(ctx.project.id)
        if v.trained_at is not None or v.state == VersionState.FAILED
    ]
    times = [t for t in attempts if t is not None]
    if not times:
        return None
    clock = ctx.intervals
    elapsed = seconds_since_attempt(
        attempt_at=max(times),
        wall_now=ctx.clock(),
        monotonic_now=ctx.monotonic(),
        anchor=clock.training,
    )
    clock.training = elapsed.anchor
    step = elapsed.wall_behind - clock.reported_behind
    if elapsed.wall_behind and abs(step) > CLOCK_STEP_TOLERANCE_SECONDS:
        logger.warning(
            "clock.stepped_back",
            seconds=round(elapsed.wall_behind),
            action="min_interval is measured on the monotonic clock; training is not "
            "held back by the step",
        )
    clock.reported_behind = elapsed.wall_behind
    return elapsed.seconds
