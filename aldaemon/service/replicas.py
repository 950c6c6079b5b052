"""Replicas of `aldaemon run` over one PostgreSQL: this replica's side of the ownership.

    start ........ take the fair share of the projects (store/ownership.py)
    every poll/2 . a round: release the surplus, take orphaned projects up to the share;
                   a project just taken is polled at once
    each cycle ... runs only on a project this replica owns, checked live at its start
    each write ... loop/fence.py checks again, right before the request

With SQLite (or `once`), there is no ownership: the one daemon owns every project.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from aldaemon.config import REPLICA_NAME_MAX, Config, DaemonConfig

if TYPE_CHECKING:
    from aldaemon.service.runtime import Runtime
    from aldaemon.store.ownership import ProjectOwnership

log = structlog.get_logger(__name__)


def replica_name(daemon: DaemonConfig) -> str:
    """`[daemon] replica`, or "HOST:PID" (the host name cut so that the pid stays)."""
    if daemon.replica:
        return daemon.replica
    pid = str(os.getpid())
    return f"{socket.gethostname()[: REPLICA_NAME_MAX - len(pid) - 1]}:{pid}"


def open_ownership(config: Config) -> ProjectOwnership | None:
    """This replica's ownership session, when the state is in PostgreSQL."""
    if config.state.dsn is None:
        return None
    from aldaemon.store.ownership import ProjectOwnership

    return ProjectOwnership(
        config.state.dsn, password=config.state.password, replica=replica_name(config.daemon)
    )


def ownership_round(runtime: Runtime) -> tuple[int, ...]:
    """One round for the configured projects; returns those just taken."""
    ownership = runtime.ownership
    if ownership is None:
        return ()
    configured = [p.id for p in runtime.config.projects]
    changed = ownership.rebalance(configured, busy=runtime.busy_projects())
    runtime.metrics.record_ownership(
        ownership.replica, {pid: ownership.holds(pid) for pid in configured}
    )
    return changed.acquired


async def keep_ownership(runtime: Runtime, *, poll_now: Callable[[int], None]) -> None:
    """A round every half poll interval, until cancelled (a project orphaned by a dead
    replica is taken within one poll interval)."""
    while True:
        await asyncio.sleep(runtime.config.daemon.poll_interval / 2)
        try:
            acquired = ownership_round(runtime)
        except Exception:  # a bug: keep the rounds going, keep the traceback
            log.exception("ownership.round_crashed")
            continue
        for project_id in acquired:
            poll_now(project_id)
