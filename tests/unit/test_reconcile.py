"""The pure sync decisions: the annotation diff, deleted tasks, training labels, watermark."""

# Our tests assert `expected == actual`, which ruff's SIM300 calls a Yoda condition.

from __future__ import annotations

from array import array
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aldaemon.records import AnnotationRecord, TaskRecord
from aldaemon.sync.labels import StoredAnnotation, choose_training_label
from aldaemon.sync.reconcile import DeletionDecision, ReconcileOutcome, diff, find_deleted_tasks
from aldaemon.sync.timestamps import format_ls_datetime, parse_ls_datetime
from aldaemon.sync.watermark import Watermark, next_watermark, query_after

T0 = "2026-11-27T21:11:36.815556Z"
T1 = "2026-11-27T21:12:00.000001Z"
T2 = "2026-11-27T21:13:00.500000Z"


def annotation(
    annotation_id: int,
    *,
    task_id: int = 1,
    label: str | None = "pos",
    was_cancelled: bool = False,
    updated_at: str = T0,
) -> AnnotationRecord:
    return AnnotationRecord(
        id=annotation_id,
        task_id=task_id,
        label=label,
        was_cancelled=was_cancelled,
        updated_at=updated_at,
    )


def task(task_id: int, *annotations: AnnotationRecord, updated_at: str = T0) -> TaskRecord:
    return TaskRecord(
        id=task_id, updated_at=updated_at, text=f"text {task_id}", annotations=annotations
    )


def stored(record: AnnotationRecord, *, deleted: bool = False) -> StoredAnnotation:
    return StoredAnnotation(
        id=record.id,
        task_id=record.task_id,
        label=record.label,
        was_cancelled=record.was_cancelled,
        updated_at=record.updated_at,
        deleted=deleted,
    )


def by_id(record: StoredAnnotation | AnnotationRecord) -> int:
    return record.id


def known_from(tasks: Sequence[TaskRecord]) -> dict[int, list[StoredAnnotation]]:
    return {t.id: [stored(a) for a in t.annotations] for t in tasks}


def applied(
    known: Mapping[int, Sequence[StoredAnnotation]], outcome: ReconcileOutcome
) -> dict[int, list[StoredAnnotation]]:
    """What the store holds after applying `outcome`: a model of `apply_reconcile`."""
    by_id = {a.id: a for annotations in known.values() for a in annotations if not a.deleted}
    for record in (*outcome.created, *outcome.updated):
        by_id[record.id] = stored(record)
    for annotation_id in outcome.deleted:
        by_id.pop(annotation_id, None)
    result: dict[int, list[StoredAnnotation]] = {task_id: [] for task_id in known}
    for t in outcome.tasks:
        result.setdefault(t.id, [])
    for a in by_id.values():
        result.setdefault(a.task_id, []).append(a)
    return result


class TestParseLsDatetime:
    def test_microseconds_with_z(self) -> None:
        """Label Studio's usual form is read as an aware UTC instant."""
        assert datetime(2026, 11, 27, 21, 11, 36, 815556, tzinfo=UTC) == parse_ls_datetime(T0)

    def test_without_microseconds(self) -> None:
        """The form Label Studio's JSON uses when the fraction is zero is accepted."""
        assert datetime(2026, 11, 27, 21, 11, 36, tzinfo=UTC) == parse_ls_datetime(
            "2026-11-27T21:11:36Z"
        )

    def test_plus_zero_offset(self) -> None:
        """A '+00:00' suffix means the same instant as 'Z'."""
        assert parse_ls_datetime(T0) == parse_ls_datetime("2026-11-27T21:11:36.815556+00:00")

    def test_other_offset_is_converted_to_utc(self) -> None:
        """A timestamp with another offset is converted to the UTC instant."""
        assert datetime(2026, 11, 27, 20, 11, 36, tzinfo=UTC) == parse_ls_datetime(
            "2026-11-27T21:11:36+01:00"
        )

    def test_missing_offset_is_utc(self) -> None:
        """A timestamp without an offset is taken as UTC, which Label Studio stores."""
        assert datetime(2026, 11, 27, 21, 11, 36, tzinfo=UTC) == parse_ls_datetime(
            "2026-11-27T21:11:36"
        )

    def test_bare_date_is_refused(self) -> None:
        """A date without a time of day is not a Label Studio timestamp."""
        with pytest.raises(ValueError, match="2026-11-27"):
            parse_ls_datetime("2026-11-27")

    def test_garbage_is_refused(self) -> None:
        """Text that is no timestamp raises ValueError naming it."""
        with pytest.raises(ValueError, match="yesterday"):
            parse_ls_datetime("yesterday")


class TestFormatLsDatetime:
    def test_zero_microseconds_are_written_out(self) -> None:
        """A whole second still gets six fraction digits, since '...36Z' makes LS answer 500."""
        assert "2026-11-27T21:11:36.000000Z" == format_ls_datetime(
            datetime(2026, 11, 27, 21, 11, 36, tzinfo=UTC)
        )

    def test_offset_is_converted_to_utc(self) -> None:
        """An aware datetime in another zone is written as its UTC instant with 'Z'."""
        plus_two = timezone(timedelta(hours=2))
        assert "2026-11-27T19:00:00.000000Z" == format_ls_datetime(
            datetime(2026, 11, 27, 21, 0, 0, tzinfo=plus_two)
        )

    def test_naive_datetime_is_refused(self) -> None:
        """A naive datetime is refused rather than guessed to be UTC."""
        with pytest.raises(ValueError, match="naive"):
            format_ls_datetime(datetime(2026, 11, 27, 21, 0, 0))

    @given(st.datetimes(min_value=datetime(2000, 1, 1), timezones=st.just(UTC)))
    def test_round_trip(self, moment: datetime) -> None:
        """Formatting then parsing gives back the same instant."""
        assert moment == parse_ls_datetime(format_ls_datetime(moment))


class TestQueryAfter:
    def test_no_watermark_reads_everything(self) -> None:
        """Before the first poll there is no lower bound."""
        assert None is query_after(
            watermark=None, moved_at=None, now=100.0, overlap_seconds=5, settle_seconds=10
        )

    def test_unsettled_watermark_reaches_back_by_the_overlap(self) -> None:
        """A watermark moved recently asks for rows newer than watermark minus overlap."""
        assert "2026-11-27T21:11:31.815556Z" == query_after(
            watermark=T0, moved_at=100.0, now=105.0, overlap_seconds=5, settle_seconds=10
        )

    def test_settled_watermark_asks_strictly_newer(self) -> None:
        """Once the clock is settle_seconds past the move, the bound is the watermark itself."""
        assert T0 == query_after(
            watermark=T0, moved_at=100.0, now=110.0, overlap_seconds=5, settle_seconds=10
        )

    def test_unknown_move_time_keeps_the_overlap(self) -> None:
        """Without a recorded move time the overlap is kept, the safe side."""
        assert "2026-11-27T21:11:31.815556Z" == query_after(
            watermark=T0, moved_at=None, now=1e9, overlap_seconds=5, settle_seconds=10
        )

    def test_clock_going_backwards_keeps_the_overlap(self) -> None:
        """A local clock that went back behind the move time counts as unsettled."""
        assert "2026-11-27T21:11:31.815556Z" == query_after(
            watermark=T0, moved_at=100.0, now=50.0, overlap_seconds=5, settle_seconds=10
        )

    def test_bound_is_always_in_the_exact_format(self) -> None:
        """A stored watermark without microseconds still yields the exact format."""
        assert "2026-11-27T21:11:36.000000Z" == query_after(
            watermark="2026-11-27T21:11:36Z",
            moved_at=0.0,
            now=100.0,
            overlap_seconds=5,
            settle_seconds=10,
        )


class TestNextWatermark:
    def test_first_poll_sets_the_watermark(self) -> None:
        """The first poll with tasks sets the watermark and its move time."""
        assert Watermark(value=T0, moved_at=7.0) == next_watermark(
            current=Watermark(value=None, moved_at=None), newest_updated_at=T0, now=7.0
        )

    def test_newer_task_moves_it_forward(self) -> None:
        """A newer task moves the watermark and restarts the settle clock."""
        assert Watermark(value=T1, moved_at=9.0) == next_watermark(
            current=Watermark(value=T0, moved_at=1.0), newest_updated_at=T1, now=9.0
        )

    def test_older_task_never_moves_it_back(self) -> None:
        """A re-read from the overlap window leaves watermark and move time alone."""
        current = Watermark(value=T1, moved_at=1.0)
        assert current == next_watermark(current=current, newest_updated_at=T0, now=9.0)

    def test_same_instant_in_another_form_does_not_move_it(self) -> None:
        """The same instant written differently is no move, so the watermark can settle."""
        current = Watermark(value="2026-11-27T21:11:36.000000Z", moved_at=1.0)
        assert current == next_watermark(
            current=current, newest_updated_at="2026-11-27T21:11:36Z", now=9.0
        )

    def test_empty_poll_keeps_it(self) -> None:
        """A poll that read no task leaves the watermark as it was."""
        current = Watermark(value=T0, moved_at=1.0)
        assert current == next_watermark(current=current, newest_updated_at=None, now=9.0)

    def test_new_value_is_normalized(self) -> None:
        """A watermark taken from a timestamp without microseconds is stored in exact format."""
        assert "2026-11-27T21:11:36.000000Z" == (
            next_watermark(
                current=Watermark(value=None, moved_at=None),
                newest_updated_at="2026-11-27T21:11:36Z",
                now=1.0,
            ).value
        )


class TestDiff:
    def test_new_annotation_is_created(self) -> None:
        """An annotation local state does not know is reported as created."""
        new = annotation(10)
        assert (new,) == diff([task(1, new)], {}).created

    def test_unchanged_reread_yields_no_annotation_change(self) -> None:
        """Re-reading a task whose annotations match local state changes nothing."""
        fetched = [task(1, annotation(10), annotation(11, label="neg"))]
        outcome = diff(fetched, known_from(fetched))
        assert ((), (), (), 0) == (
            outcome.created,
            outcome.updated,
            outcome.deleted,
            outcome.label_changes,
        )

    def test_changed_label_is_updated(self) -> None:
        """An annotation with a new label and timestamp is reported as updated."""
        edited = annotation(10, label="neg", updated_at=T1)
        outcome = diff([task(1, edited)], {1: [stored(annotation(10))]})
        assert (edited,) == outcome.updated

    def test_changed_label_with_same_timestamp_is_updated(self) -> None:
        """Any difference from local state is an update, not only a newer timestamp."""
        edited = annotation(10, label="neg")
        outcome = diff([task(1, edited)], {1: [stored(annotation(10))]})
        assert (edited,) == outcome.updated

    def test_vanished_annotation_is_deleted(self) -> None:
        """A stored annotation missing from its re-read task is reported as deleted."""
        outcome = diff(
            [task(1, annotation(10))], {1: [stored(annotation(10)), stored(annotation(11))]}
        )
        assert (11,) == outcome.deleted

    def test_tasks_not_fetched_lose_nothing(self) -> None:
        """Annotations of tasks that were not re-read are never reported as deleted."""
        outcome = diff([task(1, annotation(10))], {2: [stored(annotation(20, task_id=2))]})
        assert () == outcome.deleted

    def test_locally_deleted_known_annotation_comes_back_as_created(self) -> None:
        """A fetched annotation local state holds only as deleted is created again."""
        back = annotation(10)
        outcome = diff([task(1, back)], {1: [stored(back, deleted=True)]})
        assert (back,) == outcome.created

    def test_every_fetched_task_is_upserted_without_annotations(self) -> None:
        """Every fetched task is in `tasks`, stripped of its annotations."""
        outcome = diff([task(2, annotation(20, task_id=2)), task(1)], {})
        assert (TaskRecord(1, T0, "text 1"), TaskRecord(2, T0, "text 2")) == outcome.tasks

    def test_duplicate_task_keeps_the_newer_copy(self) -> None:
        """A task read twice while paging is taken from its newer copy."""
        old = task(1, annotation(10), updated_at=T0)
        new = task(1, annotation(10, label="neg", updated_at=T1), updated_at=T1)
        outcome = diff([new, old], {})
        assert (annotation(10, label="neg", updated_at=T1),) == outcome.created

    def test_newest_updated_at_compares_instants(self) -> None:
        """The newest task timestamp is chosen as an instant and written in exact format."""
        fetched = [
            task(1, updated_at="2026-11-27T21:11:36.500000Z"),
            task(2, updated_at="2026-11-27T21:11:37Z"),
        ]
        assert "2026-11-27T21:11:37.000000Z" == diff(fetched, {}).newest_updated_at

    def test_nothing_fetched_gives_an_empty_outcome(self) -> None:
        """An empty poll gives an outcome with nothing to apply and no watermark."""
        assert ReconcileOutcome() == diff([], {})


class TestLabelChanges:
    def test_created_label_counts(self) -> None:
        """A new annotation carrying a label can change the training data."""
        assert 1 == diff([task(1, annotation(10))], {}).label_changes

    def test_created_skip_does_not_count(self) -> None:
        """A new skip changes no training data."""
        skip = annotation(10, label=None, was_cancelled=True)
        assert 0 == diff([task(1, skip)], {}).label_changes

    def test_edit_keeping_its_label_counts(self) -> None:
        """An edit that keeps the same label still counts."""
        edited = annotation(10, updated_at=T1)
        assert 1 == diff([task(1, edited)], {1: [stored(annotation(10))]}).label_changes

    def test_label_to_skip_counts(self) -> None:
        """Turning a label into a skip removes a training label and counts."""
        skip = annotation(10, label=None, was_cancelled=True, updated_at=T1)
        assert 1 == diff([task(1, skip)], {1: [stored(annotation(10))]}).label_changes

    def test_skip_to_label_counts(self) -> None:
        """Turning a skip into a label adds a training label and counts."""
        before = annotation(10, label=None, was_cancelled=True)
        assert (
            1 == diff([task(1, annotation(10, updated_at=T1))], {1: [stored(before)]}).label_changes
        )

    def test_skip_to_skip_does_not_count(self) -> None:
        """Re-saving a skip changes no training data."""
        before = annotation(10, label=None, was_cancelled=True)
        after = annotation(10, label=None, was_cancelled=True, updated_at=T1)
        assert 0 == diff([task(1, after)], {1: [stored(before)]}).label_changes

    def test_deleted_label_counts(self) -> None:
        """Deleting a labeled annotation removes training data and counts."""
        assert 1 == diff([task(1)], {1: [stored(annotation(10))]}).label_changes

    def test_deleted_skip_does_not_count(self) -> None:
        """Deleting a skip changes no training data."""
        skip = annotation(10, label=None, was_cancelled=True)
        assert 0 == diff([task(1)], {1: [stored(skip)]}).label_changes


timestamps = st.sampled_from([T0, T1, T2])
labels = st.sampled_from([None, "pos", "neg"])


@st.composite
def annotation_records(draw: st.DrawFn, task_id: int) -> AnnotationRecord:
    """An annotation of `task_id`; ids are task_id*10+k because annotations never move."""
    label = draw(labels)
    cancelled = label is None and draw(st.booleans())
    return annotation(
        task_id * 10 + draw(st.integers(0, 5)),
        task_id=task_id,
        label=label,
        was_cancelled=cancelled,
        updated_at=draw(timestamps),
    )


@st.composite
def task_lists(draw: st.DrawFn) -> list[TaskRecord]:
    task_ids = draw(st.lists(st.integers(1, 5), unique=True, max_size=5))
    tasks = []
    for task_id in task_ids:
        records = draw(st.lists(annotation_records(task_id), max_size=4, unique_by=by_id))
        tasks.append(task(task_id, *records, updated_at=draw(timestamps)))
    return tasks


class TestDiffProperties:
    @given(before=task_lists(), after=task_lists())
    def test_applying_the_outcome_makes_a_second_diff_empty(
        self, before: list[TaskRecord], after: list[TaskRecord]
    ) -> None:
        """Once an outcome is applied, diffing the same read again changes nothing."""
        known = {t: v for t, v in known_from(before).items() if t in {x.id for x in after}}
        state = applied(known, diff(after, known))
        again = diff(after, {t.id: state.get(t.id, []) for t in after})
        assert ((), (), (), 0) == (again.created, again.updated, again.deleted, again.label_changes)

    @given(before=task_lists(), after=task_lists())
    def test_applied_state_matches_what_label_studio_holds(
        self, before: list[TaskRecord], after: list[TaskRecord]
    ) -> None:
        """After applying, each fetched task's stored annotations are exactly the fetched ones."""
        known = {t: v for t, v in known_from(before).items() if t in {x.id for x in after}}
        state = applied(known, diff(after, known))
        expected = {t.id: sorted((stored(a) for a in t.annotations), key=by_id) for t in after}
        actual = {t.id: sorted(state.get(t.id, []), key=by_id) for t in after}
        assert expected == actual


class TestFindDeletedTasks:
    def test_known_task_missing_from_listing_is_deleted(self) -> None:
        """A known task the full listing no longer shows is deleted."""
        assert DeletionDecision(frozenset({2})) == find_deleted_tasks(
            listed_ids=[1, 3], known_ids=[1, 2, 3]
        )

    def test_new_listed_task_is_not_deleted(self) -> None:
        """A listed task local state does not know yet is nobody's deletion."""
        assert frozenset() == find_deleted_tasks(listed_ids=[1, 2], known_ids=[1]).deleted_task_ids

    def test_sudden_empty_listing_deletes_nothing(self) -> None:
        """An empty listing while many tasks are known deletes nothing (the valve)."""
        decision = find_deleted_tasks(listed_ids=[], known_ids=range(1, 6))
        assert frozenset() == decision.deleted_task_ids

    def test_sudden_empty_listing_says_why_and_what_to_do(self) -> None:
        """A refused decision explains itself and names the rebuild command."""
        decision = find_deleted_tasks(listed_ids=[], known_ids=range(1, 6))
        assert decision.refused is not None
        assert "aldaemon state rebuild --project" in decision.refused

    def test_small_project_can_be_emptied(self) -> None:
        """Below the valve threshold an empty listing deletes every known task."""
        assert DeletionDecision(frozenset({1, 2})) == find_deleted_tasks(
            listed_ids=[], known_ids=[1, 2]
        )

    def test_threshold_is_configurable(self) -> None:
        """The valve closes at the given number of known tasks."""
        decision = find_deleted_tasks(listed_ids=[], known_ids=[1, 2], valve_min_known=2)
        assert frozenset() == decision.deleted_task_ids

    def test_partial_listing_is_believed(self) -> None:
        """Only a completely empty listing trips the valve; most tasks gone is believed."""
        assert (
            frozenset(range(2, 11))
            == find_deleted_tasks(listed_ids=[1], known_ids=range(1, 11)).deleted_task_ids
        )

    @given(
        st.lists(st.integers(1, 2**40), unique=True, min_size=1),
        st.lists(st.integers(1, 2**40), unique=True),
    )
    def test_packed_ids_decide_as_sets_do(self, known: list[int], listed: list[int]) -> None:
        """The gateway and the store hand over packed arrays: the same decision as sets."""
        packed = find_deleted_tasks(
            listed_ids=array("q", sorted(listed)), known_ids=array("q", sorted(known))
        )
        expected = frozenset(known) - frozenset(listed) if listed or len(known) < 5 else frozenset()
        assert expected == packed.deleted_task_ids


def stored_annotation(
    annotation_id: int,
    *,
    label: str | None = "pos",
    updated_at: str = T0,
    was_cancelled: bool = False,
    deleted: bool = False,
) -> StoredAnnotation:
    return StoredAnnotation(
        id=annotation_id,
        task_id=1,
        label=label,
        was_cancelled=was_cancelled,
        updated_at=updated_at,
        deleted=deleted,
    )


class TestChooseTrainingLabel:
    def test_newest_annotation_wins(self) -> None:
        """The most recently updated annotation decides, whatever its id."""
        assert "neg" == choose_training_label(
            [
                stored_annotation(12, label="pos", updated_at=T0),
                stored_annotation(10, label="neg", updated_at=T2),
                stored_annotation(11, label="pos", updated_at=T1),
            ]
        )

    def test_timestamp_tie_goes_to_the_higher_id(self) -> None:
        """On equal timestamps the later-created (higher id) annotation decides."""
        assert "neg" == choose_training_label(
            [stored_annotation(11, label="neg"), stored_annotation(10, label="pos")]
        )

    def test_timestamps_compare_as_instants(self) -> None:
        """A fraction-less timestamp is compared as an instant, not as text."""
        assert "neg" == choose_training_label(
            [
                stored_annotation(10, label="pos", updated_at="2026-11-27T21:11:36.500000Z"),
                stored_annotation(11, label="neg", updated_at="2026-11-27T21:11:37Z"),
            ]
        )

    def test_newer_skip_does_not_decide(self) -> None:
        """A skip, however recent, never takes the label away from a real annotation."""
        assert "pos" == choose_training_label(
            [
                stored_annotation(10, label="pos", updated_at=T0),
                stored_annotation(11, label=None, was_cancelled=True, updated_at=T2),
            ]
        )

    def test_deleted_annotation_does_not_decide(self) -> None:
        """A deleted annotation is never used for training."""
        assert "pos" == choose_training_label(
            [
                stored_annotation(10, label="pos", updated_at=T0),
                stored_annotation(11, label="neg", updated_at=T2, deleted=True),
            ]
        )

    def test_annotation_without_choice_does_not_decide(self) -> None:
        """An annotation whose result has no choice carries no label."""
        assert "pos" == choose_training_label(
            [stored_annotation(10, label="pos"), stored_annotation(11, label=None, updated_at=T2)]
        )

    def test_no_label_at_all(self) -> None:
        """A task with only skips has no training label."""
        assert None is choose_training_label(
            [stored_annotation(10, label=None, was_cancelled=True)]
        )
