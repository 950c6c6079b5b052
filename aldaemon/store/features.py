"""The unlabeled pool read in chunks, and the per-task features kept beside it.

The scoring job (model/pool_scoring.py) reads the pool itself, a chunk at a time, in
task id order (keyset paging: `id > last`), so no process ever holds the whole pool; each
chunk is one short read. What the features are and when they are stale is the model's
business (model/features.py); this table only keeps them per (project, task).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from aldaemon.store.database import Tables, chunks, placeholders


class PoolRow(NamedTuple):
    """An unlabeled task, with the features stored for it by `featurizer` (else None)."""

    task_id: int
    text: str | None
    text_digest: str | None
    features: bytes | None


class FeatureRow(NamedTuple):
    task_id: int
    text_digest: str
    features: bytes


# Each chunk is three range reads on a primary key or index, so that PostgreSQL plans
# them alike with or without fresh statistics (one joined query was planned as a sort
# of every task after the cursor, or a scan of every stored feature, until ANALYZE ran:
# BENCHMARKS.md "1,000,000 tasks with the store in PostgreSQL").
_LIVE_TASKS_AFTER = (
    "SELECT id, text FROM tasks WHERE project_id = ? AND id > ? AND id <= ? "
    "AND deleted_at IS NULL ORDER BY id LIMIT ?"
)
_LABELED_BETWEEN = (
    "SELECT DISTINCT task_id FROM annotations WHERE project_id = ? AND task_id >= ? "
    "AND task_id <= ? AND deleted_at IS NULL AND was_cancelled = 0"
)
_FEATURES_BETWEEN = (
    "SELECT task_id, text_digest, features FROM task_features WHERE project_id = ? "
    "AND task_id >= ? AND task_id <= ? AND featurizer = ?"
)


def _pool_row(task_id: int, text: str | None, stored: Sequence[Any] | None) -> PoolRow:
    if stored is None:
        return PoolRow(task_id, text, None, None)
    return PoolRow(task_id, text, stored[1], bytes(stored[2]))


_NO_END = 2**63 - 1  # the largest id either database stores


class FeatureTables(Tables):
    def pool_shards(self, project_id: int, *, shards: int) -> list[tuple[int, int | None]]:
        """(after, until) id ranges splitting the project's live tasks in `shards` parts of
        about equal size, in id order; the last is open-ended (tasks added meanwhile)."""
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        bounds: list[int] = []
        with self._reading() as conn:
            count = int(
                conn.execute(
                    "SELECT COUNT(*) FROM tasks WHERE project_id = ? AND deleted_at IS NULL",
                    (project_id,),
                ).fetchone()[0]
            )
            for part in range(1, shards):
                row = conn.execute(
                    "SELECT id FROM tasks WHERE project_id = ? AND deleted_at IS NULL "
                    "ORDER BY id LIMIT 1 OFFSET ?",
                    (project_id, part * count // shards),
                ).fetchone()
                if row is not None and (not bounds or int(row[0]) > bounds[-1]):
                    bounds.append(int(row[0]))
        starts = [0, *bounds]
        ends: list[int | None] = [*bounds, None]
        return list(zip(starts, ends, strict=True))

    def unlabeled_chunk(
        self,
        project_id: int,
        *,
        after: int,
        limit: int,
        featurizer: str | None,
        until: int | None = None,
    ) -> list[PoolRow]:
        """Up to `limit` pool tasks with after < id <= until, by id (the pool of
        `unlabeled_tasks`), each with the features `featurizer` stored for it, if any."""
        last = _NO_END if until is None else until
        found: list[PoolRow] = []
        with self._reading() as conn:
            while len(found) < limit:
                tasks = conn.execute(
                    _LIVE_TASKS_AFTER, (project_id, after, last, limit - len(found))
                ).fetchall()
                if not tasks:
                    break
                first, after = tasks[0][0], tasks[-1][0]
                labeled = {
                    row[0] for row in conn.execute(_LABELED_BETWEEN, (project_id, first, after))
                }
                stored = {
                    row[0]: row
                    for row in conn.execute(
                        _FEATURES_BETWEEN, (project_id, first, after, featurizer or "")
                    )
                }
                found.extend(
                    _pool_row(task_id, text, stored.get(task_id))
                    for task_id, text in tasks
                    if task_id not in labeled
                )
        return found

    def refresh_pool_statistics(self) -> list[str]:
        """Before a pool scoring: have the planner's statistics of the tables the pool is
        read from brought up to date where missing or stale (PostgreSQL only); the tables
        refreshed."""
        return self._database.refresh_statistics(("annotations", "task_features", "tasks"))

    def scorable_unlabeled_ids(self, project_id: int) -> list[int]:
        """The ids of the pool's tasks that have a text to score, by id."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT t.id FROM tasks t WHERE t.project_id = ? AND t.deleted_at IS NULL "
                "AND t.text IS NOT NULL AND TRIM(t.text) != '' AND NOT EXISTS ("
                "SELECT 1 FROM annotations a WHERE a.project_id = t.project_id "
                "AND a.task_id = t.id AND a.deleted_at IS NULL AND a.was_cancelled = 0) "
                "ORDER BY t.id",
                (project_id,),
            ).fetchall()
        return [int(row[0]) for row in rows]

    def task_texts(self, project_id: int, task_ids: Sequence[int]) -> dict[int, str | None]:
        """The texts of these tasks where they are live (deleted ones are left out)."""
        texts: dict[int, str | None] = {}
        with self._reading() as conn:
            for ids in chunks(task_ids):
                rows = conn.execute(
                    f"SELECT id, text FROM tasks WHERE project_id = ? AND deleted_at IS NULL "
                    f"AND id IN ({placeholders(len(ids))})",
                    (project_id, *ids),
                ).fetchall()
                texts.update((int(task_id), text) for task_id, text in rows)
        return texts

    def save_task_features(
        self, project_id: int, *, featurizer: str, rows: Sequence[FeatureRow]
    ) -> None:
        """Keep (or replace) these tasks' features; not durable: they can be recomputed."""
        if not rows:
            return
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO task_features "
                "(project_id, task_id, featurizer, text_digest, features) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (project_id, task_id) DO UPDATE SET "
                "featurizer = excluded.featurizer, text_digest = excluded.text_digest, "
                "features = excluded.features",
                [(project_id, r.task_id, featurizer, r.text_digest, r.features) for r in rows],
            )

    def feature_digests(self, project_id: int) -> dict[int, tuple[str, str]]:
        """(featurizer, text_digest) per task with stored features (status, tests)."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT task_id, featurizer, text_digest FROM task_features WHERE project_id = ?",
                (project_id,),
            ).fetchall()
        return {int(task_id): (str(f), str(d)) for task_id, f, d in rows}
