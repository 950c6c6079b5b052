"""Benchmark 4, ADDITIONAL offline row: label efficiency simulated without Label Studio.

    python -m bench.label_efficiency_offline [--seeds 0 1 ... 9] [--step 50] [--cap 1000]

NOT a replacement for `bench.label_efficiency`, which runs the loop through a real Label
Studio. This is the same experiment with the server taken out, to run the full grid of
samplers and seeds in minutes and to cross-check the server runs:

- the same data, seed labels, label cap, stopping rule and retrain step
  (`bench.label_efficiency`);
- the same model (the daemon's default factory, fitted on the labeled set) and the same
  scoring code (`aldaemon.model.training.score_pool`, with the version number as seed,
  as the daemon passes it), evaluated by `aldaemon.model.training.evaluate`;
- Label Studio's queue emulated as `projects/functions/next_task.py` serves it to a single
  annotator: lowest score first. Label Studio 1.23's bulk `import/predictions` DROPS the
  `cluster` field (data_import/api.py builds `Prediction(...)` without it; every stored
  prediction of the server runs lists `cluster: null`), so by default clusters are ignored
  here too. `--clusters-honoured` emulates what Label Studio would do if it kept them
  (the annotator's least-solved cluster first, where a solved task's cluster is the MAX
  over every prediction it ever had: LS's `Max('predictions__cluster')`, across
  versions): a what-if, never a measurement;
- random sampling: a seeded uniform draw from the unlabeled tasks.

What it leaves out: annotations, polls and uploads through the server, and the daemon's
cross-validation (it changes metrics, never the fitted model).

Ten seeds by default: on fine foods random order needs from ~500 to ~2,350 labels
depending on the seed, so 3 seeds cannot tell samplers apart (issue 14). Each sampler's
summary row adds the spread of labels needed and area, the paired per-seed ratios'
spread and the ratio of medians (`with_spreads`). `bench.label_efficiency_seeds` runs
the same loop with features computed once (its margin curves equal this bench's), fast
enough for a grid of models, cadences and batch samplers.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from aldaemon.model.training import evaluate, score_pool
from bench import common, curves
from bench import label_efficiency_stats as stats
from bench.label_efficiency import (
    DEFAULT_CAP,
    DEFAULT_SEED_LABELS,
    DEFAULT_STEP,
    TARGET_SHARE_OF_FULL,
    VARIANTS,
    Variant,
    fit_and_save,
    keep_labeling,
    reference_metrics,
    seed_review_indices,
    summarize,
)
from demo.data import Review, load_reviews

NAME = "label_efficiency_offline"


def served_order(
    *,
    candidates: Sequence[int],
    scores: dict[int, float],
    clusters: dict[int, int] | None,
    solved_clusters: Counter[int | None],
    count: int,
) -> list[int]:
    """The next `count` tasks Label Studio's uncertainty sampling serves one annotator.

    Without clusters: ascending score (ties by task id). With clusters: ascending
    (tasks the annotator solved in the task's cluster, score), recomputed after each
    pick, since each solved task moves its cluster back in line.
    """
    if clusters is None:
        return sorted(candidates, key=lambda t: (scores[t], t))[:count]
    remaining = set(candidates)
    solved = Counter(solved_clusters)
    picks: list[int] = []
    for _ in range(min(count, len(remaining))):
        pick = min(remaining, key=lambda t: (solved.get(clusters[t], 0), scores[t], t))
        remaining.discard(pick)
        solved[clusters[pick]] += 1
        picks.append(pick)
    return picks


def simulate(
    *,
    variant: Variant,
    seed: int,
    train: Sequence[Review],
    test: Sequence[Review],
    step: int,
    cap: int,
    seed_labels: int,
    target_accuracy: float,
    clusters_honoured: bool,
    work_dir: Path,
    on_version: Callable[[str, Sequence[int]], bool] | None = None,
) -> dict[str, Any]:
    """One learning curve: retrain every `step` labels, evaluating each model.

    Stops as `bench.label_efficiency` does: at the cap, or past it once the target
    accuracy is reached. `on_version(artifact path, labeled review indices)` is called
    after each fit (bench.stop_signal scores its stop set there); when it answers True,
    the run ends after that version's point.
    """
    started = time.perf_counter()
    labeled = list(seed_review_indices(seed, count=seed_labels, total=len(train)))
    rng = random.Random(seed)
    max_cluster: dict[int, int] = {}  # task -> max cluster over all its predictions so far
    curve: list[dict[str, float]] = []
    version = 0
    while True:
        version += 1
        artifact = fit_and_save(
            [train[i].text for i in labeled],
            [train[i].label for i in labeled],
            work_dir / f"{variant.name}-{seed}.joblib",
        )
        enough = on_version is not None and on_version(artifact, labeled)
        quality = evaluate(
            artifact_path=artifact, texts=[r.text for r in test], labels=[r.label for r in test]
        )
        curve.append({"labels": len(labeled), **quality})
        if enough:
            break
        done = set(labeled)
        pool = [i for i in range(len(train)) if i not in done]
        reached = any(p["accuracy"] >= target_accuracy for p in curve)
        if not keep_labeling(
            labels=len(labeled), cap=cap, reached_target=reached, pool_left=len(pool)
        ):
            break
        room = cap - len(labeled) if len(labeled) < cap else len(pool)
        count = min(step, room, len(pool))
        if variant.strategy is None:
            picks = rng.sample(pool, count)
        else:
            scored = score_pool(
                artifact_path=artifact,
                task_ids=pool,
                texts=[train[i].text for i in pool],
                strategy=variant.strategy,
                random_fraction=variant.random_fraction,
                clusters=variant.clusters,
                seed=version,
            )
            clusters = (
                dict(zip(scored.task_ids, scored.clusters, strict=True))
                if scored.clusters is not None and clusters_honoured
                else None
            )
            if clusters is not None:
                for task, cluster in clusters.items():
                    max_cluster[task] = max(max_cluster.get(task, cluster), cluster)
            solved: Counter[int | None] = Counter(max_cluster.get(i) for i in labeled)
            picks = served_order(
                candidates=pool,
                scores=dict(zip(scored.task_ids, scored.scores, strict=True)),
                clusters=clusters,
                solved_clusters=solved,
                count=count,
            )
        labeled.extend(picks)
    label_counts = Counter(train[i].label for i in labeled)
    return {
        "variant": variant.name,
        "seed": seed,
        "curve": curve,
        "final_label_counts": dict(sorted(label_counts.items())),
        "seconds": time.perf_counter() - started,
    }


def with_spreads(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary with, per sampler, the spread of labels needed, area and paired ratios,
    and the ratio of medians next to the median of per-seed ratios."""
    most = max(max(v or 0 for v in row["labels_needed"]) for row in summary["variants"])
    needed = {
        row["variant"]: [stats.needed_or_bound(v, most_labels=most) for v in row["labels_needed"]]
        for row in summary["variants"]
    }
    for row in summary["variants"]:
        row["labels_needed_spread"] = asdict(stats.spread(needed[row["variant"]]))
        row["area_spread"] = asdict(stats.spread(row["area"]))
        known = [r for r in row.get("ratio_to_random") or [] if r is not None]
        if known and "random" in needed:
            row["ratio_to_random_spread"] = asdict(stats.spread(known))
            row["ratio_of_medians"] = round(
                stats.ratio_of_medians(needed[row["variant"]], needed["random"]), 4
            )
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.label_efficiency_offline", description=__doc__
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--step", type=int, default=DEFAULT_STEP)
    parser.add_argument("--cap", type=int, default=DEFAULT_CAP)
    parser.add_argument("--seed-labels", type=int, default=DEFAULT_SEED_LABELS)
    parser.add_argument(
        "--clusters-honoured",
        action="store_true",
        help="what-if: serve by cluster as if Label Studio kept the uploaded clusters",
    )
    parser.add_argument("--name", default=NAME, help="results file name (bench/results/NAME.json)")
    args = parser.parse_args(argv)
    reviews = load_reviews()
    runs: list[dict[str, Any]] = []
    with common.work_directory(NAME, keep=False) as work_dir:
        reference = reference_metrics(reviews, work_dir)
        target = TARGET_SHARE_OF_FULL * reference["accuracy"]
        for seed in args.seeds:
            for name in args.variants:
                run = simulate(
                    variant=VARIANTS[name],
                    seed=seed,
                    train=reviews.train,
                    test=reviews.test,
                    step=args.step,
                    cap=args.cap,
                    seed_labels=args.seed_labels,
                    target_accuracy=target,
                    clusters_honoured=args.clusters_honoured,
                    work_dir=work_dir,
                )
                points = [(int(p["labels"]), p["accuracy"]) for p in run["curve"]]
                print(
                    f"[offline {name} seed {seed}] labels needed "
                    f"{curves.labels_needed(points, target=target)}, area "
                    f"{curves.normalized_area([p for p in points if p[0] <= args.cap]):.4f}, "
                    f"{run['seconds']:.0f} s"
                )
                runs.append(run)
    summary = with_spreads(summarize(runs, reference_accuracy=reference["accuracy"], cap=args.cap))
    payload: dict[str, Any] = {
        "mode": "offline simulation (no Label Studio): an ADDITIONAL row, not the benchmark",
        "settings": {
            "step": args.step,
            "cap": args.cap,
            "seed_labels": args.seed_labels,
            "clusters_honoured": args.clusters_honoured,
            "seeds": args.seeds,
            "variants": {name: VARIANTS[name].describe() for name in args.variants},
        },
        "reference": reference,
        "runs": runs,
        "summary": summary,
        "machine": common.machine_info(None),
    }
    for row in summary["variants"]:
        print(row["line"])
    common.write_result(args.name, payload, module=f"bench.{NAME}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
