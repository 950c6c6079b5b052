"""Where polling stands, and the `updated_at >` bound of the next poll.

The watermark only moves forward, and while it is "unsettled" the poll re-reads an overlap
window below it: PostgreSQL can commit a row with an older timestamp after a newer one,
and such a row would otherwise never be seen.

    updated_at:  ...----[ overlap ]W          asked while unsettled: > W - overlap
                                   W          asked once settled:    > W
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from aldaemon.sync.timestamps import format_ls_datetime, later_ls_datetime, parse_ls_datetime


@dataclass(frozen=True)
class Watermark:
    """Where polling stands: the newest task `updated_at` stored, and when it last moved.

    `moved_at` is the local clock (seconds since the epoch) at the poll that moved it; the
    overlap window is kept until the local clock is `settle_seconds` past that moment.
    """

    value: str | None
    moved_at: float | None


def next_watermark(*, current: Watermark, newest_updated_at: str | None, now: float) -> Watermark:
    """The watermark after a poll whose newest task had `newest_updated_at`.

    It only moves forward: the overlap re-reads older tasks on purpose and must not drag
    it back. `moved_at` becomes `now` only when the value really moved, so repeated idle
    polls let it settle.
    """
    moved = later_ls_datetime(current.value, newest_updated_at)
    if moved is None or (
        current.value is not None and parse_ls_datetime(moved) == parse_ls_datetime(current.value)
    ):
        return current
    return Watermark(value=moved, moved_at=now)


def query_after(
    *,
    watermark: str | None,
    moved_at: float | None,
    now: float,
    overlap_seconds: float,
    settle_seconds: float,
) -> str | None:
    """The `updated_at >` bound of the next poll, in Label Studio's exact format.

    None when nothing was read yet: read every task. While the watermark moved less than
    `settle_seconds` ago (or we do not know when it moved, or the clock went backwards),
    reach `overlap_seconds` below it to catch rows committed out of timestamp order. Once
    settled, ask for strictly newer rows, so an idle project costs an empty answer.
    """
    if watermark is None:
        return None
    mark = parse_ls_datetime(watermark)
    settled = moved_at is not None and now - moved_at >= settle_seconds
    if settled:
        return format_ls_datetime(mark)
    return format_ls_datetime(mark - timedelta(seconds=overlap_seconds))
