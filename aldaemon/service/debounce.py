"""Coalesce webhook-driven poll requests per project.

Label Studio fires one webhook per annotation, and an import or a bulk edit fires
dozens within a second; each would otherwise ask for its own poll. The daemon shell
feeds every accepted webhook here and a project's runner is asked to poll at most once
per window.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)


class PollDebouncer:
    """Coalesce poll requests per project: many within `delay` seconds -> one `fire`.

    The window opens at the first request and is NOT extended by later ones: a burst of
    50 webhooks gives one poll `delay` seconds after the first, and a steady stream still
    polls every `delay` seconds instead of never. A request after a fire opens a new
    window. `fire` may be sync or async; its exceptions are logged, never propagated.

        requests:  x x x x x         x x
        fires:     ---------F        -------F
                   |<-delay->|
    """

    def __init__(self, delay: float, fire: Callable[[int], Awaitable[None] | None]) -> None:
        self._delay = delay
        self._fire = fire
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._running: set[asyncio.Task[None]] = set()

    def request(self, project_id: int) -> None:
        """Ask for a fire for `project_id`; a no-op when one is already pending."""
        if project_id in self._timers:
            return
        loop = asyncio.get_running_loop()
        self._timers[project_id] = loop.call_later(self._delay, self._due, project_id)

    def pending(self) -> frozenset[int]:
        """Projects with a fire scheduled but not yet started."""
        return frozenset(self._timers)

    async def aclose(self) -> None:
        """Drop pending requests and cancel fires in progress (the daemon is stopping)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        running = list(self._running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    def _due(self, project_id: int) -> None:
        del self._timers[project_id]
        try:
            result = self._fire(project_id)
        except Exception:
            log.exception("debounce.fire_failed", project_id=project_id)
            return
        if inspect.isawaitable(result):
            task = asyncio.create_task(self._await_fire(project_id, result))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _await_fire(self, project_id: int, result: Awaitable[None]) -> None:
        try:
            await result
        except Exception:
            log.exception("debounce.fire_failed", project_id=project_id)
