"""Join results files of seeds that ran as separate processes into one (bench.team_noise,
bench.stop_signal): the runs are pooled by seed, the summary recomputed over all of them,
and each part's command and finish time kept, so the joined file says how it was made."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import Any

from bench import common

SAME_IN_EVERY_PART = ("mode",)


def add_combine_option(parser: argparse.ArgumentParser) -> None:
    """`--combine PART ...`: the way a benchmark's main asks for `join_parts`."""
    parser.add_argument(
        "--combine",
        nargs="+",
        metavar="PART",
        help="run nothing: join the runs of bench/results/PART.json files (seeds run as "
        "separate processes, same settings) into bench/results/NAME.json",
    )


def join_parts(
    parts: Sequence[str],
    *,
    name: str,
    module: str,
    same_settings: Sequence[str],
    summarize: Callable[[list[dict[str, Any]]], dict[str, Any]],
) -> dict[str, Any]:
    """Write bench/results/NAME.json from bench/results/PART.json files; return it.

    Every part must have the same mode and the same `same_settings`, and no seed twice;
    a part written before its run ended (`complete` false) contributes the seeds it has.
    """
    documents = [json.loads((common.RESULTS_DIR / f"{p}.json").read_text()) for p in parts]
    first = documents[0]
    for part, doc in zip(parts, documents, strict=True):
        differing = [k for k in SAME_IN_EVERY_PART if doc[k] != first[k]] + [
            k for k in same_settings if doc["settings"][k] != first["settings"][k]
        ]
        if differing:
            raise SystemExit(f"{part} differs from {parts[0]} in {', '.join(differing)}")
    runs = sorted((run for doc in documents for run in doc["runs"]), key=lambda r: r["seed"])
    seeds = [run["seed"] for run in runs]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"a seed appears in two parts: {seeds}")
    payload = {
        **{k: v for k, v in first.items() if k not in ("benchmark", "finished_at", "command")},
        "complete": True,
        "settings": {**first["settings"], "seeds": seeds},
        "runs": runs,
        "summary": summarize(runs),
        "parts": [
            {
                "name": p,
                "command": d["command"],
                "finished_at": d["finished_at"],
                "seeds": [r["seed"] for r in d["runs"]],
            }
            for p, d in zip(parts, documents, strict=True)
        ],
    }
    for key, value in payload["summary"].items():
        print(f"{key}: {value}")
    common.write_result(name, payload, module=module)
    return payload
