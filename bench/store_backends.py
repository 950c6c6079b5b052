"""What the store's calls of one cycle cost on PostgreSQL, next to SQLite in the same run.

    python -m bench.store_backends [--tasks 10000] [--repeats 5] [--dsn postgresql://...]

The daemon calls the store synchronously from its event loop, so a slower backend shows
as event-loop time. Each repetition builds a fresh store on each backend (SQLite in a
temporary directory, PostgreSQL in a fresh schema of a fresh database on 127.0.0.1:5432)
and times the calls a cycle makes, on a project of `--tasks` tasks, a fifth labeled:
  first_poll        apply the first full read (every task and annotation, one transaction)
  known_annotations the annotations of every task (what each poll diffs against)
  training_data     annotated_tasks + unlabeled_tasks (what training and scoring read)
  save_predictions  the version's predictions for every unlabeled task, durably
  load_predictions  the same read back (what the upload sends)
  small_writes      100 durable one-row writes (set_meta; versions move like this)
Medians over the repetitions; the ratio is PostgreSQL / SQLite per call, both measured
on this machine in this run. Loopback only: a remote database adds its round trip to
every transaction.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg

from aldaemon.loop.poll import record_poll
from aldaemon.records import AnnotationRecord, PredictionRecord, TaskRecord
from aldaemon.secret import Secret
from aldaemon.store import Store
from aldaemon.sync.reconcile import diff
from bench import common

NAME = "store_backends"
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
T0 = "2026-11-29T00:00:00.000000Z"
P = 1


def project(size: int) -> list[TaskRecord]:
    """`size` tasks of review-like text; every fifth has one annotation."""
    return [
        TaskRecord(
            id=n,
            updated_at=T0,
            text=f"review {n}: the food was {'great' if n % 2 else 'awful'} " * 4,
            annotations=(
                (AnnotationRecord(n, n, "pos" if n % 2 else "neg", False, T0, completed_by=1),)
                if n % 5 == 0
                else ()
            ),
        )
        for n in range(1, size + 1)
    ]


def timed(step: Callable[[], object]) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def measure(store: Store, tasks: Sequence[TaskRecord]) -> dict[str, float]:
    ids = [t.id for t in tasks]
    outcome = diff(tasks, {})
    seconds = {"first_poll": timed(lambda: record_poll(store, P, outcome, now=1.0))}
    seconds["known_annotations"] = timed(lambda: store.known_annotations(P, ids))
    seconds["training_data"] = timed(lambda: (store.annotated_tasks(P), store.unlabeled_tasks(P)))
    pool = store.unlabeled_tasks(P)
    predictions = [PredictionRecord(task_id=t, label="pos", score=0.5) for t, _ in pool]
    store.create_version(P, name="v1", number=1, now=1.0)
    seconds["save_predictions"] = timed(lambda: store.save_predictions(P, "v1", predictions))
    seconds["load_predictions"] = timed(lambda: store.load_predictions(P, "v1"))
    seconds["small_writes"] = timed(lambda: [store.set_meta(P, view_id=n) for n in range(100)])
    return seconds


def fresh_postgres(admin_dsn: str, name: str) -> Secret:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return Secret(admin_dsn.rsplit("/", 1)[0] + f"/{name}")


def drop_postgres(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store_backends", description=__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dsn", default=ADMIN_DSN, help="a database to create others from")
    args = parser.parse_args(argv)
    tasks = project(args.tasks)
    runs: dict[str, list[dict[str, float]]] = {"sqlite": [], "postgresql": []}
    database = f"aldaemon_bench_store_{int(time.time())}"
    try:
        for _ in range(args.repeats):  # alternate, so load changes hit both alike
            with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp)) as store:
                runs["sqlite"].append(measure(store, tasks))
            with Store.connect(fresh_postgres(args.dsn, database)) as store:
                runs["postgresql"].append(measure(store, tasks))
    finally:
        drop_postgres(args.dsn, database)
    medians = {
        backend: {step: common.rounded(common.median([r[step] for r in rs]), 4) for step in rs[0]}
        for backend, rs in runs.items()
    }
    ratios = {
        step: common.rounded(medians["postgresql"][step] / medians["sqlite"][step], 2)
        for step in medians["sqlite"]
    }
    payload: dict[str, Any] = {
        "tasks": args.tasks,
        "repeats": args.repeats,
        "median_seconds": medians,
        "ratio_postgresql_to_sqlite": ratios,
        "runs": runs,
        "machine": {**common.machine_info(None), "postgresql": postgres_version(args.dsn)},
    }
    common.write_result(NAME, payload, module="bench.store_backends")
    for step, ratio in ratios.items():
        print(
            f"{step:18} sqlite {medians['sqlite'][step]:8.4f} s  "
            f"postgresql {medians['postgresql'][step]:8.4f} s  ratio {ratio}"
        )
    return 0


def postgres_version(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
