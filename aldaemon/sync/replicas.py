"""Which projects a replica should own: the fair share, and what to take or let go.

Replicas sharing one PostgreSQL split the configured projects between them; each
re-evaluates at every poll (aldaemon/store/ownership.py takes and releases the locks,
aldaemon/service/replicas.py runs the rounds). These rules only decide.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass


def fair_share(*, projects: int, replicas: int) -> int:
    """The most projects one replica may own: ceil(projects / live replicas)."""
    return math.ceil(projects / max(1, replicas))


@dataclass(frozen=True)
class OwnershipPlan:
    """One round's moves: locks to release, then projects to try, in order, until `room`."""

    release: tuple[int, ...]
    candidates: tuple[int, ...]
    room: int


def plan_ownership(
    *,
    configured: Iterable[int],
    held: Collection[int],
    busy: Collection[int],
    replicas: int,
) -> OwnershipPlan:
    """What to release and what to try to take so that this replica holds its fair share.

    Projects no longer configured are released. Above the share, the surplus is released
    from the highest ids down, but never a project with a cycle running (its lock is
    what keeps another replica from writing beside that cycle): it goes at a later round.
    Below the share, every project not held is a candidate (in id order); the caller
    tries each lock without waiting, and those another replica holds simply fail.
    """
    wanted = sorted(set(configured))
    share = fair_share(projects=len(wanted), replicas=replicas)
    gone = sorted(pid for pid in held if pid not in wanted)
    kept = sorted(pid for pid in held if pid in wanted)
    surplus = [pid for pid in reversed(kept) if pid not in busy][: max(0, len(kept) - share)]
    remaining = len(kept) - len(surplus)
    return OwnershipPlan(
        release=tuple(gone + sorted(surplus)),
        candidates=tuple(pid for pid in wanted if pid not in held),
        room=max(0, share - remaining),
    )
