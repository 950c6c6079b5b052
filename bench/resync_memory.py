"""What the periodic full id listing costs the daemon's memory at a million tasks.

    python -m bench.resync_memory [--size 1000000] [--repetitions 3]

The resync compares every task id Label Studio lists with every live id the store holds.
At the 1M first sync the daemon's peak RSS (311 MiB, BENCHMARKS.md "A million tasks on
one box") was set by that comparison. Each variant runs in a fresh process on the same
SQLite store of `--size` live tasks and the same listing (pages of 1,000 `{"id": n}` as
the gateway decodes them, 10 tasks missing); the figure is the process's peak RSS
(VmHWM) above its RSS just before the comparison, so imports and the open store count
for neither:

- `sets` (the code before this change, reproduced here as the reference): the listing as
  a list of ints, the store's ids as a set from `fetchall()`, two frozensets subtracted;
- `packed` (the daemon's code): `LabelStudioGateway.list_task_ids`'s 8-byte array, the
  store's `known_task_ids` (8-byte array read row by row) and `find_deleted_tasks`.

Both must find the same deleted tasks; the run stops if they do not.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench import common

NAME = "resync_memory"
PROJECT = 1
PAGE = 1000
MISSING = 10  # tasks the listing lacks: deleted in Label Studio
VARIANTS = ("sets", "packed")


def rss_mib(field: str) -> float:
    """VmRSS or VmHWM of this process, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def listing_pages(size: int) -> Iterator[list[dict[str, Any]]]:
    """Label Studio's id listing as decoded pages, one page alive at a time; MISSING tasks
    spread over the project are not listed."""
    step = size // MISSING
    for start in range(1, size + 1, PAGE):
        stop = min(start + PAGE, size + 1)
        yield [{"id": n} for n in range(start, stop) if n % step != 0]


def fill_store(state_dir: Path, size: int) -> None:
    from aldaemon.loop.poll import record_poll
    from aldaemon.records import TaskRecord
    from aldaemon.store import Store
    from aldaemon.sync.reconcile import diff

    with Store.open(state_dir) as store:
        for start in range(1, size + 1, 50_000):
            tasks = [
                TaskRecord(id=n, updated_at="2026-11-29T06:00:00.000000Z", text=f"task {n}")
                for n in range(start, min(start + 50_000, size + 1))
            ]
            record_poll(store, PROJECT, diff(tasks, {}), now=100.0)


def compare(variant: str, state_dir: Path, size: int) -> dict[str, Any]:
    """One comparison in this process: the deleted ids, seconds, and MiB above the start."""
    from aldaemon.store import Store
    from aldaemon.sync.reconcile import find_deleted_tasks

    with Store.open(state_dir, lock=False) as store:
        before = rss_mib("VmRSS")
        started = time.perf_counter()
        if variant == "sets":
            listed: list[int] = []
            for page in listing_pages(size):
                listed.extend(int(task["id"]) for task in page)
            with store._reading() as conn:
                rows = conn.execute(
                    "SELECT id FROM tasks WHERE project_id = ? AND deleted_at IS NULL",
                    (PROJECT,),
                ).fetchall()
            known = {int(row[0]) for row in rows}
            deleted = frozenset(known) - frozenset(listed)
        else:
            packed = array("q")
            for page in listing_pages(size):
                packed.extend(int(task["id"]) for task in page)
            deleted = find_deleted_tasks(
                listed_ids=packed, known_ids=store.known_task_ids(PROJECT)
            ).deleted_task_ids
        seconds = time.perf_counter() - started
    return {
        "deleted": sorted(deleted),
        "seconds": seconds,
        "peak_above_start_mib": rss_mib("VmHWM") - before,
    }


def run_variant(variant: str, state_dir: Path, size: int) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "bench.resync_memory", "--one", variant, str(state_dir), str(size)],
        check=True,
        capture_output=True,
        text=True,
        cwd=common.REPO_ROOT,
    )
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--one", nargs=3, metavar=("VARIANT", "STATE_DIR", "SIZE"))
    args = parser.parse_args(argv)
    if args.one:
        variant, state_dir, size = args.one
        print(json.dumps(compare(variant, Path(state_dir), int(size))))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        state_dir = Path(tmp)
        fill_store(state_dir, args.size)
        runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
        for _ in range(args.repetitions):
            for variant in VARIANTS:  # interleaved: drift in the machine hits both alike
                runs[variant].append(run_variant(variant, state_dir, args.size))
    answers = {json.dumps(run["deleted"]) for variant in VARIANTS for run in runs[variant]}
    if len(answers) != 1:
        raise SystemExit(f"the variants found different deleted tasks: {sorted(answers)}")
    summary = {
        variant: {
            "peak_above_start_mib": [common.rounded(r["peak_above_start_mib"], 1) for r in rs],
            "median_peak_mib": common.rounded(
                statistics.median(r["peak_above_start_mib"] for r in rs), 1
            ),
            "median_seconds": common.rounded(statistics.median(r["seconds"] for r in rs)),
        }
        for variant, rs in runs.items()
    }
    summary["packed_over_sets_peak"] = {
        "ratio": common.rounded(
            summary["packed"]["median_peak_mib"] / summary["sets"]["median_peak_mib"]
        )
    }
    payload = {
        "tasks": args.size,
        "deleted_found": len(runs["packed"][0]["deleted"]),
        "variants": summary,
        "machine": common.machine_info(None),
    }
    print(json.dumps(summary, indent=2))
    common.write_result(NAME, payload, module=f"bench.{NAME}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
