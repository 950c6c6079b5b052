"""Scoring a big pool on a 2-worker Dask cluster against the local worker, same run.

    python -m bench.dask_scoring [--tasks 100000] [--repetitions 3] [--labels 500]

One model (the default TF-IDF + logistic regression, trained on `--labels` fine-food
reviews) scores a pool of `--tasks` reviews (the corpus repeated) with one
ScoringRequest, three ways, each `--repetitions` times, alternating:
- local: the daemon's own ModelWorker (one spawned worker process);
- dask: DaskModelWorker on a scheduler and 2 single-threaded workers on loopback, started
  here exactly as the test suite starts them (tests/daskcluster.py); the workers are
  restarted before each run so their peak RSS is that run's;
- dask, killed: the same, with the worker running the job SIGKILLed half-way through (at
  half the median dask time after the job started); the scheduler runs it again on
  the other worker.
The "daemon side" of each run is a fresh subprocess (`--client MODE`) that builds the
request, awaits the job and reports its own peak RSS (VmHWM), so one mode's memory does
not carry into another's. Worker peak RSS: VmHWM of the local worker process, read
before it exits, or of each Dask worker process (via client.run); the scheduler's over
the whole run. Every run's scores are
hashed: all must equal the local run's, the killed runs included.

A ScoringRequest carries the pool's texts, so the pool travels daemon -> scheduler ->
worker; the streamed scoring request (the worker reads the pool from the store) is
what takes that out of the daemon and the scheduler.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aldaemon.model.requests import ScoringRequest
from aldaemon.model.results import ScoredPool
from aldaemon.model.worker import ModelWorker

if TYPE_CHECKING:
    from tests.daskcluster import DaskCluster

# The daemon side (`--client`) imports only what a daemon imports; scikit-learn, the
# corpus and the cluster helpers are imported by the bench process alone, in main().

NAME = "dask_scoring"
MODES = ("local", "dask")
STREAMED_PROJECT = 1
QUEUE_DEPTH = 1000  # the queue_depth default


def peak_rss_mib(pid: int | str = "self") -> float:
    """VmHWM of a live process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {pid}")


def digest(pool: ScoredPool) -> str:
    """One hash of every task id, label and score: equal hashes, equal results."""
    text = json.dumps([pool.task_ids, pool.labels, [round(s, 12) for s in pool.scores]])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---- the daemon side: one run in a fresh process ----------------------------------------


async def client_run(
    mode: str, *, artifact: str, texts: str, scheduler: str, state_dir: str
) -> dict[str, Any]:
    worker: Any
    if mode == "local":
        worker = ModelWorker()
    else:
        from aldaemon.model.dask_worker import DaskModelWorker

        worker = DaskModelWorker(scheduler)
        await worker.connect()  # as the cycle's training would have: parallelism known
    if state_dir:
        started = time.perf_counter()
        scored = await score_streamed(worker, artifact=artifact, state_dir=state_dir)
        seconds = time.perf_counter() - started
    else:
        pool = json.loads(Path(texts).read_text())
        request = ScoringRequest(
            artifact_path=artifact, task_ids=list(range(len(pool))), texts=pool, strategy="margin"
        )
        del pool
        started = time.perf_counter()
        scored = await worker.score(request)
        seconds = time.perf_counter() - started
    children = [peak_rss_mib(child.pid) for child in multiprocessing.active_children()]
    worker.shutdown()
    await worker.aclose()
    return {
        "seconds": seconds,
        "daemon_peak_rss_mib": peak_rss_mib(),
        "local_worker_peak_rss_mib": max(children, default=None),
        "digest": digest(scored),
    }


async def score_streamed(worker: Any, *, artifact: str, state_dir: str) -> ScoredPool:
    """What the cycle's score step does (loop/train.py): one PoolScoringRequest per shard,
    `worker.parallelism` shards, side by side, merged into one queue."""
    import dataclasses

    from aldaemon.model.queue import merge_pool_scores
    from aldaemon.model.requests import PoolScoringRequest

    with open_store(state_dir, lock=False) as store:
        request = PoolScoringRequest(
            artifact_path=artifact,
            store=store.address,
            project_id=STREAMED_PROJECT,
            strategy="margin",
            depth=QUEUE_DEPTH,
            seed=1,
        )
        shards = store.pool_shards(STREAMED_PROJECT, shards=worker.parallelism)
        answers = await asyncio.gather(
            *(worker.score_pool(dataclasses.replace(request, shard=(a, u))) for a, u in shards)
        )
    return merge_pool_scores(answers, depth=QUEUE_DEPTH).queue


def open_store(spec: str, *, lock: bool) -> Any:
    """The store at `spec`: a PostgreSQL DSN (`--state-dsn`), else a SQLite state dir."""
    from aldaemon.secret import Secret
    from aldaemon.store import Store

    if spec.startswith("postgresql://"):
        return Store.connect(Secret(spec), lock=lock)
    return Store.open(Path(spec), lock=lock)


def analyze(dsn: str) -> None:
    """What autovacuum does within a minute or so of a bulk load: fresh planner statistics.
    Without them the pool's chunk query sorts the rest of the shard for every chunk (2 s
    a chunk of 4,096 at 500,000 tasks left, against 24 ms: EXPLAIN ANALYZE)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE")


def fill_store(state_dir: str, texts: Sequence[str]) -> None:
    """The pool as unlabeled tasks of STREAMED_PROJECT, stored as a poll stores them."""
    from aldaemon.loop.poll import record_poll
    from aldaemon.records import TaskRecord
    from aldaemon.sync.reconcile import diff

    with open_store(state_dir, lock=True) as store:
        for start in range(0, len(texts), 50_000):
            tasks = [
                TaskRecord(id=i + 1, updated_at="2026-11-29T06:00:00.000000Z", text=texts[i])
                for i in range(start, min(start + 50_000, len(texts)))
            ]
            record_poll(store, STREAMED_PROJECT, diff(tasks, {}), now=100.0)


# ---- the bench process: cluster, runs, kills --------------------------------------------


def start_client(
    mode: str, *, artifact: Path, texts: Path, cluster: DaskCluster, out: Path, state_dir: str
) -> subprocess.Popen[bytes]:
    from tests.daskcluster import CHECKOUT, checkout_env

    command = [sys.executable, "-m", "bench.dask_scoring", "--client", mode]
    command += ["--artifact", str(artifact), "--texts", str(texts), "--state-dir", state_dir]
    command += ["--scheduler", cluster.address, "--out", str(out)]
    return subprocess.Popen(command, env=checkout_env(), cwd=CHECKOUT)


def worker_peaks(cluster: DaskCluster) -> list[float]:
    def own_peak() -> float:  # defined here: pickled by value, no bench import on workers
        for line in open("/proc/self/status").read().splitlines():  # noqa: SIM115
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    return sorted(cluster.client.run(own_peak).values())


def one_run(
    mode: str,
    *,
    artifact: Path,
    texts: Path,
    cluster: DaskCluster,
    work: Path,
    kill_after: float,
    state_dir: str,
) -> dict[str, Any]:
    if mode != "local":
        cluster.client.restart()  # fresh worker processes: their VmHWM is this run's
        cluster.wait_for_workers()
    out = work / f"run-{time.monotonic_ns()}.json"
    client = start_client(
        mode, artifact=artifact, texts=texts, cluster=cluster, out=out, state_dir=state_dir
    )
    killed = None
    if kill_after > 0:
        killed = kill_mid_job(cluster, after=kill_after)
    if client.wait() != 0:
        raise RuntimeError(f"the {mode} run failed (exit {client.returncode})")
    result: dict[str, Any] = json.loads(out.read_text())
    if mode != "local":
        result["dask_worker_peak_rss_mib"] = worker_peaks(cluster)
    if killed is not None:
        result["killed_worker_pid"] = killed
    return result


def kill_mid_job(cluster: DaskCluster, *, after: float) -> int:
    """SIGKILL the worker process running the aldaemon job, `after` s after it started."""
    deadline = time.monotonic() + 600
    while True:
        busy = [w for w, keys in cluster.client.processing().items() if keys]
        if busy:
            break
        if time.monotonic() > deadline:
            raise RuntimeError("no worker started the job")
        time.sleep(0.05)
    time.sleep(after)
    pid = cluster.worker_pids()[busy[0]]
    os.kill(pid, signal.SIGKILL)
    return pid


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    from bench import common

    def med(mode: str, key: str) -> float:
        return common.rounded(common.median([r[key] for r in runs[mode]]), 2)

    local_seconds = med("local", "seconds")
    summary: dict[str, Any] = {}
    for mode, results in runs.items():
        summary[mode] = {
            "median_seconds": med(mode, "seconds"),
            "ratio_to_local": common.rounded(med(mode, "seconds") / local_seconds, 2),
            "median_daemon_peak_rss_mib": med(mode, "daemon_peak_rss_mib"),
            "max_worker_peak_rss_mib": common.rounded(
                max(
                    max(r.get("dask_worker_peak_rss_mib") or [r["local_worker_peak_rss_mib"]])
                    for r in results
                ),
                1,
            ),
            "scores_equal_local": all(r["digest"] == runs["local"][0]["digest"] for r in results),
        }
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dask_scoring", description=__doc__)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--labels", type=int, default=500)
    parser.add_argument(
        "--streamed",
        action="store_true",
        help="score with the pool in an SQLite store, read by the workers (PoolScoringRequest)",
    )
    parser.add_argument(
        "--analyze",
        action="store_true",
        help="with --state-dsn: ANALYZE after filling the store, as autovacuum soon would",
    )
    parser.add_argument(
        "--state-dsn",
        default="",
        help="with --streamed: the store in this PostgreSQL database instead of SQLite "
        "(its tables are written to: use a database of its own)",
    )
    parser.add_argument("--name", default=NAME, help="results file name")
    parser.add_argument("--client", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--artifact", help=argparse.SUPPRESS)
    parser.add_argument("--texts", help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", default="", help=argparse.SUPPRESS)
    parser.add_argument("--scheduler", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        result = asyncio.run(
            client_run(
                args.client,
                artifact=args.artifact,
                texts=args.texts,
                scheduler=args.scheduler,
                state_dir=args.state_dir,
            )
        )
        Path(args.out).write_text(json.dumps(result))
        return 0

    from aldaemon.model import training
    from aldaemon.model.protocol import DEFAULT_FACTORY
    from aldaemon.model.requests import SingleLabelTraining
    from bench import common
    from tests.daskcluster import DaskCluster

    with tempfile.TemporaryDirectory(prefix="aldaemon-dask-bench-") as scratch:
        work = Path(scratch)
        texts = work / "pool.json"
        pool = [task.text for task in common.repeated_tasks(common.corpus(), args.tasks)]
        state_dir = ""
        if args.streamed:
            state_dir = args.state_dsn or str(work / "state")
            fill_store(state_dir, pool)
            if args.state_dsn and args.analyze:
                analyze(args.state_dsn)
        else:
            texts.write_text(json.dumps(pool))
        del pool
        labeled = common.repeated_tasks(common.corpus(), args.labels)
        artifact = work / "models" / "v1.joblib"
        training.run(
            SingleLabelTraining(
                factory_ref=DEFAULT_FACTORY,
                texts=[t.text for t in labeled],
                labels=[t.label for t in labeled],
                artifact_path=str(artifact),
            )
        )
        (work / "dask").mkdir()
        cluster = DaskCluster(work / "dask", workers=2)
        cluster.start()
        try:
            runs: dict[str, list[dict[str, Any]]] = {"local": [], "dask": [], "dask_killed": []}
            if args.streamed:  # compute and cache every task's features once: runs are warm
                warm = one_run(
                    "local",
                    artifact=artifact,
                    texts=texts,
                    cluster=cluster,
                    work=work,
                    kill_after=0,
                    state_dir=state_dir,
                )
                print(f"warm-up (not counted): {warm}", flush=True)
            for repetition in range(args.repetitions):
                for mode in MODES:
                    result = one_run(
                        mode,
                        artifact=artifact,
                        texts=texts,
                        cluster=cluster,
                        work=work,
                        kill_after=0,
                        state_dir=state_dir,
                    )
                    print(f"rep {repetition} {mode}: {result}", flush=True)
                    runs[mode].append(result)
            half_dask = common.median([r["seconds"] for r in runs["dask"]]) / 2
            for repetition in range(args.repetitions):
                result = one_run(
                    "dask",
                    artifact=artifact,
                    texts=texts,
                    cluster=cluster,
                    work=work,
                    kill_after=half_dask,
                    state_dir=state_dir,
                )
                print(f"rep {repetition} dask_killed: {result}", flush=True)
                runs["dask_killed"].append(result)
            scheduler_peak = peak_rss_mib(cluster.scheduler_pid)
        finally:
            cluster.stop()
    summary = summarize(runs)
    summary["scheduler_peak_rss_mib"] = common.rounded(scheduler_peak, 1)
    print(json.dumps(summary, indent=2))
    common.write_result(
        args.name,
        {
            "tasks": args.tasks,
            "streamed": args.streamed,
            "store": "postgresql" if args.state_dsn else "sqlite",
            "analyzed": bool(args.state_dsn and args.analyze),
            "labels": args.labels,
            "repetitions": args.repetitions,
            "summary": summary,
            "runs": runs,
            "machine": common.machine_info(None),
        },
        module="bench.dask_scoring",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
