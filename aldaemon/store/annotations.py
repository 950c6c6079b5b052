"""Tasks, annotations and sync state: what polls and resyncs read from Label Studio."""

from __future__ import annotations

from array import array
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass

from aldaemon.records import AnnotationRecord
from aldaemon.store.database import Connection, Tables, chunks, placeholders
from aldaemon.store.encoding import decode_labels, encode_labels
from aldaemon.sync.labels import StoredAnnotation
from aldaemon.sync.reconcile import DeletionDecision, ReconcileOutcome
from aldaemon.sync.versions import AnnotatedTask
from aldaemon.sync.watermark import Watermark


@dataclass(frozen=True)
class SyncState:
    """Where polling stands for one project; all None/0 before the first poll."""

    watermark: str | None = None
    watermark_moved_at: float | None = None
    last_resync_at: float | None = None
    label_changes: int = 0  # monotonic: the policy subtracts the value at the last training
    last_poll_at: float | None = None

    @property
    def current_watermark(self) -> Watermark:
        return Watermark(value=self.watermark, moved_at=self.watermark_moved_at)


class AnnotationTables(Tables):
    """The `tasks`, `annotations` and `sync` tables."""

    @staticmethod
    def _ensure_sync_row(conn: Connection, project_id: int) -> None:
        conn.execute(
            "INSERT INTO sync (project_id) VALUES (?) ON CONFLICT (project_id) DO NOTHING",
            (project_id,),
        )

    # --- sync and reconcile -------------------------------------------------------------

    def sync_state(self, project_id: int) -> SyncState:
        """Where polling stands for the project (defaults before the first poll)."""
        with self._reading() as conn:
            row = conn.execute(
                "SELECT watermark, watermark_moved_at, last_resync_at, label_changes, "
                "last_poll_at FROM sync WHERE project_id = ?",
                (project_id,),
            ).fetchone()
        if row is None:
            return SyncState()
        return SyncState(
            watermark=row[0],
            watermark_moved_at=row[1],
            last_resync_at=row[2],
            label_changes=int(row[3]),
            last_poll_at=row[4],
        )

    def known_annotations(
        self, project_id: int, task_ids: Collection[int]
    ) -> dict[int, list[StoredAnnotation]]:
        """Live annotations of the given tasks: the `known` side of `reconcile.diff`.

        Every requested task id is a key, with an empty list when nothing is stored.
        """
        ids = sorted(set(task_ids))
        known: dict[int, list[StoredAnnotation]] = {task_id: [] for task_id in ids}
        with self._reading() as conn:
            for chunk in chunks(ids):
                rows = conn.execute(
                    "SELECT id, task_id, label, was_cancelled, updated_at, labels, ground_truth "
                    "FROM annotations "
                    f"WHERE project_id = ? AND deleted_at IS NULL "
                    f"AND task_id IN ({placeholders(len(chunk))}) ORDER BY id",
                    (project_id, *chunk),
                ).fetchall()
                for row in rows:
                    known[row[1]].append(
                        StoredAnnotation(
                            id=row[0],
                            task_id=row[1],
                            label=row[2],
                            was_cancelled=bool(row[3]),
                            updated_at=row[4],
                            deleted=False,
                            labels=decode_labels(row[5]),
                            ground_truth=bool(row[6]),
                        )
                    )
        return known

    def apply_reconcile(
        self, project_id: int, outcome: ReconcileOutcome, *, watermark: Watermark, now: float
    ) -> None:
        """Store one poll's outcome and the caller's new watermark, all in ONE transaction.

        The watermark moves only together with the changes it vouches for: a crash before
        the commit leaves both where they were, and the next poll reads the same tasks.
        """
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO tasks (project_id, id, text, updated_at, deleted_at) "
                "VALUES (?, ?, ?, ?, NULL) ON CONFLICT (project_id, id) DO UPDATE SET "
                "text = excluded.text, updated_at = excluded.updated_at, deleted_at = NULL",
                [(project_id, t.id, t.text, t.updated_at) for t in outcome.tasks],
            )
            conn.executemany(
                "INSERT INTO annotations (project_id, id, task_id, label, was_cancelled, "
                "updated_at, completed_by, labels, ground_truth, deleted_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL) "
                "ON CONFLICT (project_id, id) DO UPDATE SET task_id = excluded.task_id, "
                "label = excluded.label, labels = excluded.labels, "
                "was_cancelled = excluded.was_cancelled, "
                "updated_at = excluded.updated_at, completed_by = excluded.completed_by, "
                "ground_truth = excluded.ground_truth, deleted_at = NULL",
                [_annotation_row(project_id, a) for a in (*outcome.created, *outcome.updated)],
            )
            conn.executemany(
                "UPDATE annotations SET deleted_at = ? "
                "WHERE project_id = ? AND id = ? AND deleted_at IS NULL",
                [(now, project_id, annotation_id) for annotation_id in outcome.deleted],
            )
            self._ensure_sync_row(conn, project_id)
            conn.execute(
                "UPDATE sync SET label_changes = label_changes + ?, watermark = ?, "
                "watermark_moved_at = ?, last_poll_at = ? WHERE project_id = ?",
                (outcome.label_changes, watermark.value, watermark.moved_at, now, project_id),
            )

    def known_task_ids(self, project_id: int) -> array[int]:
        """Ids of the tasks local state holds as live, ascending (the resync compares them),
        packed 8 bytes an id and read row by row: no list of a million rows at once."""
        with self._reading() as conn:
            cursor = conn.execute(
                "SELECT id FROM tasks WHERE project_id = ? AND deleted_at IS NULL ORDER BY id",
                (project_id,),
            )
            return array("q", (int(row[0]) for row in cursor))

    def live_task_count(self, project_id: int) -> int:
        """How many tasks local state holds as live (compared with Label Studio's count)."""
        with self._reading() as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM tasks WHERE project_id = ? AND deleted_at IS NULL",
                (project_id,),
            ).fetchone()
        return int(row[0])

    def apply_resync(self, project_id: int, decision: DeletionDecision, *, now: float) -> None:
        """Mark tasks a full listing no longer shows as deleted, with their annotations.

        A refused decision deletes nothing but still records the attempt, so a suspicious
        empty listing is retried at the resync interval rather than on every poll.
        """
        ids = sorted(decision.deleted_task_ids)
        with self._transaction() as conn:
            lost_labels = 0
            for chunk in chunks(ids):
                marks = placeholders(len(chunk))
                lost_labels += conn.execute(
                    "SELECT COUNT(*) FROM annotations WHERE project_id = ? AND deleted_at IS NULL "
                    f"AND was_cancelled = 0 AND labels IS NOT NULL AND task_id IN ({marks})",
                    (project_id, *chunk),
                ).fetchone()[0]
                conn.execute(
                    "UPDATE annotations SET deleted_at = ? WHERE project_id = ? "
                    f"AND deleted_at IS NULL AND task_id IN ({marks})",
                    (now, project_id, *chunk),
                )
                conn.execute(
                    "UPDATE tasks SET deleted_at = ? WHERE project_id = ? "
                    f"AND deleted_at IS NULL AND id IN ({marks})",
                    (now, project_id, *chunk),
                )
            self._ensure_sync_row(conn, project_id)
            conn.execute(
                "UPDATE sync SET label_changes = label_changes + ?, last_resync_at = ? "
                "WHERE project_id = ?",
                (lost_labels, now, project_id),
            )

    # --- training data ------------------------------------------------------------------

    def annotated_tasks(self, project_id: int) -> list[AnnotatedTask]:
        """Every live task with text and its live, non-skip, labeled annotations, by id.

        Which annotation's label trains is the caller's rule (`training_examples`). Tasks
        with no or blank text are left out: the scorer skips them too, and a blank text
        teaches the model nothing.
        """
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT t.id, t.text, a.id, a.label, a.was_cancelled, a.updated_at, a.labels, "
                "a.ground_truth, a.completed_by "
                "FROM tasks t JOIN annotations a "
                "ON a.project_id = t.project_id AND a.task_id = t.id "
                "WHERE t.project_id = ? AND t.deleted_at IS NULL AND a.deleted_at IS NULL "
                "AND a.was_cancelled = 0 AND a.labels IS NOT NULL "
                "AND t.text IS NOT NULL AND TRIM(t.text) != '' ORDER BY t.id",
                (project_id,),
            ).fetchall()
        texts: dict[int, str] = {}
        annotations: defaultdict[int, list[StoredAnnotation]] = defaultdict(list)
        for row in rows:
            task_id, text, annotation_id, label, was_cancelled, updated_at, labels = row[:7]
            texts[task_id] = text
            annotations[task_id].append(
                StoredAnnotation(
                    id=annotation_id,
                    task_id=task_id,
                    label=label,
                    was_cancelled=bool(was_cancelled),
                    updated_at=updated_at,
                    labels=decode_labels(labels),
                    ground_truth=bool(row[7]),
                    completed_by=row[8],
                )
            )
        return [
            AnnotatedTask(task_id=task_id, text=text, annotations=tuple(annotations[task_id]))
            for task_id, text in texts.items()
        ]

    def unlabeled_tasks(self, project_id: int) -> list[tuple[int, str | None]]:
        """(task_id, text) of live tasks with no live non-skip annotation, by id: the pool.

        A task that was only skipped stays in the pool: a skip says nothing about its label.
        """
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT t.id, t.text FROM tasks t WHERE t.project_id = ? "
                "AND t.deleted_at IS NULL AND NOT EXISTS (SELECT 1 FROM annotations a "
                "WHERE a.project_id = t.project_id AND a.task_id = t.id "
                "AND a.deleted_at IS NULL AND a.was_cancelled = 0) ORDER BY t.id",
                (project_id,),
            ).fetchall()
        return [(int(row[0]), row[1]) for row in rows]

    def label_timeline(self, project_id: int) -> list[tuple[str, str]]:
        """(updated_at, label) of every live, non-skip, labeled annotation on a live task,
        oldest first: the labels-over-time plot of `aldaemon report`.

        `updated_at` is Label Studio's timestamp of the annotation's last change, so an
        edited annotation counts from its edit; a deleted one does not count at all.
        """
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT a.updated_at, a.label FROM annotations a JOIN tasks t "
                "ON t.project_id = a.project_id AND t.id = a.task_id "
                "WHERE a.project_id = ? AND a.deleted_at IS NULL AND t.deleted_at IS NULL "
                "AND a.was_cancelled = 0 AND a.label IS NOT NULL "
                "ORDER BY a.updated_at, a.id",
                (project_id,),
            ).fetchall()
        return [(str(row[0]), str(row[1])) for row in rows]


def _annotation_row(
    project_id: int, annotation: AnnotationRecord
) -> tuple[int, int, int, str | None, int, str, int | None, str | None, int]:
    return (
        project_id,
        annotation.id,
        annotation.task_id,
        annotation.label,
        int(annotation.was_cancelled),
        annotation.updated_at,
        annotation.completed_by,
        encode_labels(annotation.labels),
        int(annotation.ground_truth),
    )
