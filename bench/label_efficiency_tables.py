"""Markdown tables of a `bench.label_efficiency_seeds` results file, for BENCHMARKS.md.

    python -m bench.label_efficiency_tables NAME [--per-seed]

Prints the summary (one row per model, cadence and sampler) and the contrasts (factors
against the daemon's setting, models against today's default) of
bench/results/NAME.json. Figures are read from the file; nothing is recomputed.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from typing import Any

from bench import common
from bench.label_efficiency_features import NAMES
from bench.label_efficiency_summary import config_of


def _range(spread: dict[str, float], fmt: str) -> str:
    return (
        f"{spread['median']:{fmt}} ({spread['q1']:{fmt}}-{spread['q3']:{fmt}}; "
        f"{spread['low']:{fmt}}-{spread['high']:{fmt}})"
    )


def summary_table(rows: Sequence[dict[str, Any]], *, per_seed: bool) -> str:
    header = [
        "model",
        "retrain every",
        "sampler",
        "seeds",
        "labels needed: median (IQR; range)",
        "AULC: median (IQR)",
        "paired ratio to random: median (IQR; range)",
        "fewer labels than random",
        "ratio of medians",
        "AULC gain over random: median, seeds better",
    ]
    if per_seed:
        header.insert(5, "labels needed per seed")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        aulc = row["aulc_spread"]
        cells = [
            row["model"],
            str(row["retrain_every"] or "-"),
            row["sampler"] + (" (what-if)" if row["what_if"] else ""),
            str(len(row["seeds"])),
            _range(row["labels_needed_spread"], ".0f"),
            *([", ".join(str(n) for n in row["labels_needed"])] if per_seed else []),
            f"{aulc['median']:.4f} ({aulc['q1']:.4f}-{aulc['q3']:.4f})",
        ]
        vs = row.get("vs_random")
        if vs is None:
            cells += ["reference", "", "", ""]
        else:
            ratio, gain = vs["labels_ratio"], vs["aulc_gain"]
            cells += [
                _range(ratio["spread"], ".2f"),
                f"{ratio['wins']}/{len(ratio['seeds'])}",
                f"{vs['ratio_of_medians']:.2f}",
                f"{gain['spread']['median']:+.4f}, {gain['wins']}/{len(gain['seeds'])}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def contrast_table(rows: Sequence[dict[str, Any]], kind: str) -> str:
    header = [
        "model",
        "setting",
        "against",
        "labels ratio per seed: median (IQR; range)",
        "fewer / more labels (sign test p)",
        "AULC difference: median (IQR)",
        "higher / lower AULC (p)",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        if row["kind"] != kind:
            continue
        ratio, gain = row["labels_ratio"], row["aulc_gain"]
        g = gain["spread"]
        lines.append(
            "| "
            + " | ".join(
                [
                    row["model"],
                    row["config"],
                    row["against"],
                    _range(ratio["spread"], ".2f"),
                    f"{ratio['wins']} / {ratio['losses']} ({ratio['sign_test_p']:.2f})",
                    f"{g['median']:+.4f} ({g['q1']:+.4f} to {g['q3']:+.4f})",
                    f"{gain['wins']} / {gain['losses']} ({gain['sign_test_p']:.2f})",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def accuracy_table(runs: Sequence[dict[str, Any]], label_counts: Sequence[int]) -> str:
    """Median test accuracy (over seeds) of each configuration at the given label counts."""
    by_config: dict[tuple[str, int, str], dict[int, list[float]]] = {}
    for run in runs:
        model, every, sampler = config_of(run)
        points = {int(p["labels"]): float(p["accuracy"]) for p in run["curve"]}
        row = by_config.setdefault((NAMES.get(model, model), every, sampler), {})
        for count in label_counts:
            if count in points:
                row.setdefault(count, []).append(points[count])
    header = ["model", "retrain every", "sampler", *(f"{n} labels" for n in label_counts)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (model, every, sampler), row in by_config.items():
        cells = [f"{statistics.median(row[n]):.3f}" if n in row else "" for n in label_counts]
        lines.append("| " + " | ".join([model, str(every or "-"), sampler, *cells]) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.label_efficiency_tables")
    parser.add_argument("name", help="results file name (bench/results/NAME.json)")
    parser.add_argument("--per-seed", action="store_true", help="list labels needed per seed")
    parser.add_argument(
        "--accuracy-at",
        type=int,
        nargs="+",
        metavar="LABELS",
        help="only print the median test accuracy at these label counts",
    )
    args = parser.parse_args(argv)
    document = json.loads((common.RESULTS_DIR / f"{args.name}.json").read_text())
    if args.accuracy_at:
        print(accuracy_table(document["runs"], args.accuracy_at))
        return 0
    print(summary_table(document["summary"], per_seed=args.per_seed))
    for kind in ("factor", "model"):
        if any(row["kind"] == kind for row in document.get("contrasts", [])):
            print()
            print(contrast_table(document["contrasts"], kind))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
