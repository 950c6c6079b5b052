"""Local state: opening safely, reconciling, training data, versions and history.

Tests taking `store` run on both backends (SQLite, then PostgreSQL: `any_store` in
tests/conftest.py); those taking `sqlite_store` or a `state_dir` are about the SQLite file.
"""

# Our tests assert `expected == actual`, which ruff's SIM300 calls a Yoda condition.

from __future__ import annotations

import sqlite3
import stat
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from aldaemon.errors import StateError, StateLockedError
from aldaemon.loop.poll import record_poll
from aldaemon.records import AnnotationRecord, PredictionRecord, TaskRecord
from aldaemon.store import (
    DB_FILENAME,
    LATEST_SCHEMA_VERSION,
    LOCK_FILENAME,
    ConstraintViolation,
    CycleRow,
    ProjectMeta,
    Store,
    SyncState,
    VersionRow,
    migrate_file,
    quarantine_database,
)
from aldaemon.store import meta as store_module
from aldaemon.sync.reconcile import DeletionDecision, ReconcileOutcome, diff, find_deleted_tasks
from aldaemon.sync.versions import (
    TrainingExample,
    VersionState,
    label_counts,
    training_examples,
)
from tests.helpers import start_ready_python, stop_process

P = 7  # project id used throughout
T0 = "2026-11-27T21:11:36.815556Z"
T1 = "2026-11-27T21:12:00.000001Z"
T2 = "2026-11-27T21:13:00.500000Z"


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def store(any_store: Store) -> Store:
    return any_store


@pytest.fixture
def sqlite_store(state_dir: Path) -> Iterator[Store]:
    opened = Store.open(state_dir)
    try:
        yield opened
    finally:
        opened.close()


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
        completed_by=1,
    )


def skip(annotation_id: int, *, task_id: int = 1, updated_at: str = T0) -> AnnotationRecord:
    return annotation(
        annotation_id, task_id=task_id, label=None, was_cancelled=True, updated_at=updated_at
    )


def task(
    task_id: int,
    *annotations: AnnotationRecord,
    updated_at: str = T0,
    text: str | None = "",
) -> TaskRecord:
    return TaskRecord(
        id=task_id,
        updated_at=updated_at,
        text=f"text {task_id}" if text == "" else text,
        annotations=annotations,
    )


def poll(store: Store, tasks: list[TaskRecord], *, now: float = 100.0) -> ReconcileOutcome:
    """What the cycle does with one poll: diff against local state, then apply."""
    outcome = diff(tasks, store.known_annotations(P, [t.id for t in tasks]))
    record_poll(store, P, outcome, now=now)
    return outcome


def resync(store: Store, listed: list[int], *, now: float = 200.0) -> DeletionDecision:
    decision = find_deleted_tasks(listed_ids=listed, known_ids=store.known_task_ids(P))
    store.apply_resync(P, decision, now=now)
    return decision


def raw(store: Store, sql: str) -> list[tuple[object, ...]]:
    """Read the database behind the store's back, as another process would."""
    if store.location.startswith("postgresql://"):
        with psycopg.connect(store.location) as pg:
            return [tuple(row) for row in pg.execute(sql).fetchall()]
    conn = sqlite3.connect(store.location)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


HOLD_LOCK = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from aldaemon.store import Store
    store = Store.open(Path(sys.argv[1]))
    print("ready", flush=True)
    sys.stdin.read()
    """
)


def start_holder(state_dir: Path) -> subprocess.Popen[str]:
    """Another process that opens the store and holds it until killed."""
    return start_ready_python(HOLD_LOCK, str(state_dir))


class TestOpen:
    def test_creates_a_private_directory(self, tmp_path: Path) -> None:
        """A missing state dir is created with mode 0700."""
        state_dir = tmp_path / "nested" / "state"
        Store.open(state_dir).close()
        assert 0o700 == stat.S_IMODE(state_dir.stat().st_mode)

    def test_empty_file_gets_every_migration(self, store: Store) -> None:
        """A new database has every migration recorded, in order."""
        applied = raw(store, "SELECT version FROM schema_version ORDER BY version")
        assert [(n,) for n in range(1, LATEST_SCHEMA_VERSION + 1)] == applied

    def test_empty_file_gets_every_table(self, sqlite_store: Store) -> None:
        """A new database has all tables the daemon uses."""
        tables = {row[0] for row in raw(sqlite_store, "SELECT name FROM sqlite_master")}
        expected = {
            "schema_version",
            "tasks",
            "annotations",
            "sync",
            "versions",
            "predictions",
            "project_meta",
            "cycles",
        }
        assert expected == expected & tables

    def test_database_uses_wal(self, sqlite_store: Store) -> None:
        """The database is in WAL mode, so `status` can read while the daemon writes."""
        assert [("wal",)] == raw(sqlite_store, "PRAGMA journal_mode")

    def test_foreign_keys_are_enforced(self, store: Store) -> None:
        """An annotation of a task local state does not hold is refused."""
        outcome = ReconcileOutcome(created=(annotation(10, task_id=99),))
        with pytest.raises(ConstraintViolation):
            record_poll(store, P, outcome, now=1.0)

    def test_reopen_keeps_data(self, state_dir: Path) -> None:
        """Data written before close is there after the next open."""
        with Store.open(state_dir) as first:
            poll(first, [task(1, annotation(10))])
        with Store.open(state_dir) as second:
            assert [TrainingExample(1, "text 1", "pos")] == training_examples(
                second.annotated_tasks(P)
            )

    def test_reopen_applies_no_migration_again(self, state_dir: Path) -> None:
        """Opening an up-to-date file leaves its migration history alone."""
        Store.open(state_dir).close()
        Store.open(state_dir).close()
        with Store.open(state_dir) as again:
            applied = raw(again, "SELECT version FROM schema_version ORDER BY version")
        assert [(n,) for n in range(1, LATEST_SCHEMA_VERSION + 1)] == applied

    def test_older_file_gets_only_the_missing_migrations(self, tmp_path: Path) -> None:
        """A file from an older release gets the later migrations, in order, and no others."""
        db_path = tmp_path / "old.sqlite3"
        conn = sqlite3.connect(db_path, isolation_level=None)
        first = (("CREATE TABLE a (x INTEGER)",),)
        migrate_file(conn, db_path=db_path, migrations=first, now=1.0)
        later = (
            *first,
            ("CREATE TABLE b (y INTEGER)",),
            ("INSERT INTO b SELECT COUNT(*) FROM a",),
        )
        applied = migrate_file(conn, db_path=db_path, migrations=later, now=2.0)
        conn.close()
        assert [2, 3] == applied

    def test_file_from_newer_release_is_refused(self, state_dir: Path) -> None:
        """A file whose schema is newer than this release raises StateError naming it."""
        Store.open(state_dir).close()
        conn = sqlite3.connect(state_dir / DB_FILENAME)
        with conn:
            conn.execute("INSERT INTO schema_version VALUES (?, 0)", (LATEST_SCHEMA_VERSION + 1,))
        conn.close()
        with pytest.raises(StateError, match="newer aldaemon release") as info:
            Store.open(state_dir)
        assert str(state_dir / DB_FILENAME) in str(info.value)

    def test_garbage_file_is_reported_corrupt(self, state_dir: Path) -> None:
        """A file that is not SQLite raises StateError naming the path."""
        state_dir.mkdir()
        (state_dir / DB_FILENAME).write_bytes(b"not a database, just garbage\n" * 200)
        with pytest.raises(StateError, match="corrupt") as info:
            Store.open(state_dir)
        assert str(state_dir / DB_FILENAME) in str(info.value)

    def test_corrupt_file_message_names_the_rebuild_command(self, state_dir: Path) -> None:
        """The corruption error tells the operator which command rebuilds local state."""
        state_dir.mkdir()
        (state_dir / DB_FILENAME).write_bytes(b"garbage" * 1000)
        with pytest.raises(StateError, match="aldaemon state rebuild --project ID"):
            Store.open(state_dir)

    def test_damaged_page_is_reported_corrupt(self, state_dir: Path) -> None:
        """A valid file with a damaged page inside is caught by the quick check at open."""
        with Store.open(state_dir) as opened:
            for number in range(40):
                opened.record_cycle(
                    P,
                    cycle_id=f"c{number}",
                    started_at=float(number),
                    finished_at=float(number),
                    outcome="ok",
                    summary={"padding": "x" * 400},
                )
        db_path = state_dir / DB_FILENAME
        content = bytearray(db_path.read_bytes())
        page_size = 4096
        content[3 * page_size : 3 * page_size + 200] = b"\xab" * 200
        db_path.write_bytes(bytes(content))
        with pytest.raises(StateError, match="corrupt"):
            Store.open(state_dir)

    def test_failed_open_releases_the_lock(self, state_dir: Path) -> None:
        """After a refused open (corrupt file) the lock is free for the rebuild."""
        state_dir.mkdir()
        (state_dir / DB_FILENAME).write_bytes(b"garbage" * 1000)
        with pytest.raises(StateError):
            Store.open(state_dir)
        quarantine_database(state_dir, now=0.0)
        Store.open(state_dir).close()

    def test_unwritable_directory_is_reported(self, tmp_path: Path) -> None:
        """A state dir that cannot be created raises StateError naming the path."""
        blocker = tmp_path / "a-file"
        blocker.write_text("not a directory")
        state_dir = blocker / "state"
        with pytest.raises(StateError) as info:
            Store.open(state_dir)
        assert str(state_dir) in str(info.value)

    def test_closed_store_refuses_work(self, state_dir: Path) -> None:
        """A call after close raises StateError instead of a bare sqlite error."""
        closed = Store.open(state_dir)
        closed.close()
        with pytest.raises(StateError, match="closed"):
            closed.sync_state(P)


class TestQuarantine:
    def test_corrupt_file_is_moved_aside(self, state_dir: Path) -> None:
        """The corrupt file is kept under a new name, with its bytes intact."""
        state_dir.mkdir()
        (state_dir / DB_FILENAME).write_bytes(b"garbage")
        moved = quarantine_database(state_dir, now=0.0)
        assert moved is not None
        assert (f"{DB_FILENAME}.corrupt-19700101T000000Z", b"garbage") == (
            moved.name,
            moved.read_bytes(),
        )

    def test_nothing_to_move(self, state_dir: Path) -> None:
        """Without a database file there is nothing to quarantine."""
        state_dir.mkdir()
        assert None is quarantine_database(state_dir, now=0.0)

    def test_refused_while_a_daemon_holds_the_lock(
        self, sqlite_store: Store, state_dir: Path
    ) -> None:
        """Quarantine needs the lock, so it cannot pull the file from under a daemon."""
        with pytest.raises(StateLockedError):
            quarantine_database(state_dir, now=0.0)


class TestLock:
    def test_second_opener_is_refused(self, sqlite_store: Store, state_dir: Path) -> None:
        """A second locking open of the same state dir raises StateLockedError."""
        with pytest.raises(StateLockedError, match=str(state_dir / LOCK_FILENAME)):
            Store.open(state_dir)

    def test_message_names_the_holder_pid(self, state_dir: Path) -> None:
        """The refusal names the pid of the process holding the lock."""
        holder = start_holder(state_dir)
        try:
            with pytest.raises(StateLockedError) as info:
                Store.open(state_dir)
            assert f"another aldaemon (pid {holder.pid}) holds" in str(info.value)
        finally:
            stop_process(holder)

    def test_killed_holder_frees_the_lock(self, state_dir: Path) -> None:
        """A holder killed with SIGKILL leaves no stale lock behind."""
        holder = start_holder(state_dir)
        stop_process(holder)
        with Store.open(state_dir) as reopened:
            assert SyncState() == reopened.sync_state(P)

    def test_close_releases_the_lock(self, state_dir: Path) -> None:
        """After close, the state dir can be opened again."""
        Store.open(state_dir).close()
        with Store.open(state_dir) as again:
            assert [] == again.project_ids()

    def test_reader_opens_beside_the_holder(self, sqlite_store: Store, state_dir: Path) -> None:
        """`lock=False` (for `status`) opens while a daemon holds the lock and sees its data."""
        poll(sqlite_store, [task(1, annotation(10))])
        with Store.open(state_dir, lock=False) as reader:
            assert {"pos": 1} == label_counts(reader.annotated_tasks(P))

    def test_unlocked_reader_does_not_block_the_daemon(self, state_dir: Path) -> None:
        """A `lock=False` reader does not take the lock a daemon needs."""
        with Store.open(state_dir, lock=False), Store.open(state_dir) as daemon:
            assert [] == daemon.project_ids()


class TestKnownAnnotations:
    def test_every_requested_task_has_an_entry(self, store: Store) -> None:
        """A task with nothing stored maps to an empty list."""
        assert {5: []} == store.known_annotations(P, [5])

    def test_returns_stored_annotations_of_requested_tasks(self, store: Store) -> None:
        """Only the requested tasks' live annotations are returned."""
        poll(store, [task(1, annotation(10)), task(2, annotation(20, task_id=2))])
        known = store.known_annotations(P, [2])
        assert [20] == [a.id for a in known[2]]

    def test_many_tasks_are_read_in_chunks(self, store: Store) -> None:
        """More task ids than one query can bind are all answered."""
        tasks = [task(n, annotation(n, task_id=n)) for n in range(1, 1201)]
        poll(store, tasks)
        known = store.known_annotations(P, range(1, 1201))
        assert 1200 == sum(len(v) for v in known.values())

    def test_projects_are_kept_apart(self, store: Store) -> None:
        """Annotations of another project are never returned."""
        poll(store, [task(1, annotation(10))])
        assert {1: []} == store.known_annotations(P + 1, [1])


class TestApplyReconcile:
    def test_stored_annotations_match_what_was_read(self, store: Store) -> None:
        """After a reconcile, local state holds every annotation Label Studio returned."""
        poll(store, [task(1, annotation(10), skip(11))])
        known = store.known_annotations(P, [1])
        assert [(10, "pos", False), (11, None, True)] == [
            (a.id, a.label, a.was_cancelled) for a in known[1]
        ]

    def test_unchanged_reread_changes_nothing(self, store: Store) -> None:
        """Reading the same tasks twice counts their labels once."""
        tasks = [task(1, annotation(10)), task(2, annotation(20, task_id=2))]
        poll(store, tasks, now=100.0)
        poll(store, tasks, now=101.0)
        assert 2 == store.sync_state(P).label_changes

    def test_label_changes_accumulate(self, store: Store) -> None:
        """The counter adds each poll's label changes and never goes down."""
        poll(store, [task(1, annotation(10))])
        poll(store, [task(1)], now=101.0)  # the annotation was deleted
        assert 2 == store.sync_state(P).label_changes

    def test_edited_label_replaces_the_old_one(self, store: Store) -> None:
        """An updated annotation's new label is the one used for training."""
        poll(store, [task(1, annotation(10))])
        poll(store, [task(1, annotation(10, label="neg", updated_at=T1), updated_at=T1)])
        assert [TrainingExample(1, "text 1", "neg")] == training_examples(store.annotated_tasks(P))

    def test_deleted_annotation_is_not_used_for_training(self, store: Store) -> None:
        """A deleted annotation is marked deleted and no longer counts as a label."""
        poll(store, [task(1, annotation(10))])
        poll(store, [task(1, updated_at=T1)])
        assert [] == training_examples(store.annotated_tasks(P))

    def test_deleted_annotation_is_no_longer_known(self, store: Store) -> None:
        """A deleted annotation is not part of the diff's known side any more."""
        poll(store, [task(1, annotation(10))])
        poll(store, [task(1, updated_at=T1)])
        assert {1: []} == store.known_annotations(P, [1])

    def test_first_poll_sets_the_watermark(self, store: Store) -> None:
        """The watermark becomes the newest task timestamp, in exact format, moved now."""
        poll(store, [task(1, updated_at=T0), task(2, updated_at="2026-11-27T21:12:00Z")])
        sync = store.sync_state(P)
        assert ("2026-11-27T21:12:00.000000Z", 100.0) == (
            sync.watermark,
            sync.watermark_moved_at,
        )

    def test_overlap_reread_does_not_move_the_watermark(self, store: Store) -> None:
        """Re-reading older tasks leaves watermark and move time as they were."""
        poll(store, [task(2, updated_at=T1)], now=100.0)
        poll(store, [task(1, updated_at=T0)], now=150.0)
        sync = store.sync_state(P)
        assert (T1, 100.0) == (sync.watermark, sync.watermark_moved_at)

    def test_every_poll_records_its_time(self, store: Store) -> None:
        """Even an empty poll records when it happened."""
        poll(store, [task(1)], now=100.0)
        poll(store, [], now=160.0)
        assert 160.0 == store.sync_state(P).last_poll_at

    def test_task_text_is_updated(self, store: Store) -> None:
        """A re-read task's new text replaces the stored one."""
        poll(store, [task(1)])
        poll(store, [task(1, text="edited", updated_at=T1)])
        assert [(1, "edited")] == store.unlabeled_tasks(P)

    def test_failed_apply_changes_nothing(self, store: Store) -> None:
        """A reconcile that fails half-way leaves no trace: tasks and watermark stay put."""
        broken = ReconcileOutcome(
            tasks=(task(1),),
            created=(annotation(10, task_id=99),),
            newest_updated_at=T2,
        )
        with pytest.raises(ConstraintViolation):
            record_poll(store, P, broken, now=1.0)
        assert ([], SyncState()) == (list(store.known_task_ids(P)), store.sync_state(P))


class TestApplyResync:
    def test_missing_task_is_marked_deleted(self, store: Store) -> None:
        """A task the full listing lacks is no longer a known live task."""
        poll(store, [task(1), task(2)])
        resync(store, [1])
        assert [1] == list(store.known_task_ids(P))

    def test_deleted_task_labels_leave_training(self, store: Store) -> None:
        """Labels of a deleted task are no longer used for training."""
        poll(store, [task(1, annotation(10)), task(2, annotation(20, task_id=2))])
        resync(store, [2])
        assert [TrainingExample(2, "text 2", "pos")] == training_examples(store.annotated_tasks(P))

    def test_deleted_task_annotations_are_no_longer_known(self, store: Store) -> None:
        """Annotations of a deleted task are marked deleted too."""
        poll(store, [task(1, annotation(10))])
        resync(store, [])
        assert {1: []} == store.known_annotations(P, [1])

    def test_only_lost_labels_count_as_changes(self, store: Store) -> None:
        """Deleting tasks adds their labeled annotations to the counter, not their skips."""
        poll(store, [task(1, annotation(10), skip(11)), task(2, annotation(20, task_id=2))])
        before = store.sync_state(P).label_changes
        resync(store, [2])
        assert 1 == store.sync_state(P).label_changes - before

    def test_resync_time_is_recorded(self, store: Store) -> None:
        """A resync records when it ran."""
        poll(store, [task(1)])
        resync(store, [1], now=321.0)
        assert 321.0 == store.sync_state(P).last_resync_at

    def test_refused_decision_deletes_nothing(self, store: Store) -> None:
        """A refused (suspiciously empty) listing leaves every task live."""
        poll(store, [task(n) for n in range(1, 7)])
        decision = resync(store, [])
        assert (True, list(range(1, 7))) == (
            decision.refused is not None,
            list(store.known_task_ids(P)),
        )

    def test_refused_decision_still_records_the_attempt(self, store: Store) -> None:
        """A refused listing is retried at the resync interval, not on every poll."""
        poll(store, [task(n) for n in range(1, 7)])
        resync(store, [], now=500.0)
        assert 500.0 == store.sync_state(P).last_resync_at

    def test_reappearing_task_is_live_again(self, store: Store) -> None:
        """A task deleted by a resync and read again later is live, with its labels."""
        poll(store, [task(1, annotation(10))])
        resync(store, [])
        poll(store, [task(1, annotation(10))], now=300.0)
        assert [TrainingExample(1, "text 1", "pos")] == training_examples(store.annotated_tasks(P))


class TestTrainingData:
    def test_label_is_chosen_from_several_annotations(self, store: Store) -> None:
        """A task with several annotations trains with the newest labeled one."""
        poll(
            store,
            [
                task(
                    1,
                    annotation(10, label="pos", updated_at=T0),
                    annotation(11, label="neg", updated_at=T2),
                    skip(12, updated_at="2026-11-27T21:14:00.000000Z"),
                )
            ],
        )
        assert [TrainingExample(1, "text 1", "neg")] == training_examples(store.annotated_tasks(P))

    def test_task_without_text_is_not_an_example(self, store: Store) -> None:
        """Tasks with no or blank text are left out of training."""
        poll(
            store,
            [
                task(1, annotation(10), text=None),
                task(2, annotation(20, task_id=2), text="   "),
                task(3, annotation(30, task_id=3)),
            ],
        )
        assert [3] == [e.task_id for e in training_examples(store.annotated_tasks(P))]

    def test_unlabeled_pool(self, store: Store) -> None:
        """The pool holds live tasks without a non-skip annotation, skipped ones included."""
        poll(
            store,
            [task(3), task(1, annotation(10)), task(2, skip(20, task_id=2)), task(4)],
        )
        resync(store, [1, 2, 3])
        assert [(2, "text 2"), (3, "text 3")] == store.unlabeled_tasks(P)

    def test_label_counts(self, store: Store) -> None:
        """Label counts are the training examples per label."""
        poll(
            store,
            [
                task(1, annotation(10, label="pos")),
                task(2, annotation(20, task_id=2, label="neg")),
                task(3, annotation(30, task_id=3, label="pos")),
                task(4, skip(40, task_id=4)),
            ],
        )
        assert {"pos": 2, "neg": 1} == label_counts(store.annotated_tasks(P))


def add_version(store: Store, number: int, *, state: str | None = None) -> str:
    name = f"aldaemon-v{number}"
    store.create_version(P, name=name, number=number, now=float(number))
    if state is not None:
        set_state(store, name, state)
    return name


def train(
    store: Store, name: str, *, class_counts: dict[str, int], metrics: dict[str, float]
) -> None:
    """Mark a version trained on 5 labels, with these class counts and metrics."""
    store.mark_trained(
        P,
        name,
        trained_at=2.0,
        n_labels=5,
        class_counts=class_counts,
        metrics=metrics,
        train_seconds=0.1,
        artifact_path="model.joblib",
    )


def set_state(store: Store, name: str, state: str) -> None:
    """Put a version in `state` through the store's transition into it."""
    transitions = {
        "scored": lambda: store.mark_scored(P, name, n_predictions=0),
        "uploading": lambda: store.mark_uploading(P, name),
        "uploaded": lambda: store.mark_uploaded(P, name, uploaded_count=0),
        "active": lambda: store.mark_active(P, name, activated_at=1.0),
        "superseded": lambda: store.mark_superseded(P, name),
        "pruned": lambda: store.mark_pruned(P, name, pruned_at=1.0),
        "failed": lambda: store.mark_failed(P, name, error="test"),
    }
    transitions[state]()


class TestVersions:
    def test_first_number_is_one(self, store: Store) -> None:
        """A project without versions starts at number 1."""
        assert 1 == store.next_version_number(P)

    def test_next_number_is_above_every_used_one(self, store: Store) -> None:
        """Numbers of failed and pruned versions are never reused."""
        add_version(store, 1, state="pruned")
        add_version(store, 4, state="failed")
        assert 5 == store.next_version_number(P)

    def test_new_version_is_training(self, store: Store) -> None:
        """A created version starts in state 'training' with its creation time."""
        add_version(store, 1)
        assert VersionRow(name="aldaemon-v1", number=1, state="training", created_at=1.0) == (
            store.get_version(P, "aldaemon-v1")
        )

    def test_duplicate_name_is_refused(self, store: Store) -> None:
        """Creating a version twice raises StateError instead of reusing the name."""
        add_version(store, 1)
        with pytest.raises(StateError, match="aldaemon-v1"):
            store.create_version(P, name="aldaemon-v1", number=2, now=2.0)

    def test_json_fields_round_trip(self, store: Store) -> None:
        """Class counts and metrics come back as the dicts that were stored."""
        name = add_version(store, 1)
        train(store, name, class_counts={"pos": 3, "neg": 2}, metrics={"f1": 0.5})
        version = store.get_version(P, name)
        assert version is not None
        assert ("trained", {"pos": 3, "neg": 2}, {"f1": 0.5}) == (
            version.state,
            version.class_counts,
            version.metrics,
        )

    def test_states_are_stored_as_their_names(self, store: Store) -> None:
        """The state column holds the same strings as before the enum (old files read back)."""
        name = add_version(store, 1, state="failed")
        assert [("failed",)] == raw(store, "SELECT state FROM versions")
        assert VersionState.FAILED is store.get_version(P, name).state  # type: ignore[union-attr]

    def test_missing_version_is_refused(self, store: Store) -> None:
        """Updating a version that does not exist raises LookupError."""
        with pytest.raises(LookupError, match="aldaemon-v9"):
            store.mark_failed(P, "aldaemon-v9", error="test")

    def test_missing_version_reads_as_none(self, store: Store) -> None:
        """Reading an unknown version gives None."""
        assert None is store.get_version(P, "aldaemon-v9")

    def test_versions_are_listed_by_number(self, store: Store) -> None:
        """Versions come back ordered by number, not by creation order."""
        add_version(store, 3)
        add_version(store, 1)
        add_version(store, 2)
        assert [1, 2, 3] == [v.number for v in store.list_versions(P)]

    def test_unfinished_version_is_the_newest_unfinished(self, store: Store) -> None:
        """The version to resume is the newest one between training and uploaded."""
        add_version(store, 1, state="uploading")
        add_version(store, 2, state="scored")
        add_version(store, 3, state="failed")
        unfinished = store.unfinished_version(P)
        assert "aldaemon-v2" == (unfinished.name if unfinished else None)

    def test_no_unfinished_version(self, store: Store) -> None:
        """Finished versions (active, superseded, pruned, failed) are never resumed."""
        for number, state in enumerate(("active", "superseded", "pruned", "failed"), start=1):
            add_version(store, number, state=state)
        assert None is store.unfinished_version(P)


class TestPredictions:
    def test_predictions_come_back_in_position_order(self, store: Store) -> None:
        """Loaded predictions keep the order they were saved in."""
        name = add_version(store, 1)
        saved = [
            PredictionRecord(task_id=5, label="pos", score=0.1, cluster=2),
            PredictionRecord(task_id=2, label="neg", score=0.9),
            PredictionRecord(task_id=9, label="pos", score=0.5),
        ]
        store.save_predictions(P, name, saved)
        assert saved == store.load_predictions(P, name)

    def test_saving_replaces(self, store: Store) -> None:
        """Saving again replaces the version's predictions instead of adding to them."""
        name = add_version(store, 1)
        store.save_predictions(P, name, [PredictionRecord(task_id=1, label="pos", score=0.1)])
        replacement = [PredictionRecord(task_id=2, label="neg", score=0.2)]
        store.save_predictions(P, name, replacement)
        assert replacement == store.load_predictions(P, name)

    def test_two_predictions_for_one_task_are_refused(self, store: Store) -> None:
        """A version never holds two predictions for the same task."""
        name = add_version(store, 1)
        doubled = [
            PredictionRecord(task_id=1, label="pos", score=0.1),
            PredictionRecord(task_id=1, label="neg", score=0.2),
        ]
        with pytest.raises(ValueError, match=r"\[1\]"):
            store.save_predictions(P, name, doubled)

    def test_unknown_version_is_refused(self, store: Store) -> None:
        """Predictions for a version that was never created raise LookupError."""
        with pytest.raises(LookupError, match="aldaemon-v9"):
            store.save_predictions(P, "aldaemon-v9", [])

    def test_dropped_predictions_are_gone(self, store: Store) -> None:
        """Dropping a version's predictions leaves none, and keeps the version row."""
        name = add_version(store, 1)
        store.save_predictions(P, name, [PredictionRecord(task_id=1, label="pos", score=0.1)])
        store.drop_predictions(P, name)
        assert ([], True) == (
            store.load_predictions(P, name),
            store.get_version(P, name) is not None,
        )

    def test_versions_keep_their_own_predictions(self, store: Store) -> None:
        """Each version's predictions are stored separately."""
        first, second = add_version(store, 1), add_version(store, 2)
        store.save_predictions(P, first, [PredictionRecord(task_id=1, label="pos", score=0.1)])
        store.save_predictions(P, second, [PredictionRecord(task_id=1, label="neg", score=0.3)])
        assert ["pos"] == [p.label for p in store.load_predictions(P, first)]


class TestRepublishedVersion:
    def republish(self, store: Store) -> tuple[str, list[PredictionRecord]]:
        """v1 trained on pos/neg; v2 republishes it without 'neg'."""
        source = add_version(store, 1)
        train(store, source, class_counts={"pos": 4, "neg": 4}, metrics={"f1": 0.9})
        withdrawn = [
            PredictionRecord(task_id=3, label="pos", score=0.2),
            PredictionRecord(task_id=4, label="", score=0.1, labels=()),
        ]
        store.create_republished_version(
            P,
            name="aldaemon-v2",
            number=2,
            source=store.require_version(P, source),
            class_counts={"pos": 4},
            predictions=withdrawn,
            now=9.0,
        )
        return "aldaemon-v2", withdrawn

    def test_it_is_scored_with_its_predictions_and_no_training(self, store: Store) -> None:
        """Ready to upload, not a training of its own (the policy counts from v1), with
        the model's facts for `status`."""
        name, withdrawn = self.republish(store)
        row = store.require_version(P, name)
        assert (VersionState.SCORED, None, None, 5, {"pos": 4}, 2, withdrawn) == (
            row.state,
            row.trained_at,
            row.artifact_path,
            row.n_labels,
            row.class_counts,
            row.n_predictions,
            store.load_predictions(P, name),
        )

    def test_a_taken_name_is_refused(self, store: Store) -> None:
        name, withdrawn = self.republish(store)
        with pytest.raises(StateError, match="aldaemon-v2"):
            store.create_republished_version(
                P,
                name=name,
                number=2,
                source=store.require_version(P, "aldaemon-v1"),
                class_counts={},
                predictions=withdrawn,
                now=10.0,
            )


class TestMeta:
    def test_defaults_before_anything_is_set(self, store: Store) -> None:
        """A project without meta reads as all None."""
        assert ProjectMeta() == store.get_meta(P)

    def test_values_round_trip_with_json_decoded(self, store: Store) -> None:
        """Set values come back, JSON columns as the dicts and lists they were."""
        schema = {"text_field": "text", "labels": ["pos", "neg"]}
        store.set_meta(P, view_id=12, schema=schema, failure="boom")
        assert ProjectMeta(failure="boom", view_id=12, schema=schema) == store.get_meta(P)

    def test_partial_update_keeps_other_fields(self, store: Store) -> None:
        """Setting one field leaves the others as they were."""
        store.set_meta(P, view_id=12)
        store.set_meta(P, pinned_version="aldaemon-v2")
        assert (12, "aldaemon-v2") == (store.get_meta(P).view_id, store.get_meta(P).pinned_version)

    def test_none_clears_a_field(self, store: Store) -> None:
        """Setting a field to None clears it."""
        store.set_meta(P, pinned_version="aldaemon-v2")
        store.set_meta(P, pinned_version=None)
        assert None is store.get_meta(P).pinned_version

    def test_unknown_field_is_refused(self, store: Store) -> None:
        """A field that is not project meta raises ValueError."""
        with pytest.raises(ValueError, match="colour"):
            store.set_meta(P, colour="blue")


class TestCycles:
    def test_finishing_updates_the_running_row(self, store: Store) -> None:
        """Recording the same cycle again updates it rather than adding a row."""
        store.record_cycle(
            P, cycle_id="c1", started_at=1.0, finished_at=None, outcome="running", summary={}
        )
        store.record_cycle(
            P, cycle_id="c1", started_at=1.0, finished_at=2.0, outcome="ok", summary={"n": 3}
        )
        assert CycleRow(
            cycle_id="c1", started_at=1.0, finished_at=2.0, outcome="ok", summary={"n": 3}
        ) == store.last_cycle(P)

    def test_last_cycle_is_the_latest_started(self, store: Store) -> None:
        """The last cycle is the one started most recently."""
        for number in (1, 3, 2):
            store.record_cycle(
                P,
                cycle_id=f"c{number}",
                started_at=float(number),
                finished_at=float(number),
                outcome="ok",
                summary={},
            )
        last = store.last_cycle(P)
        assert "c3" == (last.cycle_id if last else None)

    def test_last_finished_cycle_skips_a_running_one(self, store: Store) -> None:
        """With finished_only, a cycle still running is passed over."""
        store.record_cycle(
            P, cycle_id="c1", started_at=1.0, finished_at=2.0, outcome="ok", summary={}
        )
        store.record_cycle(
            P, cycle_id="c2", started_at=3.0, finished_at=None, outcome="running", summary={}
        )
        last = store.last_cycle(P, finished_only=True)
        assert "c1" == (last.cycle_id if last else None)

    def test_no_cycle_yet(self, store: Store) -> None:
        """A project that never ran has no last cycle."""
        assert None is store.last_cycle(P)

    def test_old_cycles_are_pruned(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        """Only the newest cycles are kept, so the table does not grow forever."""
        monkeypatch.setattr(store_module, "CYCLES_KEPT_PER_PROJECT", 3)
        for number in range(1, 6):
            store.record_cycle(
                P,
                cycle_id=f"c{number}",
                started_at=float(number),
                finished_at=float(number),
                outcome="ok",
                summary={},
            )
        rows = raw(store, "SELECT cycle_id FROM cycles ORDER BY started_at")
        assert [("c3",), ("c4",), ("c5",)] == rows


class TestProjects:
    def test_project_ids_lists_every_project_with_state(self, store: Store) -> None:
        """Every project with any stored row is listed, ascending."""
        store.set_meta(9, view_id=1)
        poll(store, [task(1)])
        store.record_cycle(
            3, cycle_id="c", started_at=1.0, finished_at=None, outcome="running", summary={}
        )
        assert [3, P, 9] == store.project_ids()

    def test_wipe_forgets_one_project(self, store: Store) -> None:
        """Wiping forgets a project's tasks and labels, keeps what the daemon created."""
        for project_id in (P, P + 1):
            poll_project = diff([task(1, annotation(10))], {})
            record_poll(store, project_id, poll_project, now=1.0)
            store.create_version(project_id, name="aldaemon-v1", number=1, now=1.0)
            store.save_predictions(
                project_id, "aldaemon-v1", [PredictionRecord(task_id=1, label="pos", score=0.2)]
            )
            store.set_meta(project_id, view_id=4)
        store.set_meta(P, failure="LabelStudioAuthError: 401")
        store.wipe_project(P)
        assert ({}, 1, 4, None) == (
            label_counts(store.annotated_tasks(P)),
            len(store.list_versions(P)),
            store.get_meta(P).view_id,
            store.get_meta(P).failure,
        )
        assert 1 == len(store.known_task_ids(P + 1))
