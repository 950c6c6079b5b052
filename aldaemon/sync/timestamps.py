"""Label Studio's timestamps: read in every form it writes, written in the one it accepts.

The ONE place that format is spelled. Label Studio's Datetime filter answers HTTP 500 to
any other spelling (no fraction, '+00:00'), while its own JSON drops the fraction when it
is zero, so a timestamp copied verbatim into a query can break the next poll. Everything
that reads, compares or writes a Label Studio timestamp goes through here.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

LS_DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

# Label Studio's JSON drops the fraction when it is zero and some proxies rewrite 'Z' as
# '+00:00'; anything without a time of day is not a timestamp Label Studio wrote.
_LS_DATETIME_SHAPE = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})?",
    re.IGNORECASE,
)


def parse_ls_datetime(text: str) -> datetime:
    """Read a Label Studio timestamp into an aware UTC datetime.

    Accepts the forms Label Studio and its proxies produce: with or without microseconds,
    with 'Z', '+00:00' or another offset (converted to UTC). A timestamp without an offset
    is taken as UTC, which is what Label Studio stores. Anything else raises ValueError.
    """
    stripped = text.strip()
    if not _LS_DATETIME_SHAPE.fullmatch(stripped):
        raise ValueError(f"not a Label Studio timestamp: {text!r}")
    normalized = stripped[:-1] + "+00:00" if stripped[-1] in "zZ" else stripped
    parsed = datetime.fromisoformat(normalized)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_ls_datetime(moment: datetime) -> str:
    """Write a timestamp in the one form Label Studio's task filter accepts.

    Any other form ('...36Z' without microseconds, '+00:00') makes the filter answer HTTP
    500. A naive datetime is refused: `datetime.now()` is local time, a classic silent bug.
    """
    if moment.tzinfo is None:
        raise ValueError(f"refusing a naive datetime (no timezone): {moment!r}")
    return moment.astimezone(UTC).strftime(LS_DATETIME_FORMAT)


def later_ls_datetime(first: str | None, second: str | None) -> str | None:
    """The later of two Label Studio timestamps, in the exact format (None if both absent).

    Compared as instants, never as strings: '...36Z' sorts after '...36.5Z' as text.
    """
    candidates = [parse_ls_datetime(text) for text in (first, second) if text is not None]
    if not candidates:
        return None
    return format_ls_datetime(max(candidates))
