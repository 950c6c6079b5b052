"""Markdown tables of bench/million.py's results, for BENCHMARKS.md.

    python -m bench.million_report LABEL=bench/results/A.json [LABEL=B.json ...]

Each argument is one run, labelled (e.g. `today=...million_before.json`); rows of every
run are printed together per measure, so that "before" and "after" sit side by side.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.million import (
    DAEMON_RSS_MIB,
    FRESHNESS_AT_1M_S,
    FRESHNESS_OVER_IMPORT_AT_10K,
    IDLE_REQUESTS,
    WORKER_RSS_MIB,
)

CYCLE_STEPS = ("train", "score", "upload", "activate")
Row = tuple[str, dict[str, Any]]


def _rows(runs: Sequence[tuple[str, dict[str, Any]]]) -> list[Row]:
    return [(label, size) for label, document in runs for size in document["sizes"]]


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def freshness_table(rows: Sequence[Row]) -> str:
    body = []
    for label, size in rows:
        m, n = size["median"], size["tasks"]
        per_rep = ", ".join(f"{r['freshness_s']:.1f}" for r in size["repetitions"])
        target = ""
        if n == 10_000:
            target = _verdict(m["freshness_over_import"] <= FRESHNESS_OVER_IMPORT_AT_10K)
            target = f"<= {FRESHNESS_OVER_IMPORT_AT_10K} x: {target}"
        elif n == 1_000_000:
            target = f"<= {FRESHNESS_AT_1M_S:.0f} s: {_verdict(m['freshness_s'] <= 15)}"
        steps = [f"{m.get(f'step_{step}_s', 0.0):.2f}" for step in CYCLE_STEPS]
        rest = m["freshness_s"] - sum(m.get(f"step_{step}_s", 0.0) for step in CYCLE_STEPS)
        body.append(
            [
                label,
                f"{n:,}",
                f"{m['freshness_s']:.2f} ({per_rep})",
                f"{m['bare_import_s']:.2f}",
                f"{m['freshness_over_import']:.2f}",
                *steps,
                f"{rest:.2f}",
                target,
            ]
        )
    header = ["code", "tasks", "freshness s (reps)", "bare import of K s", "freshness / import"]
    return _table([*header, *CYCLE_STEPS, "rest", "target"], body)


def memory_table(rows: Sequence[Row]) -> str:
    body = []
    for label, size in rows:
        phases = size["peak_rss_mib_by_phase"]
        cycle = {
            role: max(phases[p].get(role, 0.0) for p in ("warm_up", "cycle"))
            for role in ("daemon", "model_worker")
        }
        first = phases["first_sync"]
        target = ""
        if size["tasks"] == 1_000_000:
            daemon = max(first.get("daemon", 0.0), cycle["daemon"])
            worker = max(first.get("model_worker", 0.0), cycle["model_worker"])
            target = (
                f"daemon {_verdict(daemon <= DAEMON_RSS_MIB)}, "
                f"worker {_verdict(worker <= WORKER_RSS_MIB)}"
            )
        body.append(
            [
                label,
                f"{size['tasks']:,}",
                f"{first.get('daemon', 0):.0f}",
                f"{first.get('model_worker', 0):.0f}",
                f"{cycle['daemon']:.0f}",
                f"{cycle['model_worker']:.0f}",
                f"{size['high_water_mib'].get('daemon', 0):.0f}",
                f"{size['high_water_mib'].get('model_worker', 0):.0f}",
                target,
            ]
        )
    header = ["code", "tasks", "first sync: daemon", "first sync: worker", "cycle: daemon"]
    header += ["cycle: worker", "VmHWM daemon", "VmHWM worker"]
    return _table([*header, f"target (1M: {DAEMON_RSS_MIB:.0f} / {WORKER_RSS_MIB:.0f})"], body)


def first_sync_table(rows: Sequence[Row]) -> str:
    body = []
    for label, size in rows:
        first = size["first_cycle"]
        steps = first["steps_s"]
        imported = (
            f"{size['task_import_s']:.0f} ({size['task_import_per_s']:,}/s)"
            if "task_import_s" in size
            else "reused (see text)"
        )
        body.append(
            [
                label,
                f"{size['tasks']:,}",
                imported,
                f"{first['seconds']:.1f}",
                f"{steps.get('poll', 0):.1f}",
                f"{steps.get('resync', 0):.1f}",
                f"{steps.get('train', 0):.1f}",
                f"{steps.get('score', 0):.1f}",
                str(first["counts"].get("http_requests", 0)),
            ]
        )
    header = ["code", "tasks", "task import into LS s", "first cycle s", "poll s", "resync s"]
    return _table([*header, "train s", "score s", "requests"], body)


def idle_and_prune_table(rows: Sequence[Row]) -> str:
    body = []
    for label, size in rows:
        idle, m = size["idle"], size["median"]
        prunes = ", ".join(f"{r['prune_s']:.1f}" for r in size["repetitions"])
        requests = idle["settled_requests_max"]
        body.append(
            [
                label,
                f"{size['tasks']:,}",
                f"{requests} ({_verdict(requests <= IDLE_REQUESTS)})",
                str(idle["within_overlap"]["http_requests"]),
                str(idle["first_after_settle"]["http_requests"]),
                f"{idle['settled_seconds_median'] * 1000:.0f}",
                f"{m['prune_s']:.1f} ({prunes})",
                f"{m['bare_delete_s']:.1f}",
            ]
        )
    header = ["code", "tasks", "requests per settled idle poll", "within overlap"]
    header += ["first after settle", "ms per idle poll", "prune of one version s (reps)"]
    return _table([*header, "delete of the bare import's version s"], body)


def render(runs: Sequence[tuple[str, dict[str, Any]]]) -> str:
    rows = _rows(runs)
    return "\n\n".join(
        [
            "Freshness (median of 3):\n\n" + freshness_table(rows),
            "Peak RSS, MiB (sampled every 0.1 s; cycle = warm-up and measured cycles):\n\n"
            + memory_table(rows),
            "Idle polls and pruning:\n\n" + idle_and_prune_table(rows),
            "Setup and the first full sync (first cycle):\n\n" + first_sync_table(rows),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    runs = []
    for argument in argv if argv is not None else sys.argv[1:]:
        label, _, path = argument.partition("=")
        runs.append((label, json.loads(Path(path).read_text())))
    print(render(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
