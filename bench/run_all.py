"""`make bench`: run every benchmark with its default settings, then refresh BENCHMARKS.md.

    python -m bench.run_all [--only NAME ...] [--skip NAME ...]

Each benchmark runs in its own process (one starts its own Label Studio, one measures
the memory of child processes: neither should share a process with another), one after
the other (they would slow each other down on a 2-core machine). A failing benchmark
does not stop the others; the exit code is non-zero when any failed. The tables in
BENCHMARKS.md are then rendered from bench/results/*.json (`bench.report`).

Expect about three hours on a 2-core machine: label_efficiency (~75 min) and the
50,000-task latency run (~45 min) take most of it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence

from bench import common, report

# (results name, module, arguments): 50,000 tasks run on their own, so that the 1k/10k
# table is complete before the long one starts.
BENCHMARKS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("cycle_latency", "cycle_latency", ()),
    ("cycle_latency_50k", "cycle_latency", ("--sizes", "50000", "--name", "cycle_latency_50k")),
    ("idle_cost", "idle_cost", ()),
    ("footprint", "footprint", ()),
    ("label_efficiency", "label_efficiency", ()),
    ("label_efficiency_offline", "label_efficiency_offline", ()),
)
NAMES = tuple(name for name, _, _ in BENCHMARKS)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__)
    parser.add_argument("--only", nargs="+", choices=NAMES, default=list(NAMES))
    parser.add_argument("--skip", nargs="+", choices=NAMES, default=[])
    args = parser.parse_args(argv)
    failed: list[str] = []
    for name, module, arguments in BENCHMARKS:
        if name not in args.only or name in args.skip:
            continue
        command = [sys.executable, "-u", "-m", f"bench.{module}", *arguments]
        print(f"=== {name}: {' '.join(command[1:])}", flush=True)
        started = time.perf_counter()
        completed = subprocess.run(command, cwd=common.REPO_ROOT, check=False)
        minutes = (time.perf_counter() - started) / 60
        print(f"=== {name}: exit {completed.returncode} after {minutes:.1f} min", flush=True)
        if completed.returncode != 0:
            failed.append(name)
    report.main([])
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
