"""Summaries of `bench.label_efficiency_seeds` runs: pure functions of the runs, no I/O.

A configuration is (model, retrain cadence, sampler). Per configuration: labels needed
(to the model's own target, and to one common target so models can be compared) and
AULC, per seed with their spread, and the paired comparison with random. Then two kinds
of contrast, each paired seed by seed with a sign test (`bench.label_efficiency_stats`):

- a factor against the daemon's setting (margin, retrain every 50) of the same model:
  since random is the same on a seed, the per-seed labels ratio of the two IS the factor
  by which it moves the ratio to random;
- a model against today's default, same sampler and cadence: labels needed to the
  common target, and AULC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from bench import curves
from bench import label_efficiency_stats as stats
from bench.label_efficiency_batches import BASELINES, WHAT_IF
from bench.label_efficiency_features import MODELS, NAMES, TFIDF_REFERENCE

Config = tuple[str, int, str]  # (model ref, retrain every, sampler)
PerSeed = dict[int, float]
DAEMON_SETTING = (50, "margin")  # retrain every, sampler: what the daemon does today


def figures(run: dict[str, Any], *, target: float, cap: int) -> tuple[int | None, float]:
    """(labels needed, AULC to `cap`) of one run."""
    points = [(int(p["labels"]), float(p["accuracy"])) for p in run["curve"]]
    return (
        curves.labels_needed(points, target=target),
        curves.normalized_area([p for p in points if p[0] <= cap]),
    )


def common_target(targets: dict[str, float], models: Sequence[str]) -> float:
    """The target all models are also measured against: today's default's, else the first's."""
    return targets[TFIDF_REFERENCE if TFIDF_REFERENCE in targets else models[0]]


def config_of(run: dict[str, Any]) -> Config:
    """A run's configuration; random order ignores the cadence, so its cadence reads 0."""
    every = 0 if run["sampler"] == "random" else int(run["retrain_every"])
    return (run["model"], every, run["sampler"])


def per_seed(
    runs: Sequence[dict[str, Any]], *, targets: dict[str, float], cap: int, common: float
) -> dict[str, dict[Config, PerSeed]]:
    """{"needed" | "common" | "area": {config: {seed: value}}}.

    A run that never reached a target counts as the most labels any run was given (a
    bound; runs label on until their own target, so this only happens for `common`
    when a model's own target is below it).
    """
    most = max(int(p["labels"]) for run in runs for p in run["curve"])
    tables: dict[str, dict[Config, PerSeed]] = {"needed": {}, "common": {}, "area": {}}
    for run in runs:
        key = config_of(run)
        needed, area = figures(run, target=targets[run["model"]], cap=cap)
        reached, _ = figures(run, target=common, cap=cap)
        tables["needed"].setdefault(key, {})[run["seed"]] = stats.needed_or_bound(
            needed, most_labels=most
        )
        tables["common"].setdefault(key, {})[run["seed"]] = stats.needed_or_bound(
            reached, most_labels=most
        )
        tables["area"].setdefault(key, {})[run["seed"]] = area
    return tables


def _baseline(configs: Sequence[Config], model: str, every: int) -> Config | None:
    """The random run a configuration is compared with (see BASELINES)."""
    candidates = sorted(
        (k for k in configs if k[0] == model and k[2] in BASELINES),
        key=lambda k: (BASELINES.index(k[2]), k[1] != every),
    )
    return candidates[0] if candidates else None


def summarize(
    runs: Sequence[dict[str, Any]], *, targets: dict[str, float], cap: int, common: float
) -> list[dict[str, Any]]:
    """One row per configuration: per-seed figures, spreads, paired against random."""
    tables = per_seed(runs, targets=targets, cap=cap, common=common)
    needed, reached, area = tables["needed"], tables["common"], tables["area"]
    rows = []
    for key in needed:
        model, every, sampler = key
        seeds = sorted(needed[key])
        row: dict[str, Any] = {
            "model": NAMES.get(model, model),
            "retrain_every": every,
            "sampler": sampler,
            "what_if": sampler in WHAT_IF,
            "seeds": seeds,
            "labels_needed": [int(needed[key][s]) for s in seeds],
            "labels_needed_spread": asdict(stats.spread(list(needed[key].values()))),
            "labels_needed_common_target": [int(reached[key][s]) for s in seeds],
            "labels_needed_common_target_spread": asdict(stats.spread(list(reached[key].values()))),
            "aulc": [round(area[key][s], 4) for s in seeds],
            "aulc_spread": asdict(stats.spread(list(area[key].values()))),
        }
        base = _baseline(list(needed), model, every)
        if sampler not in BASELINES and base is not None:
            row["vs_random"] = {
                "random_retrain_every": base[1],
                "labels_ratio": stats.paired(needed[key], needed[base], lower_is_better=True),
                "ratio_of_medians": round(
                    stats.ratio_of_medians(list(needed[key].values()), list(needed[base].values())),
                    4,
                ),
                "aulc_gain": stats.paired(area[key], area[base], lower_is_better=False),
            }
        rows.append(row)
    return rows


def contrasts(
    runs: Sequence[dict[str, Any]], *, targets: dict[str, float], cap: int, common: float
) -> list[dict[str, Any]]:
    """Factors against the daemon's setting, and models against today's default."""
    tables = per_seed(runs, targets=targets, cap=cap, common=common)
    needed, reached, area = tables["needed"], tables["common"], tables["area"]
    rows = []
    for key in needed:
        model, every, sampler = key
        if sampler in BASELINES:
            continue
        daemon = (model, *DAEMON_SETTING)
        if key != daemon and daemon in needed:
            rows.append(
                {
                    "kind": "factor",
                    "model": NAMES.get(model, model),
                    "config": f"{sampler}, every {every}",
                    "against": f"{DAEMON_SETTING[1]}, every {DAEMON_SETTING[0]}",
                    "labels_ratio": stats.paired(needed[key], needed[daemon], lower_is_better=True),
                    "aulc_gain": stats.paired(area[key], area[daemon], lower_is_better=False),
                }
            )
    for key in [*needed]:
        model, every, sampler = key
        today = (TFIDF_REFERENCE, every, sampler)
        if model != TFIDF_REFERENCE and today in needed:
            rows.append(
                {
                    "kind": "model",
                    "model": NAMES.get(model, model),
                    "config": f"{sampler}, every {every}" if every else sampler,
                    "against": MODELS[TFIDF_REFERENCE],
                    "labels_ratio": stats.paired(
                        reached[key], reached[today], lower_is_better=True
                    ),
                    "aulc_gain": stats.paired(area[key], area[today], lower_is_better=False),
                }
            )
    return rows


def line(row: dict[str, Any]) -> str:
    """One summary row as a line of text."""
    text = (
        f"{row['model']:>12} every {row['retrain_every']:>3} {row['sampler']:>27}: "
        f"labels {stats.Spread(**row['labels_needed_spread']).text(4)}, "
        f"AULC {stats.Spread(**row['aulc_spread']).text(4)}"
    )
    if "vs_random" in row:
        vs = row["vs_random"]
        ratio = vs["labels_ratio"]
        text += (
            f"; paired ratio {stats.Spread(**ratio['spread']).text(3)} "
            f"wins {ratio['wins']}/{len(ratio['seeds'])}; ratio of medians "
            f"{vs['ratio_of_medians']:.3f}; AULC gain median "
            f"{vs['aulc_gain']['spread']['median']:+.4f}"
        )
    return text


def contrast_line(row: dict[str, Any]) -> str:
    """One contrast as a line of text."""
    ratio, gain = row["labels_ratio"], row["aulc_gain"]
    return (
        f"{row['model']:>12} {row['config']:>36} vs {row['against']}: labels x"
        f"{stats.Spread(**ratio['spread']).text(3)} fewer on {ratio['wins']}, more on "
        f"{ratio['losses']} (p {ratio['sign_test_p']:.3f}); AULC "
        f"{gain['spread']['median']:+.4f} (IQR {gain['spread']['q1']:+.4f} to "
        f"{gain['spread']['q3']:+.4f}) better on {gain['wins']}, worse on {gain['losses']} "
        f"(p {gain['sign_test_p']:.3f})"
    )
