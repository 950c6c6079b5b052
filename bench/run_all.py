"""`make bench`: run every benchmark with its default settings, then refresh BENCHMARKS.md.

    python -m bench.run_all [--only NAME ...] [--skip NAME ...]

Each benchmark runs in its own process (one starts its own Label Studio, one measures
the memory of child processes: neither should share a process with another), one after
the other (they would slow each other down on a 2-core machine). A failing benchmark
does not stop the others; the exit code is non-zero when any failed. The tables in
BENCHMARKS.md are then rendered from bench/results/*.json (`bench.report`).

Expect about two hours on a 2-core machine, most of it in label_efficiency.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence

from bench import common, report

BENCHMARKS = (
    "cycle_latency",
    "idle_cost",
    "footprint",
    "label_efficiency",
    "label_efficiency_offline",
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__)
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--skip", nargs="+", choices=BENCHMARKS, default=[])
    args = parser.parse_args(argv)
    failed: list[str] = []
    for name in (n for n in BENCHMARKS if n in args.only and n not in args.skip):
        print(f"=== bench.{name}", flush=True)
        started = time.perf_counter()
        completed = subprocess.run(
            [sys.executable, "-u", "-m", f"bench.{name}"], cwd=common.REPO_ROOT, check=False
        )
        minutes = (time.perf_counter() - started) / 60
        print(f"=== bench.{name}: exit {completed.returncode} after {minutes:.1f} min", flush=True)
        if completed.returncode != 0:
            failed.append(name)
    report.main([])
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
