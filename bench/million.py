"""Benchmark (issue 14): freshness, memory, idle cost and pruning at 10k, 100k and 1M tasks.

    python -m bench.million --sizes 10000 100000 [--repetitions 3] [--name million]

One private Label Studio 1.23.2 on a fresh PostgreSQL database with the memory-efficient
prediction import (bench/million_setup.py); for each size, a new project of that many
synthetic 200-character texts (imported in timed batches of 5,000), 1,000 of them
labelled; then the daemon, with its defaults (queue_depth 1,000, batch_size 20,000,
keep_versions 2, margin; min_interval = 0 so that repetitions follow each other, and
prune_per_cycle = 0 so that pruning is timed on its own), runs in a process of its own
(bench/million_daemon.py) whose RSS and its model worker's are sampled throughout:

1. first cycle: the first full sync (every task read), training on 1,000 labels, scoring,
   publishing: its peak RSS is the "first full sync" figure;
2. one warm-up cycle (10 more labels), so that each measured cycle meets two own
   versions on the server, as `keep_versions = 2` leaves them;
3. each repetition: 10 labels (`min_new_annotations`) through the API; the clock starts
   when the POST of the last one has returned and stops when `run_cycle` has returned,
   i.e. the new version is active and the queue view re-sorted (FRESHNESS); then the
   prune of one old version (timed); then the REFERENCE: a bare import of the very
   predictions the cycle published (K = 1,000) under another model version into the same
   project, and its deletion (same server call as a prune);
4. idle polls, as bench/idle_cost.py counts them: one poll within the overlap window,
   the first poll after the settle time, then `--idle-polls` settled polls; their HTTP
   requests (`counts["http_requests"]`).

Targets (issue 14, this 2-core box): freshness at 1M <= 15 s; at 10k <= 1.3 x the bare
import; daemon RSS <= 300 MiB and worker <= 400 MiB at 1M; 2 requests per idle poll at
every size. Results: bench/results/NAME.json, written after each size.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from aldaemon.loop.poll import WATERMARK_OVERLAP_SECONDS, WATERMARK_SETTLE_SECONDS
from bench import common
from bench.million_setup import (
    ImportedProject,
    SyntheticPool,
    annotate_pool_tasks,
    import_pool,
    label_studio_on_postgres,
)
from bench.million_watch import DaemonProcess
from demo.data import LABEL_CONFIG
from tests.lsserver import LabelStudioClient, LabelStudioServer

NAME = "million"
MODULE = "bench.million"
FIRST_LABELS = 1000
NEW_LABELS_PER_CYCLE = 10  # min_new_annotations' default: the 10th label crosses it
FRESHNESS_AT_1M_S = 15.0
FRESHNESS_OVER_IMPORT_AT_10K = 1.3
DAEMON_RSS_MIB, WORKER_RSS_MIB = 300.0, 400.0
IDLE_REQUESTS = 2


def measure_size(
    *,
    server: LabelStudioServer,
    size: int,
    repetitions: int,
    idle_polls: int,
    work_dir: Path,
    import_only: bool = False,
) -> dict[str, Any]:
    client = LabelStudioClient(server)
    pool = SyntheticPool(size)
    print(f"[{size:,}] importing", flush=True)
    imported = import_pool(client, pool, title=f"million {size}")
    print(f"[{size:,}] {size:,} tasks imported in {imported.seconds:.1f} s", flush=True)
    if import_only:
        return {"tasks": size, "project_id": imported.project_id, **_import_figures(imported)}
    order = list(range(size))
    random.Random(size).shuffle(order)

    def label_next(count: int) -> None:
        annotate_pool_tasks(client, pool, imported.task_ids, [order.pop() for _ in range(count)])

    # The import must age past the poll's overlap window, or the first polls re-read it.
    time.sleep(WATERMARK_OVERLAP_SECONDS + 1)
    label_next(FIRST_LABELS)
    config = common.daemon_config(
        directory=work_dir / f"daemon-{size}",
        server=server,
        project_id=imported.project_id,
        retrain={"min_interval": 0},
        predictions={"prune_per_cycle": 0},
    )
    with DaemonProcess(
        config_path=Path(config.path), log_path=work_dir / f"daemon-{size}.log"
    ) as daemon:
        first = _published(daemon.command("first_sync", do="cycle"))
        print(
            f"[{size:,}] first cycle {first['seconds']:.1f} s {first['steps_s']}; peak RSS MiB "
            f"{daemon.peaks_mib('first_sync')}",
            flush=True,
        )
        label_next(NEW_LABELS_PER_CYCLE)
        warm_up = _published(daemon.command("warm_up", do="cycle"))
        print(f"[{size:,}] warm-up cycle {warm_up['seconds']:.1f} s", flush=True)
        reps = [
            _repetition(daemon, label_next, size=size, number=n) for n in range(1, repetitions + 1)
        ]
        idle = _idle_polls(daemon, polls=idle_polls)
        phases = {p: daemon.peaks_mib(p) for p in ("first_sync", "warm_up", "cycle", "idle")}
        phases["floor_and_prune"] = daemon.peaks_mib("floor_and_prune")
    daemon_high_water = {r: round(k / 1024, 1) for r, k in sorted(daemon.high_water.items())}
    result = {
        "tasks": size,
        **_import_figures(imported),
        "first_cycle": first,
        "warm_up": warm_up,
        "repetitions": reps,
        "idle": idle,
        "peak_rss_mib_by_phase": phases,
        "high_water_mib": daemon_high_water,
        "median": _medians(reps),
    }
    m = result["median"]
    print(
        f"[{size:,}] freshness {m['freshness_s']:.2f} s = {m['freshness_over_import']:.2f} x "
        f"bare import ({m['bare_import_s']:.2f} s); prune {m['prune_s']:.1f} s; idle poll "
        f"{idle['settled_requests_max']} requests; peak RSS {phases}",
        flush=True,
    )
    return result


def _import_figures(imported: ImportedProject) -> dict[str, Any]:
    if not imported.batch_seconds:  # reused from an --import-only run: see its results
        return {"task_import": "reused"}
    return {
        "task_import_s": common.rounded(imported.seconds),
        "task_import_per_s": round(len(imported.task_ids) / imported.seconds),
        "task_import_batch_s": {
            "first": common.rounded(imported.batch_seconds[0]),
            "median": common.rounded(common.median(imported.batch_seconds)),
            "last": common.rounded(imported.batch_seconds[-1]),
        },
    }


def _repetition(daemon: DaemonProcess, label_next: Any, *, size: int, number: int) -> dict:
    label_next(NEW_LABELS_PER_CYCLE)
    last_label = time.perf_counter()
    cycle = _published(daemon.command("cycle", do="cycle"))
    freshness = time.perf_counter() - last_label
    prune = daemon.command("floor_and_prune", do="prune")
    floor = daemon.command(
        "floor_and_prune", do="floor", version=cycle["version"], label_config=LABEL_CONFIG
    )
    if floor["created"] != floor["predictions"]:
        raise RuntimeError(f"the bare import created {floor['created']} of {floor}")
    figures = {
        "version": cycle["version"],
        "freshness_s": freshness,
        "cycle": cycle,
        "predictions": floor["predictions"],
        "bare_import_s": floor["import_s"],
        "bare_delete_s": floor["delete_s"],
        "freshness_over_import": freshness / floor["import_s"],
        "prune_s": prune["seconds"],
        "pruned": prune["pruned"],
    }
    print(
        f"[{size:,}] rep {number}: freshness {freshness:.2f} s, bare import "
        f"{floor['import_s']:.2f} s ({floor['predictions']} predictions), ratio "
        f"{figures['freshness_over_import']:.2f}; steps {cycle['steps_s']}; "
        f"{cycle['counts'].get('http_requests', 0)} requests; prune {prune['seconds']:.1f} s "
        f"({prune['pruned']} version)",
        flush=True,
    )
    return figures


def _idle_polls(daemon: DaemonProcess, *, polls: int) -> dict[str, Any]:
    """bench/idle_cost.py's sequence: within the overlap, first after settle, settled."""

    def poll() -> dict[str, Any]:
        answer = daemon.command("idle", do="cycle")
        return {
            "outcome": answer["outcome"],
            "decision": answer["decision"],
            "http_requests": answer["counts"].get("http_requests", 0),
            "tasks_read": answer["counts"].get("tasks_read", 0),
            "seconds": common.rounded(answer["seconds"], 4),
        }

    within_overlap = poll()
    time.sleep(WATERMARK_SETTLE_SECONDS + 1)
    first_after_settle = poll()
    settled = [poll() for _ in range(polls)]
    return {
        "within_overlap": within_overlap,
        "first_after_settle": first_after_settle,
        "settled": settled,
        "settled_requests_max": max(p["http_requests"] for p in settled),
        "settled_seconds_median": common.median([p["seconds"] for p in settled]),
    }


def _published(answer: dict[str, Any]) -> dict[str, Any]:
    if answer["outcome"] != "ok" or "activated" not in answer["counts"]:
        raise RuntimeError(f"the cycle did not publish a version: {answer}")
    return answer


MEDIAN_KEYS = ("freshness_s", "bare_import_s", "freshness_over_import", "prune_s", "bare_delete_s")


def _medians(reps: Sequence[dict[str, Any]]) -> dict[str, float]:
    medians = {
        key: common.rounded(
            common.median([float(r[key]) for r in reps if key != "prune_s" or r["pruned"]])
        )
        for key in MEDIAN_KEYS
    }
    steps = sorted({step for r in reps for step in r["cycle"]["steps_s"]})
    for step in steps:
        medians[f"step_{step}_s"] = common.rounded(
            common.median([r["cycle"]["steps_s"].get(step, 0.0) for r in reps])
        )
    medians["cycle_http_requests"] = common.median(
        [r["cycle"]["counts"].get("http_requests", 0) for r in reps]
    )
    return medians


def verdicts(sizes: Sequence[dict[str, Any]]) -> list[str]:
    """Each target of issue 14 against the sizes measured: met / MISSED / not measured."""
    by_size = {s["tasks"]: s for s in sizes}
    lines = []
    small, big = by_size.get(10_000), by_size.get(1_000_000)
    if small:
        ratio = small["median"]["freshness_over_import"]
        ok = ratio <= FRESHNESS_OVER_IMPORT_AT_10K
        lines.append(f"freshness at 10k {ratio:.2f} x bare import: {'met' if ok else 'MISSED'}")
    if big:
        fresh = big["median"]["freshness_s"]
        lines.append(
            f"freshness at 1M {fresh:.1f} s: {'met' if fresh <= FRESHNESS_AT_1M_S else 'MISSED'}"
        )
        peaks = [big["peak_rss_mib_by_phase"][p] for p in ("first_sync", "warm_up", "cycle")]
        daemon = max(p.get("daemon", 0.0) for p in peaks)
        worker = max(p.get("model_worker", 0.0) for p in peaks)
        lines.append(
            f"daemon RSS at 1M {daemon:.0f} MiB: {'met' if daemon <= DAEMON_RSS_MIB else 'MISSED'}"
        )
        lines.append(
            f"worker RSS at 1M {worker:.0f} MiB: {'met' if worker <= WORKER_RSS_MIB else 'MISSED'}"
        )
    for size in sizes:
        requests = size["idle"]["settled_requests_max"]
        ok = requests <= IDLE_REQUESTS
        lines.append(
            f"idle poll at {size['tasks']:,}: {requests} requests: {'met' if ok else 'MISSED'}"
        )
    return lines


def run(
    *,
    sizes: Sequence[int],
    repetitions: int,
    idle_polls: int,
    name: str,
    keep: bool,
    database: str | None,
    import_only: bool,
) -> None:
    results: list[dict[str, Any]] = []
    with (
        _work_directory(keep=keep, database=database) as work_dir,
        label_studio_on_postgres(work_dir, database=database) as server,
    ):
        for size in sizes:
            results.append(
                measure_size(
                    server=server,
                    size=size,
                    repetitions=repetitions,
                    idle_polls=idle_polls,
                    work_dir=work_dir,
                    import_only=import_only,
                )
            )
            if import_only:  # the import's figures, for the run that will reuse the project
                imports = {"sizes": results, "machine": common.machine_info(server)}
                common.write_result(f"{name}_import", imports, module=MODULE)
                continue
            payload = {
                "settings": {
                    "first_labels": FIRST_LABELS,
                    "new_labels_per_cycle": NEW_LABELS_PER_CYCLE,
                    "repetitions": repetitions,
                    "idle_polls": idle_polls,
                    "label_studio": "PostgreSQL, memory-efficient prediction import on",
                    "daemon": "defaults; min_interval = 0, prune_per_cycle = 0 (timed apart)",
                },
                "sizes": results,
                "verdicts": verdicts(results),
                "machine": common.machine_info(server),
            }
            common.write_result(name, payload, module=MODULE)
    for line in [] if import_only else verdicts(results):
        print(line)


@contextlib.contextmanager
def _work_directory(*, keep: bool, database: str | None) -> Iterator[Path]:
    """A scratch directory; with a kept database, a fixed one beside it (to reuse)."""
    if database is None:
        with common.work_directory(NAME, keep=keep) as work_dir:
            yield work_dir
        return
    work_dir = Path(tempfile.gettempdir()) / f"aldaemon-bench-{database}"
    work_dir.mkdir(exist_ok=True)
    for daemon_dir in work_dir.glob("daemon-*"):  # a daemon always starts from scratch
        subprocess.run(["rm", "-rf", str(daemon_dir)], check=False)
    yield work_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--idle-polls", type=int, default=3)
    parser.add_argument("--name", default=NAME, help="results file name (bench/results/NAME.json)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--database",
        help="PostgreSQL database of Label Studio, KEPT (with its data dir) so that a later "
        "run reuses a project of the same size that has no annotation yet",
    )
    parser.add_argument(
        "--import-only", action="store_true", help="import the projects, measure nothing"
    )
    args = parser.parse_args(argv)
    # A SIGTERM unwinds like Ctrl-C: Label Studio stopped, its database dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    run(
        sizes=args.sizes,
        repetitions=args.repetitions,
        idle_polls=args.idle_polls,
        name=args.name,
        keep=args.keep,
        database=args.database,
        import_only=args.import_only,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
