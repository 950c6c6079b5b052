"""Benchmark 4: label efficiency through a real Label Studio.

    python -m bench.label_efficiency [--seeds 0 1 2] [--variant-seeds 0] [--step 50] [--cap 1000]
    python -m bench.label_efficiency --merge-from OTHER [--name label_efficiency]

The fine-food project (modeldata `training_data`, 4,000 reviews) is labeled by a simulated
annotator who asks `GET /api/projects/{id}/next` and answers with the true label, once per
sampler and seed, each in its own project on one private server:

- daemon samplers (margin, least_confidence, entropy, margin + random_fraction +
  clusters): the daemon (`Runtime.run_cycle`) retrains every `step` labels
  (min_new_annotations = step, min_interval = 0), uploads a prediction for every
  unlabeled task and activates it with Uncertainty sampling; the annotator takes what
  Label Studio serves;
- random: the project's sampling is "Uniform sampling" and the daemon is not involved;
  the same model (the daemon's default factory, fitted as `train_and_save` fits it) is
  trained on the same label counts for evaluation.

Both start from the same `seed_labels` reviews (chosen by the seed). After every retrain
the model is evaluated on the 1,000 `testing_data` reviews. The learning curve, and its
normalised area, runs from the seed labels to `cap` labels; a run that has not reached
the target accuracy (99 % of the accuracy of the model trained on all 4,000 reviews) by
the cap labels on, same step, until it does, so that "labels needed" is never a bound
(with all 4,000 labeled the model IS the reference). Reported per sampler: labels needed,
area, and the ratio of labels needed against random on the same seed (target: median
<= 0.55).

More seeds for some samplers can be run on their own, into another results file
(`--variants entropy --variant-seeds 1 2 --name OTHER`: only the samplers named run, and
margin and random take `--seeds`, the others `--variant-seeds`), and then folded into the
main file with `--merge-from OTHER`, which labels nothing: it checks that both were run
with the same step, cap and seed labels and share no (sampler, seed), adds the runs,
records the other file's command, and recomputes the summary (see `merge`).

The loop is synchronous: the annotator waits while the daemon retrains, as if the cycle
were instant. The daemon's own prune task is off (prune_per_cycle = 0): deleting a 4,000
prediction version takes about 40 s of server time per retrain and does not change what
is served (only the active version counts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shlex
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aldaemon.model.artifacts import save_artifact
from aldaemon.model.protocol import DEFAULT_FACTORY as DEFAULT_MODEL
from aldaemon.model.protocol import build_model
from aldaemon.model.training import evaluate
from aldaemon.secret import Secret
from aldaemon.service.runtime import Runtime
from bench import common, curves
from demo.data import Review, ReviewSets, load_reviews
from demo.labelstudio import DemoGateway
from tests.lsserver import LabelStudioClient, LabelStudioServer

NAME = "label_efficiency"
TARGET_RATIO = 0.55
TARGET_SHARE_OF_FULL = 0.99
DEFAULT_STEP = 50
DEFAULT_CAP = 1000
DEFAULT_SEED_LABELS = 50


@dataclass(frozen=True)
class Variant:
    """A sampler: random (strategy None) or the daemon with these prediction options."""

    name: str
    strategy: str | None
    random_fraction: float = 0.0
    clusters: int = 0

    def describe(self) -> str:
        if self.strategy is None:
            return "Uniform sampling, no daemon ordering"
        extras = []
        if self.random_fraction:
            extras.append(f"random_fraction = {self.random_fraction:g}")
        if self.clusters:
            extras.append(f"clusters = {self.clusters}")
        return " + ".join([f"daemon, strategy = {self.strategy}", *extras])


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("random", None),
        Variant("margin", "margin"),
        Variant("least_confidence", "least_confidence"),
        Variant("entropy", "entropy"),
        Variant("margin+random_fraction+clusters", "margin", random_fraction=0.1, clusters=10),
    )
}
PRIMARY = ("margin", "random")


def seed_review_indices(seed: int, *, count: int, total: int) -> list[int]:
    """The seed labels of one seed: the same reviews for every sampler."""
    return random.Random(f"seed-labels-{seed}").sample(range(total), count)


def keep_labeling(*, labels: int, cap: int, reached_target: bool, pool_left: int) -> bool:
    """Label on until the cap, then only until the target is reached or the pool is empty.

    The learning curve (and its area) stops at the cap; going on after it only serves to
    find "labels needed" for a sampler that has not reached the target yet, so that no
    run is censored: with every review labeled, the model IS the reference model.
    """
    if pool_left <= 0:
        return False
    return labels < cap or not reached_target


def reference_metrics(reviews: ReviewSets, work_dir: Path) -> dict[str, float]:
    """Test-set metrics of the model trained on every training review: the target's 100 %."""
    metrics = evaluate(
        artifact_path=fit_and_save(
            [r.text for r in reviews.train],
            [r.label for r in reviews.train],
            work_dir / "all.joblib",
        ),
        texts=[r.text for r in reviews.test],
        labels=[r.label for r in reviews.test],
    )
    print(f"model on all {len(reviews.train)} training reviews: {metrics}")
    return metrics


def fit_and_save(texts: Sequence[str], labels: Sequence[str], path: Path) -> str:
    """The daemon's default model fitted on the labeled set, saved as the daemon saves it.

    The same fitted model `train_and_save` makes, without its cross-validation (which
    only computes metrics): for the samplers the daemon does not train itself.
    """
    model = build_model(DEFAULT_MODEL)
    model.fit(list(texts), list(labels))
    save_artifact(
        model=model,
        classes=tuple(str(c) for c in model.classes_),
        factory_ref=DEFAULT_MODEL,
        path=str(path),
    )
    return str(path)


# ---- one run ------------------------------------------------------------------------------


async def run_one(
    *,
    server: LabelStudioServer,
    client: LabelStudioClient,
    variant: Variant,
    seed: int,
    train: Sequence[Review],
    test: Sequence[Review],
    step: int,
    cap: int,
    seed_labels: int,
    target_accuracy: float,
    max_labels: int | None,
    work_dir: Path,
) -> dict[str, Any]:
    started = time.perf_counter()
    tasks = [common.BenchTask(review_id=i, text=r.text, label=r.label) for i, r in enumerate(train)]
    project_id, by_task_id = common.create_project(
        client, title=f"efficiency {variant.name} seed {seed}", tasks=tasks
    )
    task_of_review = {task.review_id: task_id for task_id, task in by_task_id.items()}
    labeled: dict[int, str] = {}
    for review_index in seed_review_indices(seed, count=seed_labels, total=len(train)):
        task_id = task_of_review[review_index]
        common.annotate(client, task_id, by_task_id[task_id].label)
        labeled[task_id] = by_task_id[task_id].label
    test_texts, test_labels = [r.text for r in test], [r.label for r in test]
    steps: list[dict[str, Any]] = []
    curve: list[dict[str, float]] = []
    async with DemoGateway(url=server.url, token=Secret(server.legacy_token)) as annotator:

        async def label_served(count: int) -> tuple[float, list[int]]:
            """The annotator takes `count` tasks as Label Studio serves them."""
            began = time.perf_counter()
            served: list[int] = []
            for _ in range(count):
                task = await annotator.next_task(project_id)
                if task is None:
                    break
                task_id = int(task["id"])
                label = by_task_id[task_id].label
                await annotator.create_annotation(task_id, schema=common.SCHEMA, label=label)
                labeled[task_id] = label
                served.append(task_id)
            return time.perf_counter() - began, served

        def go_on() -> bool:
            return keep_labeling(
                labels=len(labeled),
                cap=cap,
                reached_target=any(p["accuracy"] >= target_accuracy for p in curve),
                pool_left=min(len(by_task_id), max_labels or len(by_task_id)) - len(labeled),
            )

        def next_count() -> int:
            room = cap - len(labeled) if len(labeled) < cap else len(by_task_id) - len(labeled)
            return min(step, room)

        if variant.strategy is None:
            client.call("PATCH", f"/api/projects/{project_id}/", {"sampling": "Uniform sampling"})
            while True:
                began = time.perf_counter()
                artifact = fit_and_save(
                    [by_task_id[t].text for t in labeled],
                    list(labeled.values()),
                    work_dir / f"random-{seed}.joblib",
                )
                quality = evaluate(artifact_path=artifact, texts=test_texts, labels=test_labels)
                train_seconds = time.perf_counter() - began
                curve.append({"labels": len(labeled), **quality})
                if not go_on():
                    break
                annotate_seconds, _ = await label_served(next_count())
                steps.append({"annotate_s": annotate_seconds, "train_eval_s": train_seconds})
        else:
            config = common.daemon_config(
                directory=work_dir / f"daemon-{variant.name}-{seed}",
                server=server,
                project_id=project_id,
                retrain={"min_new_annotations": step, "min_interval": 0},
                predictions={
                    "strategy": variant.strategy,
                    "random_fraction": variant.random_fraction,
                    "clusters": variant.clusters,
                    "prune_per_cycle": 0,
                },
            )
            project = config.projects[0]
            async with Runtime(config) as runtime:
                assert runtime.store is not None
                while True:
                    began = time.perf_counter()
                    report = await runtime.run_cycle(project)
                    cycle_seconds = time.perf_counter() - began
                    if report.outcome != "ok" or report.version is None:
                        raise RuntimeError(
                            f"no version at {len(labeled)} labels: {report.outcome} "
                            f"{report.decision} {report.error or ''}"
                        )
                    version = runtime.store.get_version(project_id, report.version)
                    assert version is not None and version.artifact_path is not None
                    quality = evaluate(
                        artifact_path=version.artifact_path, texts=test_texts, labels=test_labels
                    )
                    if version.n_labels != len(labeled):
                        raise RuntimeError(
                            f"{version.name} trained on {version.n_labels} labels, "
                            f"the annotator gave {len(labeled)}"
                        )
                    curve.append({"labels": len(labeled), **quality})
                    if not go_on():
                        break
                    scores = {
                        p.task_id: p.score
                        for p in runtime.store.load_predictions(project_id, version.name)
                    }
                    annotate_seconds, served = await label_served(next_count())
                    steps.append(
                        {
                            "version": version.name,
                            "cycle_s": cycle_seconds,
                            "cycle_steps_s": {k: round(v, 3) for k, v in report.seconds.items()},
                            "annotate_s": annotate_seconds,
                            # Evidence that Label Studio served the lowest score first:
                            # how many unlabeled tasks scored strictly lower (0 expected
                            # without clusters).
                            "first_served_rank": served_rank(scores, served[0]) if served else None,
                        }
                    )
    label_counts = Counter(labeled.values())
    return {
        "variant": variant.name,
        "seed": seed,
        "project_id": project_id,
        "curve": curve,
        "steps": steps,
        "final_label_counts": dict(sorted(label_counts.items())),
        "seconds": time.perf_counter() - started,
    }


def served_rank(scores: dict[int, float], task_id: int) -> int | None:
    """How many scored tasks scored strictly lower than `task_id` (None: it has no score)."""
    if task_id not in scores:
        return None
    return sum(1 for score in scores.values() if score < scores[task_id])


# ---- summary --------------------------------------------------------------------------------


def summarize(
    runs: Sequence[dict[str, Any]],
    *,
    reference_accuracy: float,
    cap: int,
    metric: str = "accuracy",
) -> dict[str, Any]:
    """Per sampler: labels needed and area per seed, medians, and the ratio against random.

    `metric` names the curve's quality figure (each curve point's key); the target is
    99 % of `reference_accuracy`, the value of that figure for the model trained on the
    whole pool (bench/label_efficiency_shapes.py passes micro-F1 or entity F1).
    """
    target = TARGET_SHARE_OF_FULL * reference_accuracy
    # A run that never reached the target (only possible with --max-labels) counts as
    # having needed the most labels any run was given: a bound, flagged as censored.
    most_labels = max(int(p["labels"]) for run in runs for p in run["curve"])
    needed: dict[tuple[str, int], int | None] = {}
    areas: dict[tuple[str, int], float] = {}
    for run in runs:
        points = [(int(p["labels"]), float(p[metric])) for p in run["curve"]]
        needed[(run["variant"], run["seed"])] = curves.labels_needed(points, target=target)
        areas[(run["variant"], run["seed"])] = curves.normalized_area(
            [p for p in points if p[0] <= cap]
        )
    rows = []
    for name in dict.fromkeys(run["variant"] for run in runs):
        seeds = sorted(seed for variant, seed in needed if variant == name)
        mine = [needed[(name, s)] for s in seeds]
        row: dict[str, Any] = {
            "variant": name,
            "seeds": seeds,
            "labels_needed": mine,
            "median_labels_needed": _median_or_none(mine),
            "area": [round(areas[(name, s)], 4) for s in seeds],
            "median_area": round(statistics.median(areas[(name, s)] for s in seeds), 4),
        }
        paired = [s for s in seeds if ("random", s) in needed]
        if name != "random" and paired:
            comparison = curves.compare_to_random(
                [needed[(name, s)] for s in paired],
                [needed[("random", s)] for s in paired],
                cap=most_labels,
            )
            row["ratio_to_random"] = [None if r is None else round(r, 3) for r in comparison.ratios]
            row["median_ratio_to_random"] = (
                None if comparison.median_ratio is None else round(comparison.median_ratio, 3)
            )
            row["ratio_censored"] = comparison.censored
            row["target_met"] = (
                comparison.median_ratio is not None and comparison.median_ratio <= TARGET_RATIO
            )
        row["line"] = _line(row)
        rows.append(row)
    return {
        f"target_{metric}": round(target, 4),
        f"reference_{metric}": round(reference_accuracy, 4),
        "variants": rows,
    }


def _median_or_none(values: Sequence[int | None]) -> float | str | None:
    """Median labels needed; a run that never reached the target counts as infinitely many."""
    if not values:
        return None
    middle = statistics.median(float("inf") if v is None else float(v) for v in values)
    return "not reached" if middle == float("inf") else middle


def _line(row: dict[str, Any]) -> str:
    needed = ", ".join("not reached" if n is None else str(n) for n in row["labels_needed"])
    text = (
        f"{row['variant']:>32}: labels needed {needed} (median {row['median_labels_needed']}), "
        f"area {row['median_area']}"
    )
    if "median_ratio_to_random" in row:
        verdict = "met" if row["target_met"] else "MISSED"
        censored = " (censored)" if row["ratio_censored"] else ""
        text += f", x{row['median_ratio_to_random']} random{censored}: target {verdict}"
    return text


# ---- main -----------------------------------------------------------------------------------


def plan(
    *, seeds: Sequence[int], variant_seeds: Sequence[int], variants: Sequence[str]
) -> list[tuple[str, int]]:
    """(variant, seed) in run order: seed by seed, so slow drift hits every sampler alike."""
    order: list[tuple[str, int]] = []
    for seed in sorted(set(seeds) | set(variant_seeds)):
        for name in variants:
            wanted = seeds if name in PRIMARY else variant_seeds
            if seed in wanted:
                order.append((name, seed))
    return order


async def run(args: argparse.Namespace) -> dict[str, Any]:
    reviews = load_reviews()
    runs: list[dict[str, Any]] = []
    with (
        common.work_directory(NAME, keep=args.keep) as work_dir,
        common.label_studio(work_dir) as server,
    ):
        log_stream = common.quiet_daemon_logs(work_dir / "daemon.log")
        client = LabelStudioClient(server)
        try:
            reference = reference_metrics(reviews, work_dir)
            order = plan(seeds=args.seeds, variant_seeds=args.variant_seeds, variants=args.variants)
            for name, seed in order:
                result = await run_one(
                    server=server,
                    client=client,
                    variant=VARIANTS[name],
                    seed=seed,
                    train=reviews.train,
                    test=reviews.test,
                    step=args.step,
                    cap=args.cap,
                    seed_labels=args.seed_labels,
                    target_accuracy=TARGET_SHARE_OF_FULL * reference["accuracy"],
                    max_labels=args.max_labels,
                    work_dir=work_dir,
                )
                points = [(int(p["labels"]), p["accuracy"]) for p in result["curve"]]
                target = TARGET_SHARE_OF_FULL * reference["accuracy"]
                print(
                    f"[{name} seed {seed}] labels needed "
                    f"{curves.labels_needed(points, target=target)}"
                    f", area {curves.normalized_area([p for p in points if p[0] <= args.cap]):.4f}"
                    ", final accuracy "
                    f"{points[-1][1]:.3f}, {result['seconds'] / 60:.1f} min",
                    flush=True,
                )
                runs.append(result)
                # Partial results survive an interrupted run.
                _write(args, reference, runs, machine=None)
        finally:
            log_stream.close()
        return _write(args, reference, runs, machine=common.machine_info(server))


def _write(
    args: argparse.Namespace,
    reference: dict[str, float],
    runs: list[dict[str, Any]],
    *,
    machine: dict[str, Any] | None,
) -> dict[str, Any]:
    payload = {
        "mode": "through a real Label Studio",
        "complete": machine is not None,
        "settings": {
            "step": args.step,
            "cap": args.cap,
            "seed_labels": args.seed_labels,
            "max_labels": args.max_labels,
            "seeds": args.seeds,
            "variant_seeds": args.variant_seeds,
            "variants": {name: VARIANTS[name].describe() for name in args.variants},
        },
        "reference": reference,
        "runs": runs,
        "summary": summarize(runs, reference_accuracy=reference["accuracy"], cap=args.cap),
        "machine": machine,
    }
    common.write_result(args.name, payload, module=f"bench.{NAME}")
    return payload


def resummarize(name: str) -> dict[str, Any]:
    """Recompute the summary of a results file from its runs (the runs stay untouched).

    The summary is a pure function of the runs and the settings, so a file written by an
    older summary can be brought up to date without labeling anything again.
    """
    path = common.RESULTS_DIR / f"{name}.json"
    document: dict[str, Any] = json.loads(path.read_text())
    document["summary"] = summarize(
        document["runs"],
        reference_accuracy=document["reference"]["accuracy"],
        cap=document["settings"]["cap"],
    )
    path.write_text(json.dumps(document, indent=2) + "\n")
    return document


# Settings that must be identical for two runs to share one summary.
MERGE_KEYS = ("step", "cap", "seed_labels", "max_labels")


def merge(
    document: dict[str, Any], other: dict[str, Any], *, other_name: str, command: str
) -> dict[str, Any]:
    """`document` with the runs of `other` (a separate run of more samplers or seeds) added.

    The two must have been run with the same step, cap, seed labels and label limit, have
    the same reference model and share no (sampler, seed); both must be complete. The
    settings' `seeds` and `variant_seeds` then say which seeds the runs have (primary and
    other samplers), `merged` records where the added runs came from (their file, command,
    time and machine) and by which `command` they were added, and the summary is
    recomputed, so a sampler's ratio pairs it with random on the same seed whichever run
    each came from. The document's own `command`, `finished_at` and `machine` stay those
    of its first run.
    """
    for name, doc in (("the merge target", document), (other_name, other)):
        if not doc.get("complete"):
            raise ValueError(f"{name} is an interrupted run")
    mine, theirs = document["settings"], other["settings"]
    differing = [key for key in MERGE_KEYS if mine[key] != theirs[key]]
    if differing:
        raise ValueError(f"{other_name} differs in {', '.join(differing)}")
    if document["reference"]["accuracy"] != other["reference"]["accuracy"]:
        raise ValueError(f"{other_name} has another reference accuracy")
    had = {(run["variant"], run["seed"]) for run in document["runs"]}
    again = sorted(
        f"{v} seed {s}" for v, s in had & {(r["variant"], r["seed"]) for r in other["runs"]}
    )
    if again:
        raise ValueError(f"{other_name} repeats {', '.join(again)}")
    if any(mine["variants"].get(k, v) != v for k, v in theirs["variants"].items()):
        raise ValueError(f"{other_name} describes a sampler differently")
    runs = [*document["runs"], *other["runs"]]
    primary_seeds = sorted({r["seed"] for r in runs if r["variant"] in PRIMARY})
    other_seeds = sorted({r["seed"] for r in runs if r["variant"] not in PRIMARY})
    merged = {
        **document,
        "settings": {
            **mine,
            "seeds": primary_seeds,
            "variant_seeds": other_seeds,
            "variants": {**mine["variants"], **theirs["variants"]},
        },
        "runs": runs,
        "merged": [
            *document.get("merged", []),
            {
                "name": other_name,
                "command": other["command"],
                "finished_at": other["finished_at"],
                "runs": [f"{r['variant']} seed {r['seed']}" for r in other["runs"]],
                "machine": other["machine"],
                "merged_by": command,
            },
        ],
    }
    merged["summary"] = summarize(
        runs, reference_accuracy=document["reference"]["accuracy"], cap=mine["cap"]
    )
    return merged


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.label_efficiency", description=__doc__)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds for margin and random"
    )
    parser.add_argument(
        "--variant-seeds", type=int, nargs="+", default=[0], help="seeds for the other samplers"
    )
    parser.add_argument("--step", type=int, default=DEFAULT_STEP)
    parser.add_argument("--cap", type=int, default=DEFAULT_CAP)
    parser.add_argument("--seed-labels", type=int, default=DEFAULT_SEED_LABELS)
    parser.add_argument(
        "--max-labels",
        type=int,
        default=None,
        help="hard stop even before the target (a smoke run; default: every review)",
    )
    parser.add_argument("--name", default=NAME, help="results file name (bench/results/NAME.json)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--resummarize",
        action="store_true",
        help="only recompute the summary of bench/results/NAME.json from its runs",
    )
    parser.add_argument(
        "--merge-from",
        metavar="OTHER",
        help="label nothing: add the runs of bench/results/OTHER.json (same step, cap, seed "
        "labels; other samplers or seeds) to bench/results/NAME.json and recompute its summary",
    )
    args = parser.parse_args(argv)
    if args.merge_from:
        arguments = sys.argv[1:] if argv is None else list(argv)
        target = common.RESULTS_DIR / f"{args.name}.json"
        document = merge(
            json.loads(target.read_text()),
            json.loads((common.RESULTS_DIR / f"{args.merge_from}.json").read_text()),
            other_name=args.merge_from,
            command=f".venv/bin/python -m bench.{NAME} {shlex.join(arguments)}",
        )
        target.write_text(json.dumps(document, indent=2) + "\n")
        for row in document["summary"]["variants"]:
            print(row["line"])
        return 0
    if args.resummarize:
        for row in resummarize(args.name)["summary"]["variants"]:
            print(row["line"])
        return 0
    if (args.cap - args.seed_labels) % args.step:
        parser.error("cap - seed-labels must be a multiple of step (every step must retrain)")
    if args.seed_labels < args.step:
        parser.error("seed-labels must be >= step, so that the seed labels train the first model")
    payload = asyncio.run(run(args))
    for row in payload["summary"]["variants"]:
        print(row["line"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
