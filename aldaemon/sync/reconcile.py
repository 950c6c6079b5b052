"""Pure decisions of the sync: what changed in a poll, and which tasks were deleted.

Nothing here does I/O. The cycle reads tasks from Label Studio, asks the store what it
knows about them, and hands both to `diff`; the store then applies the outcome in one
transaction. Keeping the decision pure means every rule below has a plain unit test.

Label Studio has no annotation feed in the Community Edition, so the daemon re-reads whole
tasks whose `updated_at` passed a watermark (see `watermark.py`), and compares the
annotations it gets with the ones it stored (a three-way diff in the vdirsyncer sense,
with local state as the status table):

    fetched task  --+                  +--> created  (id new to local state)
                    +--> diff(...) ----+--> updated  (same id, other updated_at/label/skip)
    stored annots --+                  +--> deleted  (stored id missing from the task)
"""

from __future__ import annotations

import dataclasses
from array import array
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from aldaemon.records import AnnotationRecord, TaskRecord
from aldaemon.sync.labels import StoredAnnotation, carries_label
from aldaemon.sync.timestamps import later_ls_datetime, parse_ls_datetime

# --- the diff -----------------------------------------------------------------------------


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


def _differs(fetched: AnnotationRecord, stored: StoredAnnotation) -> bool:
    """Label Studio's current answer differs from what we stored.

    Not only a newer `updated_at`: the read is always Label Studio's present state, so any
    difference wins, even if a skewed server clock made the timestamp go backwards.
    """
    return (
        fetched.updated_at != stored.updated_at
        or fetched.labels != stored.labels
        or fetched.was_cancelled != stored.was_cancelled
        or fetched.ground_truth != stored.ground_truth
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
                if carries_label(labels=annotation.labels, was_cancelled=annotation.was_cancelled):
                    label_changes += 1
            elif _differs(annotation, stored):
                updated.append(annotation)
                if carries_label(
                    labels=annotation.labels, was_cancelled=annotation.was_cancelled
                ) or carries_label(labels=stored.labels, was_cancelled=stored.was_cancelled):
                    label_changes += 1
        fetched_ids = {a.id for a in annotations}
        for stored in sorted(stored_by_id.values(), key=_by_id):
            if stored.id in fetched_ids:
                continue
            deleted.append(stored.id)
            if carries_label(labels=stored.labels, was_cancelled=stored.was_cancelled):
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

    The ids are compared as 8-byte integers: at a million tasks two Python sets of them
    would hold ~200 MiB at once (bench/resync_memory.py).
    """
    if not len(listed_ids) and len(known_ids) >= valve_min_known:
        return DeletionDecision(
            deleted_task_ids=frozenset(),
            refused=(
                f"Label Studio listed no task at all while local state knows {len(known_ids)}; "
                "refusing to mark them all deleted (a token for another organization, a "
                "restored database or a proxy answering empty looks the same). If the "
                "project really was emptied, run `aldaemon state rebuild --project ID`."
            ),
        )
    known = _id_array(known_ids)
    gone = known[np.isin(known, _id_array(listed_ids), invert=True)]
    return DeletionDecision(deleted_task_ids=frozenset(gone.tolist()))


def _id_array(ids: Collection[int]) -> npt.NDArray[np.int64]:
    """Task ids as a numpy array without a Python object per id where they are already
    packed (an `array.array("q")` is read in place)."""
    if isinstance(ids, array):
        return np.frombuffer(ids, dtype=np.int64)
    return np.fromiter(ids, dtype=np.int64, count=len(ids))
