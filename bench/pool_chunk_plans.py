"""The pool's chunk read on PostgreSQL with stale, half-fresh and fresh planner statistics,
and after the store's own refresh of them.

    python -m bench.pool_chunk_plans [--tasks 1000000] [--repetitions 3] [--cap 60] [--name NAME]

The scoring job reads the unlabeled pool a chunk of 4,096 tasks at a time
(`Store.unlabeled_chunk`). Until 7cc7fd3 a chunk was one joined query (tasks LEFT JOIN
task_features, NOT EXISTS over annotations, ORDER BY id LIMIT), whose plan depended on
fresh statistics (BENCHMARKS.md "1,000,000 tasks with the store in PostgreSQL": 2,065 ms
a chunk never analyzed, 24 ms analyzed, 45 s when ANALYZE ran before task_features
filled). Since then it is three range reads on keys, looped until `limit` rows are found.

One project of `--tasks` tasks (~200-character texts, every 50th labeled), stored as a
first poll stores them (`record_poll`, 50,000 tasks a transaction), in a fresh database;
a copy of that database is made at once (CREATE DATABASE ... TEMPLATE, byte for byte,
statistics included). Features (200 bytes, featurizer "bench") are then stored for the
first half of the tasks, as a first scoring leaves them half way, and the chunk is read in
four statistics states:
  never_analyzed            the copy: no ANALYZE ever (autovacuum is off on this machine)
  never_analyzed_refreshed  the same copy right after, once `store.refresh_pool_statistics()`
                            ran as the cycle runs it before a pool scoring (5f2125a); its
                            wall seconds and the tables it returned are kept, and so are
                            those of a second call right after it, before the reads
                            (pg_stat is flushed asynchronously, so it may analyze again),
                            and of a third after the reads
  analyzed_before_features  ANALYZE after the tasks, before the features were stored
  analyzed                  ANALYZE again after everything
At cursors after = 0, 25%, 50% and 75% of the ids (features exist for the first two),
`--repetitions` times each, alternating, both reads are timed through the store's own
read transaction: `old`, the joined query of 7cc7fd3^ (copied verbatim below as the
reference) and `new`, `store.unlabeled_chunk`. Each read is capped by PostgreSQL's
statement_timeout (`--cap`, 60 s) and reported as cancelled past it. Both must return the
same rows (task id, text, digest, features); the run stops if they do not. The EXPLAIN
(no ANALYZE) plan of the old query and of each of the three new reads is kept per state
and cursor. The databases are dropped at the end, also on error.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import psycopg

from aldaemon.errors import StateError
from aldaemon.loop.poll import record_poll
from aldaemon.records import AnnotationRecord, TaskRecord
from aldaemon.secret import Secret
from aldaemon.store import Store
from aldaemon.store.features import (
    _FEATURES_BETWEEN,
    _LABELED_BETWEEN,
    _LIVE_TASKS_AFTER,
    FeatureRow,
    PoolRow,
)
from aldaemon.sync.reconcile import diff
from bench import common
from bench.store_backends import drop_postgres, fresh_postgres, postgres_version

NAME = "pool_chunk_plans"
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
T0 = "2026-11-29T00:00:00.000000Z"
P = 1
LIMIT = 4096
FEATURIZER = "bench"
BATCH = 50_000
LABEL_EVERY = 50
NO_END = 2**63 - 1  # as the store's unlabeled_chunk reads to when `until` is None
STATES = ("never_analyzed", "never_analyzed_refreshed", "analyzed_before_features", "analyzed")
POOL_TABLES = ("annotations", "task_features", "tasks")  # what refresh_pool_statistics checks

# The chunk query before 7cc7fd3, verbatim (git show 7cc7fd3^:aldaemon/store/features.py).
_POOL_CHUNK = (
    "SELECT t.id, t.text, f.text_digest, f.features FROM tasks t "
    "LEFT JOIN task_features f ON f.project_id = t.project_id AND f.task_id = t.id "
    "AND f.featurizer = ? "
    "WHERE t.project_id = ? AND t.id > ? AND t.id <= ? AND t.deleted_at IS NULL AND NOT EXISTS ("
    "SELECT 1 FROM annotations a WHERE a.project_id = t.project_id AND a.task_id = t.id "
    "AND a.deleted_at IS NULL AND a.was_cancelled = 0) "
    "ORDER BY t.id LIMIT ?"
)


def text_of(n: int) -> str:
    return f"review {n}: the food was {'great' if n % 2 else 'awful'} and so was the rest " * 3


def tasks_between(start: int, stop: int) -> list[TaskRecord]:
    """Tasks start..stop-1; every LABEL_EVERY-th has one annotation."""
    return [
        TaskRecord(
            id=n,
            updated_at=T0,
            text=text_of(n),
            annotations=(
                (AnnotationRecord(n, n, "pos" if n % 2 else "neg", False, T0, completed_by=1),)
                if n % LABEL_EVERY == 0
                else ()
            ),
        )
        for n in range(start, stop)
    ]


def fill_tasks(store: Store, size: int) -> None:
    """The project's tasks as a first poll stores them, BATCH a transaction."""
    for start in range(1, size + 1, BATCH):
        tasks = tasks_between(start, min(start + BATCH, size + 1))
        record_poll(store, P, diff(tasks, {}), now=1.0)


def feature_row(n: int) -> FeatureRow:
    digest = hashlib.blake2b(text_of(n).encode(), digest_size=16).hexdigest()
    return FeatureRow(n, digest, n.to_bytes(8, "little") * 25)  # 200 bytes


def fill_features(store: Store, size: int) -> None:
    """Features for the first half of the tasks (labeled ones too: the table is per task)."""
    half = size // 2
    for start in range(1, half + 1, BATCH):
        rows = [feature_row(n) for n in range(start, min(start + BATCH, half + 1))]
        store.save_task_features(P, featurizer=FEATURIZER, rows=rows)


def old_chunk(store: Store, after: int, limit: int = LIMIT) -> list[PoolRow]:
    """The chunk as 7cc7fd3^'s `unlabeled_chunk` read it: one joined query."""
    with store._reading() as conn:
        rows = conn.execute(_POOL_CHUNK, (FEATURIZER, P, after, NO_END, limit)).fetchall()
    return [
        PoolRow(int(task_id), text, digest, None if features is None else bytes(features))
        for task_id, text, digest, features in rows
    ]


def new_chunk(store: Store, after: int, limit: int = LIMIT) -> list[PoolRow]:
    return store.unlabeled_chunk(P, after=after, limit=limit, featurizer=FEATURIZER)


def cursors(size: int) -> list[int]:
    return [0, size // 4, size // 2, 3 * size // 4]


def timed(
    read: Callable[[Store, int], list[PoolRow]], store: Store, after: int
) -> tuple[float | None, list[PoolRow] | None]:
    """(seconds, rows), or (None, None) when PostgreSQL cancelled it at statement_timeout."""
    started = time.perf_counter()
    try:
        rows = read(store, after)
    except StateError as exc:
        if "statement timeout" not in str(exc):
            raise
        return None, None
    return time.perf_counter() - started, rows


def plans(store: Store, after: int) -> dict[str, list[str]]:
    """EXPLAIN (no ANALYZE) of the old query and of the new reads' first round at `after`."""
    explained: dict[str, list[str]] = {}
    with store._reading() as conn:

        def explain(sql: str, parameters: Sequence[Any]) -> list[str]:
            return [str(row[0]) for row in conn.execute("EXPLAIN " + sql, parameters)]

        explained["old"] = explain(_POOL_CHUNK, (FEATURIZER, P, after, NO_END, LIMIT))
        explained["new_live_tasks"] = explain(_LIVE_TASKS_AFTER, (P, after, NO_END, LIMIT))
        ids = [
            int(row[0])
            for row in conn.execute(_LIVE_TASKS_AFTER, (P, after, NO_END, LIMIT)).fetchall()
        ]
        first, last = (ids[0], ids[-1]) if ids else (after, after)
        explained["new_labeled"] = explain(_LABELED_BETWEEN, (P, first, last))
        explained["new_features"] = explain(_FEATURES_BETWEEN, (P, first, last, FEATURIZER))
    return explained


def measure(store: Store, size: int, repetitions: int) -> dict[str, Any]:
    """Old and new chunk reads at each cursor, alternating which goes first."""
    seconds: dict[str, dict[int, list[float | None]]] = {
        "old": {a: [] for a in cursors(size)},
        "new": {a: [] for a in cursors(size)},
    }
    rows_per_chunk: dict[int, int] = {}
    for repetition in range(repetitions):
        for after in cursors(size):
            order = ("old", "new") if repetition % 2 == 0 else ("new", "old")
            got: dict[str, list[PoolRow] | None] = {}
            for which in order:
                read = old_chunk if which == "old" else new_chunk
                elapsed, got[which] = timed(read, store, after)
                seconds[which][after].append(elapsed)
                shown = "cancelled" if elapsed is None else f"{elapsed * 1000:9.1f} ms"
                print(f"  after={after:<8} {which} {shown}", flush=True)
            old, new = got["old"], got["new"]
            if old is not None and new is not None and old != new:
                raise SystemExit(f"old and new chunks differ after id {after}")
            if new is not None:
                rows_per_chunk[after] = len(new)
    return {
        "seconds": {w: {str(a): s for a, s in by.items()} for w, by in seconds.items()},
        "rows_per_chunk": {str(a): n for a, n in rows_per_chunk.items()},
        "plans": {str(a): plans(store, a) for a in cursors(size)},
    }


def summary(measured: dict[str, Any], cap: float) -> dict[str, Any]:
    """Median ms per chunk over every cursor and repetition; a cancelled read counts as
    the cap (so a median that lands on one is shown as '> cap')."""
    out: dict[str, Any] = {}
    for which in ("old", "new"):
        values = [s for per in measured["seconds"][which].values() for s in per]
        cancelled = sum(1 for s in values if s is None)
        filled = [cap if s is None else s for s in values]
        per_cursor = {
            a: common.rounded(common.median([cap if s is None else s for s in per]) * 1000, 1)
            for a, per in measured["seconds"][which].items()
        }
        out[which] = {
            "median_ms": common.rounded(common.median(filled) * 1000, 1),
            "max_ms": common.rounded(max(filled) * 1000, 1),
            "cancelled": cancelled,
            "reads": len(values),
            "median_ms_per_cursor": per_cursor,
        }
    out["ratio_new_to_old"] = common.rounded(out["new"]["median_ms"] / out["old"]["median_ms"], 4)
    return out


def analyze(dsn: Secret) -> None:
    with psycopg.connect(dsn.reveal(), autocommit=True) as conn:
        conn.execute("ANALYZE")


def clone(admin_dsn: str, source: str, name: str) -> Secret:
    """A byte-for-byte copy of database `source` (statistics included, so none)."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
    return Secret(admin_dsn.rsplit("/", 1)[0] + f"/{name}")


def capped(dsn: Secret, cap: float) -> Secret:
    """The DSN with every statement of its sessions cancelled after `cap` seconds."""
    options = quote(f"-c statement_timeout={int(cap * 1000)}")
    return Secret(f"{dsn.reveal()}?options={options}")


def run_state(state: str, dsn: Secret, size: int, repetitions: int, cap: float) -> dict[str, Any]:
    print(f"{state}:", flush=True)
    with Store.connect(capped(dsn, cap), lock=False) as store:
        measured = measure(store, size, repetitions)
    measured["summary"] = summary(measured, cap)
    measured["pg_class"] = planner_sizes(dsn)
    return measured


def planner_sizes(dsn: Secret) -> dict[str, dict[str, float]]:
    """What the planner takes the tables' sizes to be (reltuples -1: never analyzed)."""
    with psycopg.connect(dsn.reveal(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT c.relname, c.reltuples, c.relpages, pg_relation_size(c.oid) / 8192 "
            "FROM pg_class c WHERE c.relname IN ('tasks', 'annotations', 'task_features', "
            "'tasks_pkey', 'annotations_by_task', 'task_features_pkey') ORDER BY c.relname"
        ).fetchall()
    return {
        str(name): {"reltuples": float(tuples), "relpages": int(pages), "pages": int(actual)}
        for name, tuples, pages, actual in rows
    }


def statistics_counters(dsn: Secret) -> dict[str, dict[str, Any]]:
    """What refresh_statistics decides on (reltuples, n_mod_since_analyze) and when the
    pool's tables were last analyzed, as this session sees them."""
    with psycopg.connect(dsn.reveal(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT c.relname, c.reltuples, s.n_mod_since_analyze, s.analyze_count, "
            "s.last_analyze::text FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid "
            "WHERE c.relname = ANY(%s) ORDER BY c.relname",
            (list(POOL_TABLES),),
        ).fetchall()
    return {
        str(name): {
            "reltuples": float(tuples),
            "n_mod_since_analyze": int(modified),
            "analyze_count": int(count),
            "last_analyze": last,
        }
        for name, tuples, modified, count, last in rows
    }


def refresh_calls(dsn: Secret, calls: int) -> list[tuple[float, list[str]]]:
    """`store.refresh_pool_statistics()` called `calls` times back to back on one store,
    as the cycle calls it before each pool scoring (an uncapped store, as the daemon's);
    (wall seconds, the tables it analyzed) per call."""
    out: list[tuple[float, list[str]]] = []
    with Store.connect(dsn, lock=False) as store:
        for _ in range(calls):
            started = time.perf_counter()
            tables = store.refresh_pool_statistics()
            out.append((time.perf_counter() - started, tables))
    return out


def run_refreshed(dsn: Secret, size: int, repetitions: int, cap: float) -> dict[str, Any]:
    """The never-analyzed copy after the store's own refresh: a first call, a second one
    right after it, the reads, then one more call (what the next cycle would see)."""
    before = statistics_counters(dsn)
    (first_s, first), (second_s, second) = refresh_calls(dsn, 2)
    print(f"refresh_pool_statistics: {first_s:.3f} s, analyzed {first}", flush=True)
    print(f"  called again at once: {second_s:.3f} s, analyzed {second}", flush=True)
    after_calls = statistics_counters(dsn)
    measured = run_state("never_analyzed_refreshed", dsn, size, repetitions, cap)
    [(later_s, later)] = refresh_calls(dsn, 1)
    print(f"  called after the reads: {later_s:.3f} s, analyzed {later}", flush=True)
    measured["refresh"] = {
        "seconds": common.rounded(first_s, 3),
        "tables": first,
        "second_call": {"seconds": common.rounded(second_s, 3), "tables": second},
        "call_after_the_reads": {"seconds": common.rounded(later_s, 3), "tables": later},
        "counters_before": before,
        "counters_after_two_calls": after_calls,
        "counters_after_the_reads_call": statistics_counters(dsn),
    }
    return measured


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pool_chunk_plans", description=__doc__)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument(
        "--cap", type=float, default=60.0, help="seconds before a read is cancelled"
    )
    parser.add_argument("--dsn", default=ADMIN_DSN, help="a database to create others from")
    parser.add_argument("--name", default=NAME, help="bench/results/<name>.json")
    args = parser.parse_args(argv)
    stamp = int(time.time())
    base, copy = f"aldaemon_bench_plans_{stamp}", f"aldaemon_bench_plans_{stamp}_raw"
    states: dict[str, Any] = {}
    timings: dict[str, float] = {}
    try:
        dsn = fresh_postgres(args.dsn, base)
        started = time.perf_counter()
        with Store.connect(dsn) as store:
            fill_tasks(store, args.tasks)
        timings["fill_tasks_s"] = time.perf_counter() - started
        print(f"filled {args.tasks} tasks in {timings['fill_tasks_s']:.0f} s", flush=True)
        raw = clone(args.dsn, base, copy)

        started = time.perf_counter()
        with Store.connect(raw) as store:
            fill_features(store, args.tasks)
        timings["fill_features_s"] = time.perf_counter() - started
        states["never_analyzed"] = run_state(
            "never_analyzed", raw, args.tasks, args.repetitions, args.cap
        )
        states["never_analyzed_refreshed"] = run_refreshed(
            raw, args.tasks, args.repetitions, args.cap
        )
        drop_postgres(args.dsn, copy)

        analyze(dsn)
        with Store.connect(dsn) as store:
            fill_features(store, args.tasks)
        states["analyzed_before_features"] = run_state(
            "analyzed_before_features", dsn, args.tasks, args.repetitions, args.cap
        )
        started = time.perf_counter()
        analyze(dsn)
        timings["analyze_s"] = time.perf_counter() - started
        states["analyzed"] = run_state("analyzed", dsn, args.tasks, args.repetitions, args.cap)
    finally:
        drop_postgres(args.dsn, copy)
        drop_postgres(args.dsn, base)
    payload: dict[str, Any] = {
        "tasks": args.tasks,
        "labeled_every": LABEL_EVERY,
        "features_stored_for": f"tasks 1..{args.tasks // 2}",
        "limit": LIMIT,
        "repetitions": args.repetitions,
        "cap_seconds": args.cap,
        "cursors": cursors(args.tasks),
        "summary": {s: states[s]["summary"] for s in STATES},
        "refresh_pool_statistics": {
            k: v
            for k, v in states["never_analyzed_refreshed"]["refresh"].items()
            if k in ("seconds", "tables", "second_call", "call_after_the_reads")
        },
        "plan_top_lines": {
            s: {
                a: {q: lines[0] for q, lines in by_query.items()}
                for a, by_query in states[s]["plans"].items()
            }
            for s in STATES
        },
        "states": states,
        "setup_seconds": {k: common.rounded(v, 1) for k, v in timings.items()},
        "machine": {**common.machine_info(None), "postgresql": postgres_version(args.dsn)},
    }
    common.write_result(args.name, payload, module="bench.pool_chunk_plans")
    for state in STATES:
        s = payload["summary"][state]
        print(
            f"{state:26} old {s['old']['median_ms']:9.1f} ms ({s['old']['cancelled']} cancelled)"
            f"  new {s['new']['median_ms']:7.1f} ms  ratio {s['ratio_new_to_old']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
