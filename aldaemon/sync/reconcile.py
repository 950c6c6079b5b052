"""Pure decisions of the sync: what changed, what was deleted, which label trains, where to poll.

Nothing here does I/O. The cycle reads tasks from Label Studio, asks the store what it
knows about them, and hands both to `diff`; the store then applies the outcome in one
transaction. Keeping the decision pure means every rule below has a plain unit test.

Label Studio has no annotation feed in the Community Edition, so the daemon re-reads whole
tasks whose `updated_at` passed a watermark, and compares the annotations it gets with the
ones it stored (a three-way diff in the vdirsyncer sense, with local state as the status
table):

    fetched task  --+                  +--> created  (id new to local state)
                    +--> diff(...) ----+--> updated  (same id, other updated_at/label/skip)
    stored annots --+                  +--> deleted  (stored id missing from the task)

The watermark only moves forward, and while it is "unsettled" the poll re-reads an overlap
window below it: PostgreSQL can commit a row with an older timestamp after a newer one,
and such a row would otherwise never be seen.

    updated_at:  ...----[ overlap ]W          asked while unsettled: > W - overlap
                                   W          asked once settled:    > W
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

from aldaemon.records import AnnotationRecord, TaskRecord

LS_DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

# Label Studio's JSON drops the fraction when it is zero and some proxies rewrite 'Z' as
# '+00:00'; anything without a time of day is not a timestamp Label Studio wrote.
_LS_DATETIME_SHAPE = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})?",
    re.IGNORECASE,
)


# --- timestamps -------------------------------------------------------------------------


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


def normalize_ls_datetime(text: str) -> str:
    """The same instant in the exact format, so stored watermarks compare and query safely."""
    return format_ls_datetime(parse_ls_datetime(text))


def later_ls_datetime(first: str | None, second: str | None) -> str | None:
    """The later of two Label Studio timestamps, in the exact format (None if both absent).

    Compared as instants, never as strings: '...36Z' sorts after '...36.5Z' as text.
    """
    candidates = [parse_ls_datetime(text) for text in (first, second) if text is not None]
    if not candidates:
        return None
    return format_ls_datetime(max(candidates))


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


# --- the diff -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredAnnotation:
    """An annotation as local state holds it: what the diff compares fetched ones against."""

    id: int
    task_id: int
    label: str | None
    was_cancelled: bool
    updated_at: str
    deleted: bool = False


@dataclass(frozen=True)
class ReconcileOutcome:
    """What one poll changes in local state; the store applies it in one transaction.

    `tasks` holds every fetched task without its annotations (the annotation changes are
    spelled out in `created`, `updated` and `deleted`): upserting a task is idempotent and
    un-deletes a task that reappeared.
    """

    tasks: tuple[TaskRecord, ...] = ()
    created: tuple[AnnotationRecord, ...] = ()
    updated: tuple[AnnotationRecord, ...] = ()
    deleted: tuple[int, ...] = ()
    label_changes: int = 0
    newest_updated_at: str | None = None

    @property
    def changes_annotations(self) -> bool:
        """True when at least one annotation was created, updated or deleted."""
        return bool(self.created or self.updated or self.deleted)


def _carries_label(*, label: str | None, was_cancelled: bool) -> bool:
    """Whether an annotation contributes a training label (a skip never does)."""
    return label is not None and not was_cancelled


def _differs(fetched: AnnotationRecord, stored: StoredAnnotation) -> bool:
    """Label Studio's current answer differs from what we stored.

    Not only a newer `updated_at`: the read is always Label Studio's present state, so any
    difference wins, even if a skewed server clock made the timestamp go backwards.
    """
    return (
        fetched.updated_at != stored.updated_at
        or fetched.label != stored.label
        or fetched.was_cancelled != stored.was_cancelled
    )


class _Timestamped(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def updated_at(self) -> str: ...


_Record = TypeVar("_Record", bound=_Timestamped)


def _newest_per_id(records: Iterable[_Record]) -> list[_Record]:
    """Keep one record per id, the one with the newest `updated_at` (the later one on ties).

    Paging by id over a moving data set can return a task twice; both copies describe the
    same task and the newer one is the truth.
    """
    chosen: dict[int, _Record] = {}
    for record in records:
        previous = chosen.get(record.id)
        if previous is None or parse_ls_datetime(record.updated_at) >= parse_ls_datetime(
            previous.updated_at
        ):
            chosen[record.id] = record
    return list(chosen.values())


def diff(
    fetched: Sequence[TaskRecord], known: Mapping[int, Sequence[StoredAnnotation]]
) -> ReconcileOutcome:
    """Compare tasks just read from Label Studio with the annotations stored for them.

    `known` maps task id -> its stored, non-deleted annotations, for the fetched tasks
    only (a task missing from it has none). An annotation whose (id, updated_at, label,
    skip) already matches local state yields nothing, so re-reading an unchanged task (the
    overlap window does that on purpose) changes nothing but the task upsert.

    `label_changes` counts what can change the training data: a created annotation that
    carries a label, any update touching a label on either side (an edit that keeps its
    label still counts; label->skip and skip->label do; skip->skip does not), and a
    deleted annotation that carried a label.
    """
    tasks = sorted(_newest_per_id(fetched), key=_by_id)
    created: list[AnnotationRecord] = []
    updated: list[AnnotationRecord] = []
    deleted: list[int] = []
    label_changes = 0
    for task in tasks:
        stored_by_id = {a.id: a for a in known.get(task.id, ()) if not a.deleted}
        annotations = sorted(_newest_per_id(task.annotations), key=_by_id)
        for annotation in annotations:
            stored = stored_by_id.get(annotation.id)
            if stored is None:
                created.append(annotation)
                if _carries_label(label=annotation.label, was_cancelled=annotation.was_cancelled):
                    label_changes += 1
            elif _differs(annotation, stored):
                updated.append(annotation)
                if _carries_label(
                    label=annotation.label, was_cancelled=annotation.was_cancelled
                ) or _carries_label(label=stored.label, was_cancelled=stored.was_cancelled):
                    label_changes += 1
        fetched_ids = {a.id for a in annotations}
        for stored in sorted(stored_by_id.values(), key=_by_id):
            if stored.id in fetched_ids:
                continue
            deleted.append(stored.id)
            if _carries_label(label=stored.label, was_cancelled=stored.was_cancelled):
                label_changes += 1
    newest: str | None = None
    for task in tasks:
        newest = later_ls_datetime(newest, task.updated_at)
    return ReconcileOutcome(
        tasks=tuple(dataclasses.replace(task, annotations=()) for task in tasks),
        created=tuple(created),
        updated=tuple(updated),
        deleted=tuple(deleted),
        label_changes=label_changes,
        newest_updated_at=newest,
    )


def _by_id(record: _Timestamped) -> int:
    return record.id


# --- deleted tasks ------------------------------------------------------------------------


@dataclass(frozen=True)
class DeletionDecision:
    """Which known tasks a full id listing says are gone, or why we refuse to believe it."""

    deleted_task_ids: frozenset[int]
    refused: str | None = None


def find_deleted_tasks(
    *, listed_ids: Collection[int], known_ids: Collection[int], valve_min_known: int = 5
) -> DeletionDecision:
    """Known tasks missing from Label Studio's full listing are deleted, with a safety valve.

    A listing that is suddenly EMPTY while we know `valve_min_known` tasks or more looks
    exactly like a token scoped to another organization, a restored database or a proxy
    answering an empty page. Believing it would throw away every label we hold, so the
    decision is refused (nothing deleted) and `refused` says why and what to do.
    """
    known = frozenset(known_ids)
    if not listed_ids and len(known) >= valve_min_known:
        return DeletionDecision(
            deleted_task_ids=frozenset(),
            refused=(
                f"Label Studio listed no task at all while local state knows {len(known)}; "
                "refusing to mark them all deleted (a token for another organization, a "
                "restored database or a proxy answering empty looks the same). If the "
                "project really was emptied, run `aldaemon state rebuild --project ID`."
            ),
        )
    return DeletionDecision(deleted_task_ids=known - frozenset(listed_ids))


# --- training label -----------------------------------------------------------------------


def choose_training_label(annotations: Sequence[StoredAnnotation]) -> str | None:
    """The label a task trains with: its newest live annotation that carries a label.

    Newest by `updated_at` as an instant, then by id (Label Studio ids grow), so a re-edit
    by any annotator wins over older opinions. Skips, deleted annotations and annotations
    without a choice never decide. None when no annotation carries a label.
    """
    candidates = [
        a
        for a in annotations
        if not a.deleted and _carries_label(label=a.label, was_cancelled=a.was_cancelled)
    ]
    if not candidates:
        return None
    newest = max(candidates, key=lambda a: (parse_ls_datetime(a.updated_at), a.id))
    return newest.label
