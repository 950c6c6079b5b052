"""When the periodic full id listing is due: `resync_interval` on the monotonic clock.

The deadline is computed by `Cycle.resync_due` from the stored time of the last listing;
these tests drive it with injected wall and monotonic clocks and a real store.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aldaemon.config import load_config
from aldaemon.loop.context import CycleContext
from aldaemon.loop.cycle import Cycle
from aldaemon.store import Store
from aldaemon.sync.reconcile import DeletionDecision

T_LISTED = 1_800_000_000.0  # wall time of the last full listing
RESYNC_INTERVAL = 600


class Clocks:
    def __init__(self, *, wall: float, monotonic: float) -> None:
        self.wall_now = wall
        self.monotonic_now = monotonic

    def wall(self) -> float:
        return self.wall_now

    def monotonic(self) -> float:
        return self.monotonic_now

    def advance(self, seconds: float) -> None:
        """Both clocks move on together, as they do when nobody steps the wall clock."""
        self.wall_now += seconds
        self.monotonic_now += seconds


@pytest.fixture
def clocks() -> Clocks:
    return Clocks(wall=T_LISTED, monotonic=1000.0)


@pytest.fixture
def ctx(tmp_path: Path, clocks: Clocks) -> Iterator[CycleContext]:
    """A project whose last full listing was at T_LISTED; resync_interval 600 s."""
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[labelstudio]
url = "http://127.0.0.1:9"
token = "t"
[state]
dir = "{tmp_path / "state"}"
[daemon]
listen = ""
resync_interval = {RESYNC_INTERVAL}
[[projects]]
id = 1
"""
    )
    config = load_config(path, env={})
    store = Store.open(config.state.dir)
    store.apply_resync(1, DeletionDecision(deleted_task_ids=frozenset()), now=T_LISTED)
    context = CycleContext(
        project=config.projects[0],
        daemon=config.daemon,
        gateway=None,  # type: ignore[arg-type]  # deciding needs no Label Studio
        store=store,
        worker=None,  # type: ignore[arg-type]
        artifacts_dir=tmp_path,
        clock=clocks.wall,
        monotonic=clocks.monotonic,
    )
    try:
        yield context
    finally:
        store.close()


def due(ctx: CycleContext) -> bool:
    return Cycle(ctx).resync_due()


class TestResyncDeadline:
    def test_due_once_the_interval_has_passed(self, ctx: CycleContext, clocks: Clocks) -> None:
        """With steady clocks: not due at 599 s, due at 600 s."""
        clocks.advance(599)
        before = due(ctx)
        clocks.advance(1)
        assert (False, True) == (before, due(ctx))

    def test_a_wall_clock_step_forward_does_not_bring_it_forward(
        self, ctx: CycleContext, clocks: Clocks
    ) -> None:
        """10 s after the listing the wall clock jumps an hour ahead: still not due until
        600 s have passed on the monotonic clock."""
        clocks.advance(10)
        first = due(ctx)
        clocks.wall_now += 3600
        clocks.advance(10)
        stepped = due(ctx)
        clocks.advance(580)
        assert (False, False, True) == (first, stepped, due(ctx))

    def test_a_wall_clock_step_back_does_not_hold_it_back(
        self, ctx: CycleContext, clocks: Clocks
    ) -> None:
        """10 s after the listing the wall clock steps back an hour: due 600 s after the
        listing all the same, not 3600 s later."""
        clocks.advance(10)
        first = due(ctx)
        clocks.wall_now -= 3600
        clocks.advance(590)
        assert (False, True) == (first, due(ctx))

    def test_a_fresh_process_starts_the_measure_from_the_stored_time(
        self, ctx: CycleContext, clocks: Clocks
    ) -> None:
        """No earlier measure in this process: the wall clock starts it (700 s ago: due)."""
        clocks.advance(700)
        assert due(ctx)

    def test_a_fresh_process_on_a_clock_behind_the_listing_waits_at_most_the_interval(
        self, ctx: CycleContext, clocks: Clocks
    ) -> None:
        """Started with the wall clock an hour behind the stored listing time: due after
        one interval on the monotonic clock, not after the hour plus the interval."""
        clocks.wall_now -= 3600
        first = due(ctx)
        clocks.advance(RESYNC_INTERVAL)
        assert (False, True) == (first, due(ctx))

    def test_forced_is_always_due(self, ctx: CycleContext) -> None:
        assert Cycle(ctx, force_resync=True).resync_due()
