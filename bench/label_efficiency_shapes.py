"""Label efficiency through a real Label Studio for multi-label and named-entity projects.

    python -m bench.label_efficiency_multilabel [--seeds 0 1 2] [--external]
    python -m bench.label_efficiency_ner [--seeds 0 1 2] [--external]

The experiment of bench/label_efficiency.py (issue 12's "Measure"), for a config that is
not a single `<Choices>`. Per seed and sampler, one project holds the pool; a simulated
annotator asks `GET /api/projects/{id}/next` and answers with the gold answer
(`Shape.result`):

- margin: the daemon (`Runtime.run_cycle`) retrains every `step` labels, uploads a
  prediction for every unlabeled task and activates it; Label Studio serves the lowest
  score first;
- random: the project's sampling is "Uniform sampling"; the same model the daemon trains
  for this shape (`Shape.fit_and_save`, without the daemon's cross-validation, which only
  computes metrics) is fitted on the same label counts.

Both start from the same `seed_labels` pool examples (chosen by the seed). After each
retrain the model is scored on held-out examples (`Shape.quality`: micro-F1, entity F1).
What differs between shapes is a `Shape`; seed labels, stopping rule (curve to `cap`,
then on until 99 % of the full-pool figure), curve arithmetic (bench/curves.py) and the
summary with its ratio to random are bench/label_efficiency.py's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aldaemon.secret import Secret
from aldaemon.service.runtime import Runtime
from bench import common, curves
from bench.label_efficiency import (
    TARGET_SHARE_OF_FULL,
    VARIANTS,
    Variant,
    keep_labeling,
    plan,
    seed_review_indices,
    served_rank,
    summarize,
)
from demo.labelstudio import DemoGateway
from tests.lsserver import LabelStudioClient, LabelStudioServer

DEFAULT_STEP = 50
DEFAULT_CAP = 500
DEFAULT_SEED_LABELS = 50
DEFAULT_POOL = 1000


class Example(Protocol):
    """A pool or test example: the text the annotator reads (and its gold answer)."""

    @property
    def text(self) -> str: ...


@dataclass(frozen=True)
class Shape:
    """What one labeling config needs from the benchmark; see the module docstring."""

    name: str  # results file name and module suffix
    label_config: str
    metric: str  # each curve point's quality key
    dataset: dict[str, str]  # package, version, licence, provenance, what was kept
    pool: Sequence[Any]
    test: Sequence[Any]
    result: Callable[[Any], list[dict[str, object]]]  # the gold annotation's result list
    fit_and_save: Callable[[Sequence[Any], Path], str]  # random's model -> artifact path
    quality: Callable[[str, Sequence[Any]], float]  # artifact, test examples -> metric


@dataclass
class Labeling:
    """One project's annotator: who was labeled, in which order, through Label Studio."""

    client: LabelStudioClient
    shape: Shape
    project_id: int
    pool_index: dict[int, int]  # task id -> pool position
    labeled: list[int] = field(default_factory=list)  # task ids in labeling order

    def give(self, task_id: int) -> None:
        example = self.shape.pool[self.pool_index[task_id]]
        body = {"result": self.shape.result(example)}
        self.client.call("POST", f"/api/tasks/{task_id}/annotations/", body)
        self.labeled.append(task_id)

    def examples(self) -> list[Any]:
        return [self.shape.pool[self.pool_index[task_id]] for task_id in self.labeled]

    async def take_served(self, annotator: DemoGateway, count: int) -> list[int]:
        """Answer the next `count` tasks Label Studio serves (fewer when none is left)."""
        served: list[int] = []
        for _ in range(count):
            task = await annotator.next_task(self.project_id)
            if task is None:
                break
            self.give(int(task["id"]))
            served.append(int(task["id"]))
        return served


@dataclass(frozen=True)
class Settings:
    step: int
    cap: int
    seed_labels: int
    target: float


@dataclass
class Curve:
    """The learning curve of one run and the rule that says when labeling stops."""

    shape: Shape
    settings: Settings
    points: list[dict[str, float]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)

    def add(self, labels: int, artifact_path: str) -> None:
        quality = self.shape.quality(artifact_path, self.shape.test)
        self.points.append({"labels": labels, self.shape.metric: quality})

    def more(self, labels: int) -> int:
        """How many to label next; 0 when labeling is over."""
        reached = any(p[self.shape.metric] >= self.settings.target for p in self.points)
        pool = len(self.shape.pool)
        if not keep_labeling(
            labels=labels, cap=self.settings.cap, reached_target=reached, pool_left=pool - labels
        ):
            return 0
        room = self.settings.cap - labels if labels < self.settings.cap else pool - labels
        return min(self.settings.step, room)


async def random_curve(
    labeling: Labeling, annotator: DemoGateway, curve: Curve, *, artifact: Path
) -> None:
    """Uniform sampling in Label Studio; the shape's model refitted at every step."""
    labeling.client.call(
        "PATCH", f"/api/projects/{labeling.project_id}/", {"sampling": "Uniform sampling"}
    )
    while True:
        began = time.perf_counter()
        curve.add(len(labeling.labeled), labeling.shape.fit_and_save(labeling.examples(), artifact))
        fitted = time.perf_counter() - began
        count = curve.more(len(labeling.labeled))
        if not count:
            return
        began = time.perf_counter()
        await labeling.take_served(annotator, count)
        curve.steps.append({"annotate_s": time.perf_counter() - began, "train_eval_s": fitted})


async def daemon_curve(
    labeling: Labeling,
    annotator: DemoGateway,
    curve: Curve,
    *,
    variant: Variant,
    server: LabelStudioServer,
    directory: Path,
) -> None:
    """The daemon retrains every `step` labels; Label Studio serves its lowest score first."""
    config = common.daemon_config(
        directory=directory,
        server=server,
        project_id=labeling.project_id,
        # min_per_class = 1: the daemon trains as soon as every label has an example, as
        # random's model does from the seed labels on.
        retrain={"min_new_annotations": curve.settings.step, "min_interval": 0, "min_per_class": 1},
        predictions={"strategy": variant.strategy, "prune_per_cycle": 0},
    )
    async with Runtime(config) as runtime:
        store, project = runtime.store, config.projects[0]
        assert store is not None
        while True:
            cycle_began = time.perf_counter()
            report = await runtime.run_cycle(project)
            cycle_seconds = time.perf_counter() - cycle_began
            version = (
                None if report.version is None else store.get_version(project.id, report.version)
            )
            if report.outcome != "ok" or version is None or version.artifact_path is None:
                raise RuntimeError(
                    f"no version at {len(labeling.labeled)} labels: {report.outcome} "
                    f"{report.decision} {report.error or ''}"
                )
            if version.n_labels != len(labeling.labeled):
                raise RuntimeError(
                    f"{version.name} trained on {version.n_labels} labels, "
                    f"the annotator gave {len(labeling.labeled)}"
                )
            curve.add(len(labeling.labeled), version.artifact_path)
            count = curve.more(len(labeling.labeled))
            if not count:
                return
            scores = {p.task_id: p.score for p in store.load_predictions(project.id, version.name)}
            began = time.perf_counter()
            served = await labeling.take_served(annotator, count)
            curve.steps.append(
                {
                    "version": version.name,
                    "cycle_s": cycle_seconds,
                    "annotate_s": time.perf_counter() - began,
                    # 0 = Label Studio served the lowest-scored unlabeled task first.
                    "first_served_rank": served_rank(scores, served[0]) if served else None,
                }
            )


async def run_one(
    *,
    server: LabelStudioServer,
    client: LabelStudioClient,
    shape: Shape,
    variant: Variant,
    seed: int,
    settings: Settings,
    work_dir: Path,
) -> dict[str, Any]:
    started = time.perf_counter()
    project_id, listed = common.create_project_of(
        client,
        title=f"{shape.name} {variant.name} seed {seed}",
        label_config=shape.label_config,
        data=[{"text": example.text, "n": n} for n, example in enumerate(shape.pool)],
    )
    pool_index = {task_id: int(data["n"]) for task_id, data in listed.items()}
    labeling = Labeling(client=client, shape=shape, project_id=project_id, pool_index=pool_index)
    task_at = {position: task_id for task_id, position in pool_index.items()}
    for position in seed_review_indices(seed, count=settings.seed_labels, total=len(shape.pool)):
        labeling.give(task_at[position])
    curve = Curve(shape=shape, settings=settings)
    async with DemoGateway(url=server.url, token=Secret(server.legacy_token)) as annotator:
        if variant.strategy is None:
            await random_curve(
                labeling, annotator, curve, artifact=work_dir / f"random-{seed}.joblib"
            )
        else:
            await daemon_curve(
                labeling,
                annotator,
                curve,
                variant=variant,
                server=server,
                directory=work_dir / f"daemon-{variant.name}-{seed}",
            )
    return {
        "variant": variant.name,
        "seed": seed,
        "project_id": project_id,
        "curve": curve.points,
        "steps": curve.steps,
        "seconds": time.perf_counter() - started,
    }


# ---- main -----------------------------------------------------------------------------------


def parse_arguments(prog: str, doc: str | None, argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=doc)
    parser.add_argument("--variants", nargs="+", default=["margin", "random"], choices=VARIANTS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--step", type=int, default=DEFAULT_STEP)
    parser.add_argument("--cap", type=int, default=DEFAULT_CAP)
    parser.add_argument("--seed-labels", type=int, default=DEFAULT_SEED_LABELS)
    parser.add_argument("--pool", type=int, default=DEFAULT_POOL, help="tasks in each project")
    parser.add_argument("--name", default=None, help="results file name (default: the shape's)")
    parser.add_argument("--external", action="store_true", help="use ALDAEMON_TEST_LS_URL")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--combine",
        nargs="+",
        metavar="PART",
        help="label nothing: join bench/results/PART.json files into bench/results/NAME.json",
    )
    args = parser.parse_args(argv)
    if (args.cap - args.seed_labels) % args.step or args.seed_labels < args.step:
        parser.error("cap - seed-labels must be a multiple of step, and seed-labels >= step")
    return args


def main(load: Callable[[int], Shape], *, module: str, argv: Sequence[str] | None) -> int:
    """Run the seeds x samplers of one shape and write bench/results/<name>.json.

    With --combine, label nothing: join the runs of results files written by separate
    processes (e.g. one per seed, run side by side) into one and recompute its summary.
    """
    prog = f"python -m bench.{module}"
    args = parse_arguments(prog, None, argv)
    if args.combine:
        arguments = sys.argv[1:] if argv is None else list(argv)
        name = args.name or module
        payload = combine(
            [
                json.loads((common.RESULTS_DIR / f"{part}.json").read_text())
                for part in args.combine
            ],
            parts=args.combine,
            command=f".venv/bin/python -m bench.{module} {shlex.join(arguments)}",
        )
        (common.RESULTS_DIR / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    else:
        payload = asyncio.run(run(load(args.pool), args, module=module))
    for row in payload["summary"]["variants"]:
        print(row["line"])
    return 0


COMBINE_KEYS = ("step", "cap", "seed_labels")


def combine(
    documents: Sequence[dict[str, Any]], *, parts: Sequence[str], command: str
) -> dict[str, Any]:
    """One results document holding the runs of `documents` (same shape and settings).

    Each must have the same metric, data set, reference figure, step, cap and seed labels,
    and no (sampler, seed) may appear twice. A part stopped after a whole run counts with
    the runs it finished (a results file is rewritten after each run, with `complete`
    false until the last): `parts` records which. The summary is recomputed, so a sampler
    is compared with random on the same seed whichever file each came from.
    """
    first = documents[0]
    for part, document in zip(parts, documents, strict=True):
        same = [document["metric"] == first["metric"], document["dataset"] == first["dataset"]]
        same += [document["reference"] == first["reference"]]
        same += [document["settings"][key] == first["settings"][key] for key in COMBINE_KEYS]
        if not all(same):
            raise ValueError(f"{part} differs from {parts[0]} in data, reference or settings")
    runs = [run for document in documents for run in document["runs"]]
    keys = [(run["variant"], run["seed"]) for run in runs]
    if len(set(keys)) != len(keys):
        raise ValueError("a (sampler, seed) appears in two parts")
    metric = first["metric"]
    return {
        **first,
        "command": command,
        "settings": {
            **first["settings"],
            "seeds": sorted({run["seed"] for run in runs}),
            "variants": {k: v for d in documents for k, v in d["settings"]["variants"].items()},
        },
        "runs": runs,
        "summary": summarize(
            runs,
            reference_accuracy=first["reference"][metric],
            cap=first["settings"]["cap"],
            metric=metric,
        ),
        "parts": [
            {k: d[k] for k in ("benchmark", "command", "finished_at", "complete", "machine")}
            for d in documents
        ],
        "complete": True,
    }


async def run(shape: Shape, args: argparse.Namespace, *, module: str) -> dict[str, Any]:
    name = args.name or shape.name
    runs: list[dict[str, Any]] = []
    with (
        common.work_directory(name, keep=args.keep) as work_dir,
        common.server_for(work_dir, external=args.external) as server,
    ):
        log_stream = common.quiet_daemon_logs(work_dir / "daemon.log")
        client = LabelStudioClient(server)
        try:
            reference = shape.quality(
                shape.fit_and_save(shape.pool, work_dir / "all.joblib"), shape.test
            )
            print(
                f"{shape.metric} of the model on all {len(shape.pool)} pool examples: "
                f"{reference:.4f}"
            )
            settings = Settings(
                step=args.step,
                cap=args.cap,
                seed_labels=args.seed_labels,
                target=TARGET_SHARE_OF_FULL * reference,
            )
            for variant_name, seed in plan(
                seeds=args.seeds, variant_seeds=[], variants=args.variants
            ):
                result = await run_one(
                    server=server,
                    client=client,
                    shape=shape,
                    variant=VARIANTS[variant_name],
                    seed=seed,
                    settings=settings,
                    work_dir=work_dir,
                )
                points = [(int(p["labels"]), p[shape.metric]) for p in result["curve"]]
                print(
                    f"[{variant_name} seed {seed}] labels needed "
                    f"{curves.labels_needed(points, target=settings.target)}, last point "
                    f"{points[-1]}, {result['seconds'] / 60:.1f} min",
                    flush=True,
                )
                runs.append(result)
                write(shape, args, reference, runs, name=name, module=module, machine=None)
        finally:
            log_stream.close()
        return write(
            shape,
            args,
            reference,
            runs,
            name=name,
            module=module,
            machine=common.machine_info(server),
        )


def write(
    shape: Shape,
    args: argparse.Namespace,
    reference: float,
    runs: list[dict[str, Any]],
    *,
    name: str,
    module: str,
    machine: dict[str, Any] | None,
) -> dict[str, Any]:
    payload = {
        "mode": "through a real Label Studio",
        "complete": machine is not None,
        "dataset": {**shape.dataset, "pool": len(shape.pool), "test": len(shape.test)},
        "metric": shape.metric,
        "settings": {
            "step": args.step,
            "cap": args.cap,
            "seed_labels": args.seed_labels,
            "seeds": args.seeds,
            "external_label_studio": args.external,
            "variants": {v: VARIANTS[v].describe() for v in args.variants},
        },
        "reference": {shape.metric: reference},
        "runs": runs,
        "summary": summarize(runs, reference_accuracy=reference, cap=args.cap, metric=shape.metric),
        "machine": machine,
    }
    common.write_result(name, payload, module=f"bench.{module}")
    return payload
