"""Issue 16, measure (b): when the stop signal fires on the fine-food data, and what it costs.

    python -m bench.stop_signal [--seeds 0 1 2 3 4] [--cap 4000] [--name NAME]
    python -m bench.stop_signal --combine PART ... [--name NAME]

The stop signal (aldaemon.sync.stopping, Bloodgood & Vijay-Shanker 2009): a fixed random
stop set of 500 unlabeled tasks is predicted by every version; the project is stable once
Cohen's kappa between consecutive versions' predictions on it is >= 0.99 for 3 versions
in a row (the daemon's defaults). Measured per seed: the label count at which it first
fires, the test accuracy (1,000 `testing_data` reviews) of that version, and of the
version trained on twice as many labels; the verdict asks whether stopping at the signal
loses more than 1 accuracy point against going on to 2x.

Offline, through the label-efficiency simulation (`bench.label_efficiency_offline`: same
data, seed labels, margin sampling, retrain every 50 labels, same model and scoring code),
with the stop set predicted after every fit by the daemon's scoring code (`score_pool`,
argmax label, as `loop/team.score_stop_set` asks the worker) and the agreement and
"stable since" computed by the daemon's own functions (aldaemon.sync.stopping). The stop
set is drawn by `choose_stop_set` from the tasks unlabeled at the first version, as the
daemon draws it. A run ends once the default setting has fired and the labels have
doubled since (else at `--cap`); the other settings are then censored where they had not.
No Label Studio: a run to 3,500 labels through the server (4,000 predictions uploaded per
version) takes hours on this machine; the daemon's own stop signal against a real server
is covered by tests/labelstudio/test_teams.py (TestStopSignal).

Seeds can run as separate processes (`--seeds 1 --name PART1`, ...) and be joined with
`--combine PART0 PART1 ...`.

Other thresholds (kappa 0.95 and 0.98, and 5 versions) are computed from the same
predictions and reported as extra rows; the defaults are the verdict.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aldaemon.model.training import score_pool
from aldaemon.sync.stopping import (
    Agreement,
    choose_stop_set,
    consecutive_agreements,
    stable_since,
)
from bench import common, parts
from bench.label_efficiency import (
    DEFAULT_SEED_LABELS,
    DEFAULT_STEP,
    TARGET_SHARE_OF_FULL,
    VARIANTS,
    reference_metrics,
    seed_review_indices,
)
from bench.label_efficiency_offline import simulate
from demo.data import load_reviews

NAME = "stop_signal"
STOP_SET_SIZE = 500  # the daemon's default ([projects.stop] stop_set_size)
DEFAULT_SETTING = (0.99, 3)  # the daemon's defaults: kappa, versions
OTHER_SETTINGS = ((0.98, 3), (0.95, 3), (0.99, 5))
MAX_LOSS = 0.01  # the question: does stopping lose more than 1 point?
SAMPLER = "margin"  # the daemon's default strategy

History = list[tuple[str, dict[str, str]]]  # (version, {stop-set task id: predicted label})


def first_firing(agreements: Sequence[Agreement], *, kappa: float, versions: int) -> int | None:
    """Index (into the versions, 0 = the first) of the version at which the project is
    first "stable since" something; None when it never fires."""
    for i in range(len(agreements)):
        if stable_since(agreements[: i + 1], threshold=kappa, k=versions) is not None:
            return i + 1  # agreements[i] compares version i+1 with version i
    return None


def stopping_cost(
    curve: Sequence[dict[str, Any]], fired_at: int | None, *, max_loss: float
) -> dict[str, Any]:
    """Label count and accuracy where the signal fired, against the version at 2x labels.

    `curve[i]` is version i's {"labels", "accuracy"}. At 2x: the first version with at
    least twice the labels; None (censored) when the run never got there.
    """
    if fired_at is None:
        return {"fired": False, "labels": None}
    fired = curve[fired_at]
    twice = next((p for p in curve if p["labels"] >= 2 * fired["labels"]), None)
    result: dict[str, Any] = {
        "fired": True,
        "version_index": fired_at,
        "labels": fired["labels"],
        "accuracy": fired["accuracy"],
    }
    if twice is None:
        return {**result, "labels_2x": None, "accuracy_2x": None, "loss": None, "lost_more": None}
    loss = round(twice["accuracy"] - fired["accuracy"], 4)
    return {
        **result,
        "labels_2x": twice["labels"],
        "accuracy_2x": twice["accuracy"],
        "loss": loss,
        "lost_more": loss > max_loss,
    }


def analyse(history: History, curve: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Agreement per version and the cost of stopping under each threshold setting."""
    if len(history) != len(curve):
        raise ValueError(f"{len(history)} stop-set predictions for {len(curve)} versions")
    agreements = consecutive_agreements(history)
    settings = {}
    for kappa, versions in (DEFAULT_SETTING, *OTHER_SETTINGS):
        fired_at = first_firing(agreements, kappa=kappa, versions=versions)
        settings[f"kappa>={kappa} x{versions}"] = stopping_cost(curve, fired_at, max_loss=MAX_LOSS)
    return {
        "kappas": [None if a.kappa is None else round(a.kappa, 4) for a in agreements],
        "settings": settings,
    }


def stop_set_recorder(
    texts: Sequence[str], stop_set: Sequence[int], history: History
) -> Callable[[str, Sequence[int]], bool]:
    """An `on_version` hook: predict the stop set with each version, into `history`.

    It answers True (end the run) once the default setting has fired and this version
    has twice the labels of the one it fired at: nothing later is needed.
    """
    label_counts: list[int] = []

    def record(artifact: str, labeled: Sequence[int]) -> bool:
        scored = score_pool(
            artifact_path=artifact, task_ids=stop_set, texts=texts, strategy=SAMPLER
        )
        predictions = dict(zip(map(str, scored.task_ids), scored.labels, strict=True))
        history.append((f"v{len(history) + 1}", predictions))
        label_counts.append(len(labeled))
        kappa, versions = DEFAULT_SETTING
        fired_at = first_firing(consecutive_agreements(history), kappa=kappa, versions=versions)
        return fired_at is not None and label_counts[-1] >= 2 * label_counts[fired_at]

    return record


# ---- offline --------------------------------------------------------------------------------


def run_offline(args: argparse.Namespace, work_dir: Path) -> tuple[dict[str, Any], list[Any]]:
    reviews = load_reviews()
    train = reviews.train
    reference = reference_metrics(reviews, work_dir)
    runs = []
    for seed in args.seeds:
        seeded = set(seed_review_indices(seed, count=DEFAULT_SEED_LABELS, total=len(train)))
        stop_set = choose_stop_set(
            [i for i in range(len(train)) if i not in seeded], size=STOP_SET_SIZE, seed=seed
        )
        history: History = []
        run = simulate(
            variant=VARIANTS[SAMPLER],
            seed=seed,
            train=train,
            test=reviews.test,
            step=DEFAULT_STEP,
            cap=args.cap,
            seed_labels=DEFAULT_SEED_LABELS,
            target_accuracy=TARGET_SHARE_OF_FULL * reference["accuracy"],
            work_dir=work_dir,
            clusters_honoured=False,
            on_version=stop_set_recorder([train[i].text for i in stop_set], stop_set, history),
        )
        runs.append(_seed_result(seed, run["curve"], history, seconds=run["seconds"]))
    return reference, runs


def _seed_result(
    seed: int, curve: list[dict[str, Any]], history: History, *, seconds: float
) -> dict[str, Any]:
    analysis = analyse(history, curve)
    line = analysis["settings"][_setting_name(DEFAULT_SETTING)]
    print(f"[seed {seed}] {_line(line)} ({seconds:.0f} s)")
    return {
        "seed": seed,
        "curve": [{"labels": p["labels"], "accuracy": round(p["accuracy"], 4)} for p in curve],
        **analysis,
        "seconds": round(seconds, 1),
    }


def _setting_name(setting: tuple[float, int]) -> str:
    return f"kappa>={setting[0]} x{setting[1]}"


def _line(cost: dict[str, Any]) -> str:
    if not cost["fired"]:
        return "never fired"
    if cost["labels_2x"] is None:
        return f"fired at {cost['labels']} labels (accuracy {cost['accuracy']:.3f}); 2x not run"
    return (
        f"fired at {cost['labels']} labels, accuracy {cost['accuracy']:.3f}; at "
        f"{cost['labels_2x']} labels {cost['accuracy_2x']:.3f} (loss {cost['loss']:+.3f})"
    )


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per setting: per-seed firing label counts and losses, and their medians."""
    summary = {}
    for setting in (DEFAULT_SETTING, *OTHER_SETTINGS):
        name = _setting_name(setting)
        costs = [run["settings"][name] for run in runs]
        labels = [c["labels"] for c in costs]
        losses = [c.get("loss") for c in costs]
        summary[name] = {
            "labels_per_seed": labels,
            "median_labels": _median(labels),
            "accuracy_per_seed": [c.get("accuracy") for c in costs],
            "accuracy_2x_per_seed": [c.get("accuracy_2x") for c in costs],
            "loss_per_seed": losses,
            "median_loss": _median(losses),
            "seeds_losing_more_than_1_point": sum(1 for c in costs if c.get("lost_more")),
            "seeds_never_fired": sum(1 for c in costs if not c["fired"]),
            "seeds_censored_2x": sum(1 for c in costs if c["fired"] and c["labels_2x"] is None),
        }
    return summary


def _median(values: Sequence[float | int | None]) -> float | None:
    known = [float(v) for v in values if v is not None]
    return round(statistics.median(known), 4) if known else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}", description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument(
        "--cap", type=int, default=4000, help="label on to this many (4000: every review)"
    )
    parser.add_argument(
        "--name", default=None, help="results file name (default stop_signal_offline)"
    )
    parts.add_combine_option(parser)
    args = parser.parse_args(argv)
    if args.combine:
        parts.join_parts(
            args.combine,
            name=args.name or f"{NAME}_offline",
            module=f"bench.{NAME}",
            same_settings=("cap", "step", "seed_labels", "stop_set_size"),
            summarize=summarize,
        )
        return 0
    with common.work_directory(NAME, keep=False) as work_dir:
        reference, runs = run_offline(args, work_dir)
    name = args.name or f"{NAME}_offline"
    summary = summarize(runs)
    for setting, row in summary.items():
        print(f"{setting}: {row}")
    payload = {
        "mode": "offline simulation (no Label Studio), the daemon's model and stop functions",
        "settings": {
            "sampler": SAMPLER,
            "step": DEFAULT_STEP,
            "seed_labels": DEFAULT_SEED_LABELS,
            "cap": args.cap,
            "stop_set_size": STOP_SET_SIZE,
            "default": _setting_name(DEFAULT_SETTING),
            "seeds": args.seeds,
        },
        "reference": reference,
        "runs": runs,
        "summary": summary,
        "machine": common.machine_info(None),
    }
    common.write_result(name, payload, module=f"bench.{NAME}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
