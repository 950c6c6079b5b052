"""The check before every write to Label Studio: does this replica still own the project?

With replicas (store/ownership.py) a replica may lose a project at any moment: its
PostgreSQL session ended (a partition, a long pause) and another replica took the
project over. Each write path calls `confirm_owner` right before its request (each
upload batch, activation, view write, prune, drift fix), so a replica that lost the
project raises `OwnershipLost` there instead of writing beside the new owner; the new
owner resumes from the shared store (the count-checked upload resume). Alone, the
check costs nothing.
"""

from __future__ import annotations

from aldaemon.errors import OwnershipLost
from aldaemon.loop.context import CycleContext


def confirm_owner(ctx: CycleContext) -> None:
    """Raise `OwnershipLost` unless this replica still owns the context's project."""
    if not ctx.still_owner(ctx.project.id):
        raise OwnershipLost(
            f"project {ctx.project.id}: this replica no longer owns it (its PostgreSQL "
            "session or lock is gone); another replica carries it on, nothing was written"
        )
