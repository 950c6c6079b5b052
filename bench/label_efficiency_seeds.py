"""Label efficiency over many seeds, offline: models x samplers x retrain cadence (issue 14).

    python -m bench.label_efficiency_seeds [--seeds 0 1 ... 9] [--models REF ...]
        [--samplers random margin ...] [--retrain-every 50 ...] [--eval-every 25]
        [--cap 1000] [--name NAME]
    python -m bench.label_efficiency_seeds --name NAME --combine OTHER ...   # pool seeds
    python -m bench.label_efficiency_seeds --name NAME --resummarize

Models are factory refs (default: today's model and the hashed candidates of
`bench.label_efficiency_features`); samplers are those of `bench.label_efficiency_batches`
(random, random_legacy, margin, margin+random_fraction_0.1 and the what-ifs
margin_kmeans and margin_dedup).

The experiment of `bench.label_efficiency_offline` (no Label Studio; fine-food reviews,
4,000 to label, 1,000 held out; 50 seed labels chosen by the seed, the same for every
sampler; the target is 99 % of the accuracy of the same model trained on all 4,000),
made fast enough for 10+ seeds and a grid of settings:

- features are computed once per model (`bench.label_efficiency_features`; the cached
  fit is checked against the factory's real pipeline at the start of each run and the
  largest probability difference is recorded);
- the retrain cadence (`--retrain-every`, the daemon's `min_new_annotations`) is apart
  from the evaluation grid (`--eval-every`): every `eval_every` labels a model is
  fitted on the labels so far and scored on the held-out reviews, whatever the cadence,
  so that "labels needed" has the same resolution for every cadence; the sampler only
  sees the model of the last retrain;
- a run labels until `cap`, and past it only until the target is reached
  (`bench.label_efficiency.keep_labeling`), so labels needed is never censored; the
  area under the learning curve (AULC) runs from the seed labels to `cap` for all.

Per (model, cadence, sampler) the summary gives labels needed and AULC per seed with
their spread, and the comparison with random on the same seeds; the contrasts pair each
setting with the daemon's (margin, every 50) and each model with today's
(`bench.label_efficiency_summary`, `bench.label_efficiency_stats`). Each run is written
as soon as it ends; `bench.label_efficiency_tables` prints a results file as markdown.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import sys
import time
from collections.abc import Sequence
from typing import Any

from sklearn.metrics import accuracy_score, f1_score

from bench import common
from bench.label_efficiency import (
    DEFAULT_CAP,
    DEFAULT_SEED_LABELS,
    TARGET_SHARE_OF_FULL,
    keep_labeling,
    seed_review_indices,
)
from bench.label_efficiency_batches import SAMPLERS, PickContext, random_order
from bench.label_efficiency_features import MODELS, NAMES, CachedFeatures, matches_pipeline
from bench.label_efficiency_summary import (
    common_target,
    contrast_line,
    contrasts,
    figures,
    line,
    summarize,
)
from demo.data import load_reviews

NAME = "label_efficiency_seeds"


class Data:
    """The reviews, and each model's cached features over training + test texts."""

    def __init__(self) -> None:
        reviews = load_reviews()
        self.train_labels = [r.label for r in reviews.train]
        self.test_labels = [r.label for r in reviews.test]
        self.texts = [r.text for r in (*reviews.train, *reviews.test)]
        self.total = len(reviews.train)
        self.test_rows = list(range(self.total, len(self.texts)))
        self._caches: dict[str, CachedFeatures] = {}

    def cache(self, model: str) -> CachedFeatures:
        if model not in self._caches:
            self._caches[model] = CachedFeatures(model, self.texts)
        return self._caches[model]

    def quality(
        self, cache: CachedFeatures, labeled: Sequence[int]
    ) -> tuple[Any, dict[str, float]]:
        fitted = cache.fit(labeled, [self.train_labels[i] for i in labeled])
        proba = fitted.predict_proba(cache.rows(self.test_rows))
        predicted = [fitted.classes[i] for i in proba.argmax(axis=1)]
        return fitted, {
            "accuracy": float(accuracy_score(self.test_labels, predicted)),
            "macro_f1": float(f1_score(self.test_labels, predicted, average="macro")),
        }


def simulate(
    data: Data,
    *,
    model: str,
    sampler: str,
    seed: int,
    retrain_every: int,
    eval_every: int,
    cap: int,
    seed_labels: int,
    target: float,
) -> dict[str, Any]:
    """One learning curve; see the module docstring for the protocol."""
    started = time.perf_counter()
    cache = data.cache(model)
    labeled = list(seed_review_indices(seed, count=seed_labels, total=data.total))
    order = random_order(seed, data.total)
    rng = random.Random(seed)
    curve: list[dict[str, float]] = []
    queue: list[int] = []
    version = 0
    while True:
        fitted, quality = data.quality(cache, labeled)
        curve.append({"labels": len(labeled), **quality})
        done = set(labeled)
        pool = [i for i in range(data.total) if i not in done]
        reached = any(p["accuracy"] >= target for p in curve)
        if not keep_labeling(
            labels=len(labeled), cap=cap, reached_target=reached, pool_left=len(pool)
        ):
            break
        if not queue:  # a retrain: the sampler orders the next batch with this model
            version += 1
            room = cap - len(labeled) if len(labeled) < cap else len(pool)
            context = PickContext(
                cache=cache,
                model=fitted,
                pool=pool,
                count=min(retrain_every, room, len(pool)),
                version=version,
                random_order=order,
                rng=rng,
            )
            queue = SAMPLERS[sampler](context)
        labeled.extend(queue[:eval_every])
        queue = queue[eval_every:]
    return {
        "model": model,
        "sampler": sampler,
        "retrain_every": retrain_every,
        "seed": seed,
        "retrains": version,
        "curve": curve,
        "seconds": round(time.perf_counter() - started, 2),
    }


def plan(args: argparse.Namespace) -> list[tuple[str, str, int, int]]:
    """(model, sampler, retrain_every, seed), seed-major; random runs once per model."""
    order = []
    for seed in args.seeds:
        for model in args.models:
            for sampler in args.samplers:
                cadences = args.retrain_every[:1] if sampler == "random" else args.retrain_every
                order += [(model, sampler, every, seed) for every in cadences]
    return order


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}", description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument(
        "--samplers", nargs="+", default=["random", "margin"], choices=list(SAMPLERS)
    )
    parser.add_argument("--retrain-every", type=int, nargs="+", default=[50])
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--cap", type=int, default=DEFAULT_CAP)
    parser.add_argument("--seed-labels", type=int, default=DEFAULT_SEED_LABELS)
    parser.add_argument("--name", default=NAME, help="results file name (bench/results/NAME.json)")
    parser.add_argument(
        "--resummarize",
        action="store_true",
        help="only recompute the summary of bench/results/NAME.json from its runs",
    )
    parser.add_argument(
        "--combine",
        nargs="+",
        metavar="OTHER",
        help="label nothing: pool the runs of bench/results/OTHER.json files (same grid, cap "
        "and seed labels; other seeds, models or samplers) into bench/results/NAME.json",
    )
    args = parser.parse_args(argv)
    if args.resummarize or args.combine:
        combined = None
        if args.combine:
            files = {
                n: json.loads((common.RESULTS_DIR / f"{n}.json").read_text()) for n in args.combine
            }
            arguments = sys.argv[1:] if argv is None else list(argv)
            combined = combine(files) | {
                "combined_by": f".venv/bin/python -m bench.{NAME} {shlex.join(arguments)}"
            }
        document = resummarize(args.name, combined)
        for row in document["summary"]:
            print(line(row))
        for row in document["contrasts"]:
            print(contrast_line(row))
        return 0
    if (args.cap - args.seed_labels) % args.eval_every:
        parser.error("eval-every must divide cap - seed-labels (the curve must end at the cap)")
    for every in args.retrain_every:
        if every % args.eval_every:
            parser.error(
                "retrain-every must be a multiple of eval-every (a batch that reaches the "
                "cap is cut there)"
            )
    data = Data()
    references: dict[str, dict[str, float]] = {}
    checks: dict[str, float] = {}
    everything = list(range(data.total))
    for model in args.models:
        _, references[model] = data.quality(data.cache(model), everything)
        sample = seed_review_indices(0, count=500, total=data.total)
        checks[model] = pipeline_check(data, model, sample)
        print(
            f"{NAMES.get(model, model)}: all-data {references[model]}, cached fit off the "
            f"pipeline by at most {checks[model]:.1e}",
            flush=True,
        )
    targets = {m: TARGET_SHARE_OF_FULL * r["accuracy"] for m, r in references.items()}
    runs: list[dict[str, Any]] = []
    for model, sampler, every, seed in plan(args):
        run = simulate(
            data,
            model=model,
            sampler=sampler,
            seed=seed,
            retrain_every=every,
            eval_every=args.eval_every,
            cap=args.cap,
            seed_labels=args.seed_labels,
            target=targets[model],
        )
        needed, area = figures(run, target=targets[model], cap=args.cap)
        print(
            f"[{NAMES.get(model, model)} {sampler} every {every} seed {seed}] labels needed "
            f"{needed}, AULC {area:.4f}, {run['seconds']:.0f} s",
            flush=True,
        )
        runs.append(run)
        _write(args, references, checks, targets, runs, complete=False)
    payload = _write(args, references, checks, targets, runs, complete=True)
    for row in payload["summary"]:
        print(line(row))
    for row in payload["contrasts"]:
        print(contrast_line(row))
    return 0


def pipeline_check(data: Data, model: str, sample: Sequence[int]) -> float:
    """The cached fit against the factory's pipeline on `sample` (see matches_pipeline)."""
    return matches_pipeline(
        data.cache(model),
        data.texts,
        train=sample,
        labels=[data.train_labels[i] for i in sample],
        check=data.test_rows,
    )


def summaries(
    runs: Sequence[dict[str, Any]],
    *,
    targets: dict[str, float],
    cap: int,
    models: Sequence[str],
) -> dict[str, Any]:
    """The common target, the summary rows and the contrasts of a results document."""
    common = common_target(targets, models)
    return {
        "common_target_accuracy": common,
        "summary": summarize(runs, targets=targets, cap=cap, common=common),
        "contrasts": contrasts(runs, targets=targets, cap=cap, common=common),
    }


# Settings that must be equal for runs of two files to share one summary.
SAME_SETTINGS = ("eval_every", "cap", "seed_labels")


def combine(parts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One document of the runs of several complete results files (e.g. more seeds).

    They must share the evaluation grid, cap, seed labels and the reference of every
    model they both have, and no (model, sampler, cadence, seed); `combined_from`
    records each file's command, time and machine. The summary is recomputed.
    """
    names = list(parts)
    first = parts[names[0]]
    runs: list[dict[str, Any]] = []
    seen: set[tuple[str, str, int, int]] = set()
    reference: dict[str, Any] = {}
    for name, part in parts.items():
        if not part.get("complete"):
            raise ValueError(f"{name} is an interrupted run")
        differing = [k for k in SAME_SETTINGS if part["settings"][k] != first["settings"][k]]
        if differing:
            raise ValueError(f"{name} differs from {names[0]} in {', '.join(differing)}")
        for model, metrics in part["reference"].items():
            if reference.setdefault(model, metrics) != metrics:
                raise ValueError(f"{name} has another reference for {model}")
        for run in part["runs"]:
            key = (run["model"], run["sampler"], run["retrain_every"], run["seed"])
            if key in seen:
                raise ValueError(f"{name} repeats {key}")
            seen.add(key)
            runs.append(run)
    settings = {
        **first["settings"],
        "seeds": sorted({r["seed"] for r in runs}),
        "models": list(dict.fromkeys(m for p in parts.values() for m in p["settings"]["models"])),
        "samplers": list(dict.fromkeys(r["sampler"] for r in runs)),
        "retrain_every": sorted({r["retrain_every"] for r in runs}),
    }
    return {
        **first,
        "settings": settings,
        "reference": reference,
        "combined_from": [
            {k: parts[n].get(k) for k in ("command", "finished_at", "machine")} | {"name": n}
            for n in names
        ],
        "runs": runs,
    }


def resummarize(name: str, document: dict[str, Any] | None = None) -> dict[str, Any]:
    """Recompute the summary of bench/results/NAME.json (or of `document`, written there)."""
    path = common.RESULTS_DIR / f"{name}.json"
    if document is None:
        document = json.loads(path.read_text())
    short = {short: ref for ref, short in NAMES.items()}
    targets = {
        short.get(m, m): TARGET_SHARE_OF_FULL * r["accuracy"]
        for m, r in document["reference"].items()
    }
    document.update(
        summaries(
            document["runs"],
            targets=targets,
            cap=document["settings"]["cap"],
            models=document["settings"]["models"],
        )
    )
    path.write_text(json.dumps(document, indent=2) + "\n")
    return document


def _write(
    args: argparse.Namespace,
    references: dict[str, dict[str, float]],
    checks: dict[str, float],
    targets: dict[str, float],
    runs: list[dict[str, Any]],
    *,
    complete: bool,
) -> dict[str, Any]:
    payload = {
        "mode": "offline simulation (no Label Studio), features computed once per model",
        "complete": complete,
        "settings": {
            "seeds": args.seeds,
            "models": args.models,
            "samplers": args.samplers,
            "retrain_every": args.retrain_every,
            "eval_every": args.eval_every,
            "cap": args.cap,
            "seed_labels": args.seed_labels,
        },
        "reference": {NAMES.get(m, m): r for m, r in references.items()},
        "target_accuracy": {NAMES.get(m, m): t for m, t in targets.items()},
        "cached_fit_max_probability_difference": {NAMES.get(m, m): c for m, c in checks.items()},
        **summaries(runs, targets=targets, cap=args.cap, models=args.models),
        "runs": runs,
        "machine": common.machine_info(None) if complete else None,
    }
    common.write_result(args.name, payload, module=f"bench.{NAME}")
    return payload


if __name__ == "__main__":
    raise SystemExit(main())
