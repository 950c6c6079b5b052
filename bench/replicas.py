"""Benchmark: replicas over one PostgreSQL, a random one killed (SIGKILL) and restarted.

    python -m bench.replicas [--replicas 3] [--projects 12] [--rounds 20] [--tasks 60]

Real `aldaemon run` processes (one config, `[state] dsn`, poll_interval 2 s) on the
projects of a real Label Studio (the shared one when ALDAEMON_TEST_LS_URL/_TOKEN/_PAT are
set, else a private one) and a fresh PostgreSQL database (tests/lsserver.py settings).
A simulated annotator labels a few tasks of random projects every round, so trainings
and uploads run while replicas die. Each round: SIGKILL a random replica, time until
every project has a live owner again (re-own), restart it, time until the spread is even
again. At the end, once every label is stored: duplicate (task, version) predictions in
Label Studio and labels Label Studio has but the store lacks (both must be 0).

Target: every re-own within one poll interval; spread within +-1 of even.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from aldaemon.secret import Secret
from aldaemon.store import Store
from aldaemon.store.ownership import project_owners
from bench import common
from tests.lsserver import (
    ExternalLabelStudioServer,
    LabelStudioClient,
    LabelStudioServer,
    PostgresDatabase,
    PostgresSettings,
)

NAME = "replicas"
POLL_INTERVAL = 2.0
DEADLINE = 120.0  # seconds any one wait may take before the run gives up on it


def start_replica(config_path: Path, log_dir: Path, serial: int) -> subprocess.Popen[bytes]:
    with (log_dir / f"replica-{serial}.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "aldaemon", "--config", str(config_path), "run"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def owners_by_pid(dsn: Secret, projects: list[int]) -> dict[int, int | None]:
    """Each project's owning process id (None when nobody owns it)."""
    owners = project_owners(dsn, password=None)
    return {pid: int(owners[pid].rsplit(":", 1)[1]) if pid in owners else None for pid in projects}


def wait_for(condition: Any, what: str) -> float:
    """Seconds until `condition()` holds, polled every 50 ms."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > DEADLINE:
            raise RuntimeError(f"gave up after {DEADLINE} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def run(args: argparse.Namespace, server: LabelStudioServer, work_dir: Path) -> dict[str, Any]:
    client = LabelStudioClient(server)
    rng = random.Random(7)
    reviews = common.corpus()
    projects: dict[int, dict[int, common.BenchTask]] = {}
    for index in range(args.projects):
        tasks = common.repeated_tasks(reviews[index * args.tasks :], args.tasks)
        project_id, by_task = common.create_project(client, title=f"replicas {index}", tasks=tasks)
        projects[project_id] = by_task
    database = PostgresDatabase.connect(
        PostgresSettings.from_env(os.environ),
        name=f"aldaemon_bench_replicas_{uuid.uuid4().hex[:8]}",
    )
    database.create()
    dsn = Secret(database.dsn)
    config_path = work_dir / "config.toml"
    config_path.write_text(
        f'[labelstudio]\nurl = "{server.url}"\ntoken = "{server.legacy_token}"\n'
        f'[state]\ndir = "{work_dir / "state"}"\ndsn = "{database.dsn}"\n'
        f'[daemon]\nlisten = ""\npoll_interval = {POLL_INTERVAL}\n'
        + "".join(
            f"[[projects]]\nid = {pid}\n[projects.retrain]\nmin_new_annotations = 4\n"
            "min_interval = 0\nmin_per_class = 2\n"
            for pid in projects
        )
    )
    ids = sorted(projects)
    share = math.ceil(len(ids) / args.replicas)
    unlabeled = {pid: list(projects[pid]) for pid in ids}
    replicas = [start_replica(config_path, work_dir, i) for i in range(args.replicas)]
    serial = args.replicas

    def live() -> set[int]:
        return {p.pid for p in replicas if p.poll() is None}

    def spread() -> list[int]:
        held = Counter(owners_by_pid(dsn, ids).values())
        return sorted(held.get(p.pid, 0) for p in replicas)

    def annotate_some() -> None:
        for pid in rng.sample(ids, k=min(4, len(ids))):
            for task_id in unlabeled[pid][:2]:
                common.annotate(client, task_id, projects[pid][task_id].label)
            del unlabeled[pid][:2]

    wait_for(lambda: spread() == [share] * args.replicas, "the first even spread")
    reown: list[float] = []
    settle: list[float] = []
    spreads: list[list[int]] = []
    try:
        for _ in range(args.rounds):
            annotate_some()
            victim = rng.randrange(len(replicas))
            replicas[victim].send_signal(signal.SIGKILL)
            replicas[victim].wait()
            reown.append(
                wait_for(
                    lambda: all(o in live() for o in owners_by_pid(dsn, ids).values()),
                    "every project owned by a live replica",
                )
            )
            replicas[victim] = start_replica(config_path, work_dir, serial)
            serial += 1
            settle.append(
                wait_for(lambda: max(spread()) - min(spread()) <= 1, "an even spread again")
            )
            spreads.append(spread())
        labeled = {pid: len(projects[pid]) - len(unlabeled[pid]) for pid in ids}
        with Store.connect(dsn, lock=False) as store:
            wait_for(
                lambda: all(len(store.annotated_tasks(pid)) == labeled[pid] for pid in ids),
                "every label stored",
            )
            stored = {pid: len(store.annotated_tasks(pid)) for pid in ids}
        duplicates = sum(
            count - 1
            for pid in ids
            for count in Counter(
                (p["task"], p["model_version"]) for p in client.predictions(pid)
            ).values()
            if count > 1
        )
    finally:
        for process in replicas:
            process.kill()
            process.wait()
        database.drop()
    return {
        "replicas": args.replicas,
        "projects": args.projects,
        "rounds": args.rounds,
        "poll_interval_s": POLL_INTERVAL,
        "reown_s": {
            "median": common.rounded(common.median(reown)),
            "max": common.rounded(max(reown)),
        },
        "reown_within_poll_interval": sum(1 for s in reown if s <= POLL_INTERVAL),
        "settle_after_restart_s": {
            "median": common.rounded(common.median(settle)),
            "max": common.rounded(max(settle)),
        },
        "spread_after_each_round": spreads,
        "duplicate_task_version_predictions": duplicates,
        "lost_labels": sum(labeled[pid] - stored[pid] for pid in ids),
        "labels_made": sum(labeled.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--projects", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=60)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    with common.work_directory(NAME, keep=args.keep) as work_dir:
        url = os.environ.get("ALDAEMON_TEST_LS_URL")
        if url:
            server: LabelStudioServer = ExternalLabelStudioServer(
                url=url,
                legacy_token=os.environ["ALDAEMON_TEST_LS_TOKEN"],
                pat=os.environ["ALDAEMON_TEST_LS_PAT"],
            )
            result = run(args, server, work_dir)
        else:
            with common.label_studio(work_dir) as started:
                result = run(args, started, work_dir)
    print(result)
    common.write_result(NAME, result, module="bench.replicas")


if __name__ == "__main__":
    main()
