"""Multi-label state: migration 3 keeps single-choice state, label sets round-trip."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from aldaemon.records import AnnotationRecord, LabelingSchema, PredictionRecord, TaskRecord
from aldaemon.store import DB_FILENAME, MIGRATIONS, Store, migrate_file
from aldaemon.sync.label_sets import cold_start_counts
from aldaemon.sync.reconcile import diff
from aldaemon.sync.versions import training_examples
from aldaemon.sync.watermark import Watermark

T0 = "2024-01-01T00:00:00.000000Z"
MULTI = LabelingSchema(
    text_field="text", from_name="topic", to_name="text", labels=("a", "b", "c"), multiple=True
)


def test_migration_3_turns_each_single_label_into_a_one_element_set(tmp_path: Path) -> None:
    """A state file of schema 2 (single choice) keeps its labels, versions and predictions."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    conn = sqlite3.connect(state_dir / DB_FILENAME, isolation_level=None)
    migrate_file(conn, db_path=state_dir / DB_FILENAME, migrations=MIGRATIONS[:2], now=1.0)
    conn.execute("INSERT INTO tasks VALUES (1, 10, 'good food', ?, NULL)", (T0,))
    conn.execute("INSERT INTO tasks VALUES (1, 11, 'bad food', ?, NULL)", (T0,))
    conn.execute("INSERT INTO annotations VALUES (1, 100, 10, 'pos', 0, ?, NULL, NULL)", (T0,))
    conn.execute("INSERT INTO annotations VALUES (1, 101, 11, NULL, 1, ?, NULL, NULL)", (T0,))
    conn.execute(
        "INSERT INTO versions (project_id, name, number, state, created_at) "
        "VALUES (1, 'v1', 1, 'scored', 1.0)"
    )
    conn.execute("INSERT INTO predictions VALUES (1, 'v1', 11, 0, 'neg', 0.25, NULL)")
    conn.close()

    with Store.open(state_dir) as store:
        tasks = store.annotated_tasks(1)
        assert [(10, "pos", ("pos",))] == [
            (e.task_id, e.label, e.labels) for e in training_examples(tasks)
        ]
        assert [PredictionRecord(task_id=11, label="neg", score=0.25)] == (
            store.load_predictions(1, "v1")
        )
        assert [11] == [task_id for task_id, _ in store.unlabeled_tasks(1)]  # the skip
        assert ["v1"] == [v.name for v in store.list_versions(1)]


def test_label_sets_round_trip_and_an_empty_set_is_an_answer(any_store: Store) -> None:
    """Two labels, none ("none of these") and a skip: only the skip trains nothing."""
    annotations = [
        AnnotationRecord(1, 1, "a", False, T0, labels=("a", "b")),
        AnnotationRecord(2, 2, None, False, T0, labels=()),
        AnnotationRecord(3, 3, None, True, T0),
    ]
    tasks = [
        TaskRecord(id=i, updated_at=T0, text=f"text {i}", annotations=(annotations[i - 1],))
        for i in (1, 2, 3)
    ]
    store = any_store
    outcome = diff(tasks, store.known_annotations(1, [1, 2, 3]))
    assert 2 == outcome.label_changes
    store.apply_reconcile(1, outcome, watermark=Watermark(value=T0, moved_at=1.0), now=1.0)
    examples = training_examples(store.annotated_tasks(1))
    assert [(1, ("a", "b")), (2, ())] == [(e.task_id, e.labels) for e in examples]
    # min_per_class holds against min(positives, negatives) per label
    assert {"a": 1, "b": 1, "c": 0} == cold_start_counts(store.annotated_tasks(1), MULTI)
    # re-reading the same state is no change; dropping a label from a set is one
    assert 0 == diff(tasks, store.known_annotations(1, [1, 2, 3])).label_changes
    edited = AnnotationRecord(1, 1, "a", False, T0, labels=("a",))
    changed = [TaskRecord(id=1, updated_at=T0, text="text 1", annotations=(edited,))]
    assert 1 == diff(changed, store.known_annotations(1, [1])).label_changes
