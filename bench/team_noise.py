"""Issue 16, measure (a): a team with one noisy annotator, through a real Label Studio.

    python -m bench.team_noise [--seeds 0 1 2 3 4] [--tasks 500] [--step 100] [--noise 0.3]
    python -m bench.team_noise --combine PART ... [--name NAME]   # join seeds run apart

Three annotators are Label Studio users of their own (`POST /api/users/`); two answer with
the fine-food review's true label, the third ("noisy") with the other label 30 % of the
time. Every task is answered by two of the three (overlap 2: a pair drawn at random per
task), each answer a `POST /api/tasks/{id}/annotations/` with its annotator's
`completed_by`, in a shuffled order within each step (so either answer of a task may be
the newest). The same answers, in the same order, go to two projects on one server; the
daemon (`Runtime.run_cycle`, the default model) trains one with `[projects.labels]
policy = "latest"` and the other with `policy = "majority"` after every `step` tasks.

Measured after every step, on the same number of annotations:
- test accuracy (the 1,000 `testing_data` reviews) of each policy's version, and of the
  same model fitted on the same tasks with their TRUE labels (the clean reference);
- the `latest` project's suspected label errors (the daemon's own list, from its
  cross-validation and cleanlab) against the noisy annotator's wrong labels:
  precision = suspects whose trained label is one of them / suspects; recall = those /
  the noisy annotator's wrong labels that trained (the newest answer of their task);
  `recall_of_all_wrong` divides by every wrong answer of the noisy annotator, the ones
  a newer correct answer overrode included (cleanlab never sees those). `base_rate` is
  the share of trained labels that are wrong: the precision of a random list.

Tasks are taken in a seeded random order, not as Label Studio serves them: the question is
which label trains, and Label Studio 1.23 serves a project with more than one annotator
at random anyway (projects/functions/next_task.py). Under `majority` with overlap 2 a task
trains only when both answers agree; a disagreement is a tie and is withheld.

`--reuse-test-server` runs against the server named by ALDAEMON_TEST_LS_URL, _TOKEN and
_PAT (the tests' shared server) instead of starting a private one; projects and users are
created fresh either way, so the figures do not depend on which.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aldaemon.model.training import evaluate
from aldaemon.service.runtime import Runtime
from aldaemon.sync.consensus import LATEST, MAJORITY
from bench import common, parts
from bench.label_efficiency import fit_and_save
from demo.data import LABELS, Review, load_reviews
from tests.helpers import make_users
from tests.lsserver import ExternalLabelStudioServer, LabelStudioClient, LabelStudioServer

NAME = "team_noise"
POLICIES = (LATEST, MAJORITY)
ANNOTATORS = ("careful-a", "careful-b", "noisy")
NOISY = 2  # index in ANNOTATORS
PAIRS = ((0, 1), (0, 2), (1, 2))
DEFAULT_TASKS = 500
DEFAULT_STEP = 100
DEFAULT_NOISE = 0.3
REUSE_ENV = ("ALDAEMON_TEST_LS_URL", "ALDAEMON_TEST_LS_TOKEN", "ALDAEMON_TEST_LS_PAT")
UNLABELED_TASKS = 100  # never annotated: the daemon always has a pool to score


@dataclass(frozen=True)
class Answer:
    """One annotation to make: which planned task, by which annotator, with which label."""

    task: int  # index into the plan's reviews
    annotator: int  # index into ANNOTATORS
    label: str


@dataclass(frozen=True)
class Plan:
    """One seed's tasks (review indices) and its answers, step by step, in posting order."""

    reviews: tuple[int, ...]  # annotated tasks first (in step order), then the unlabeled
    steps: tuple[tuple[Answer, ...], ...]


def make_plan(*, seed: int, train: Sequence[Review], tasks: int, step: int, noise: float) -> Plan:
    """The answers of one seed: two annotators per task, the noisy one wrong at `noise`."""
    rng = random.Random(f"team-noise-{seed}")
    reviews = tuple(rng.sample(range(len(train)), tasks + UNLABELED_TASKS))
    steps = []
    for start in range(0, tasks, step):
        answers = []
        for task in range(start, min(start + step, tasks)):
            truth = train[reviews[task]].label
            for annotator in PAIRS[rng.randrange(len(PAIRS))]:
                label = truth
                if annotator == NOISY and rng.random() < noise:
                    label = rng.choice([other for other in LABELS if other != truth])
                answers.append(Answer(task=task, annotator=annotator, label=label))
        rng.shuffle(answers)
        steps.append(tuple(answers))
    return Plan(reviews=reviews, steps=tuple(steps))


def trained_labels(answers: Sequence[Answer], policy: str) -> dict[int, str]:
    """task -> the label it trains with under `policy`, for two answers per task.

    latest: the answer posted last; majority: the shared answer, none on a tie. (The
    daemon decides by itself; this is what it should decide, checked against its count.)
    """
    by_task: dict[int, list[str]] = {}
    for answer in answers:
        by_task.setdefault(answer.task, []).append(answer.label)
    if policy == LATEST:
        return {task: labels[-1] for task, labels in by_task.items()}
    return {task: labels[0] for task, labels in by_task.items() if len(set(labels)) == 1}


def suspect_quality(
    *,
    suspects: Sequence[int],
    trained: dict[int, str],
    truth: dict[int, str],
    noisy_wrong: set[int],
) -> dict[str, Any]:
    """Precision and recall of a suspect list (task indices) against the noisy labels."""
    wrong_trained = {t for t, label in trained.items() if label != truth[t]}
    hits = len(set(suspects) & wrong_trained)
    return {
        "suspects": len(suspects),
        "wrong_trained": len(wrong_trained),
        "noisy_wrong_answers": len(noisy_wrong),
        "hits": hits,
        "precision": _share(hits, len(suspects)),
        "recall": _share(hits, len(wrong_trained)),
        "recall_of_all_wrong": _share(len(set(suspects) & noisy_wrong), len(noisy_wrong)),
        "base_rate": _share(len(wrong_trained), len(trained)),
    }


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


# ---- one seed through Label Studio ------------------------------------------------------


@dataclass
class PolicyProject:
    policy: str
    project_id: int
    task_ids: list[int]  # plan task index -> Label Studio task id
    runtime: Runtime


async def run_seed(
    *,
    server: LabelStudioServer,
    client: LabelStudioClient,
    users: Sequence[int],
    seed: int,
    args: argparse.Namespace,
    work_dir: Path,
) -> dict[str, Any]:
    started = time.perf_counter()
    reviews = load_reviews()
    train, test = reviews.train, reviews.test
    test_texts, test_labels = [r.text for r in test], [r.label for r in test]
    plan = make_plan(seed=seed, train=train, tasks=args.tasks, step=args.step, noise=args.noise)
    tasks = [
        common.BenchTask(review_id=i, text=train[i].text, label=train[i].label)
        for i in plan.reviews
    ]
    truth = {t: train[i].label for t, i in enumerate(plan.reviews)}
    projects: list[PolicyProject] = []
    async with contextlib.AsyncExitStack() as stack:
        for policy in POLICIES:
            project_id, by_task_id = common.create_project(
                client, title=f"team noise {policy} seed {seed}", tasks=tasks
            )
            task_of_review = {task.review_id: task_id for task_id, task in by_task_id.items()}
            config = common.daemon_config(
                directory=work_dir / f"{policy}-{seed}",
                server=server,
                project_id=project_id,
                retrain={"min_new_annotations": 1, "min_interval": 0},
                predictions={"prune_per_cycle": 0},
                sections={"labels": {"policy": policy}},
            )
            runtime = await stack.enter_async_context(Runtime(config))
            projects.append(
                PolicyProject(
                    policy=policy,
                    project_id=project_id,
                    task_ids=[task_of_review[i] for i in plan.reviews],
                    runtime=runtime,
                )
            )
        posted: list[Answer] = []
        points: list[dict[str, Any]] = []
        for answers in plan.steps:
            began = time.perf_counter()
            for answer in answers:
                for project in projects:
                    _post_answer(client, project.task_ids[answer.task], answer, users)
            posted.extend(answers)
            annotate_seconds = time.perf_counter() - began
            noisy_wrong = {
                a.task for a in posted if a.annotator == NOISY and a.label != truth[a.task]
            }
            point: dict[str, Any] = {
                "annotations": len(posted),
                "tasks": len({a.task for a in posted}),
                "annotate_s": round(annotate_seconds, 1),
            }
            for project in projects:
                point[project.policy] = await _measure(
                    project,
                    expected=trained_labels(posted, project.policy),
                    truth=truth,
                    noisy_wrong=noisy_wrong,
                    test=(test_texts, test_labels),
                )
            annotated = sorted({a.task for a in posted})
            point["true_labels_accuracy"] = evaluate(
                artifact_path=fit_and_save(
                    [train[plan.reviews[t]].text for t in annotated],
                    [truth[t] for t in annotated],
                    work_dir / f"clean-{seed}.joblib",
                ),
                texts=test_texts,
                labels=test_labels,
            )["accuracy"]
            print(f"[seed {seed}] {_point_line(point)}")
            points.append(point)
    return {
        "seed": seed,
        "project_ids": {p.policy: p.project_id for p in projects},
        "points": points,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _post_answer(
    client: LabelStudioClient, task_id: int, answer: Answer, users: Sequence[int]
) -> None:
    client.call(
        "POST",
        f"/api/tasks/{task_id}/annotations/",
        {
            "result": [
                {
                    "from_name": common.SCHEMA.from_name,
                    "to_name": common.SCHEMA.to_name,
                    "type": "choices",
                    "value": {"choices": [answer.label]},
                }
            ],
            "completed_by": users[answer.annotator],
        },
    )


async def _measure(
    project: PolicyProject,
    *,
    expected: dict[int, str],
    truth: dict[int, str],
    noisy_wrong: set[int],
    test: tuple[list[str], list[str]],
) -> dict[str, Any]:
    """Run one daemon cycle on the project and measure the version it trained."""
    runtime = project.runtime
    (config_project,) = runtime.config.projects
    report = await runtime.run_cycle(config_project)
    if report.outcome != "ok" or report.version is None:
        raise RuntimeError(
            f"{project.policy}: no version: {report.outcome} {report.decision} {report.error}"
        )
    store = runtime.store
    assert store is not None
    version = store.get_version(project.project_id, report.version)
    assert version is not None and version.artifact_path is not None
    if version.n_labels != len(expected):
        raise RuntimeError(
            f"{project.policy} {version.name} trained on {version.n_labels} labels, "
            f"the answers give {len(expected)}"
        )
    task_of_id = {task_id: t for t, task_id in enumerate(project.task_ids)}
    suspects = [task_of_id[task_id] for task_id in store.suspects(project.project_id)]
    quality = evaluate(artifact_path=version.artifact_path, texts=test[0], labels=test[1])
    return {
        "version": version.name,
        "labels": version.n_labels,
        "accuracy": quality["accuracy"],
        "suspect_list": suspect_quality(
            suspects=suspects, trained=expected, truth=truth, noisy_wrong=noisy_wrong
        ),
    }


def _point_line(point: dict[str, Any]) -> str:
    latest, majority = point[LATEST], point[MAJORITY]
    suspects = latest["suspect_list"]
    return (
        f"{point['annotations']} annotations: accuracy latest {latest['accuracy']:.3f} "
        f"({latest['labels']} labels), majority {majority['accuracy']:.3f} "
        f"({majority['labels']} labels), true labels {point['true_labels_accuracy']:.3f}; "
        f"suspects {suspects['suspects']}, precision {suspects['precision']}, "
        f"recall {suspects['recall']} (of {suspects['wrong_trained']} wrong trained labels)"
    )


# ---- summary ----------------------------------------------------------------------------


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per seed and median, at the last step (the same number of annotations for both)."""
    finals = [run["points"][-1] for run in runs]

    def column(get: Any) -> dict[str, Any]:
        values = [get(point) for point in finals]
        known = [v for v in values if v is not None]
        return {
            "per_seed": values,
            "median": round(statistics.median(known), 4) if known else None,
        }

    return {
        "seeds": [run["seed"] for run in runs],
        "annotations": finals[0]["annotations"],
        "accuracy_latest": column(lambda p: p[LATEST]["accuracy"]),
        "accuracy_majority": column(lambda p: p[MAJORITY]["accuracy"]),
        "majority_minus_latest": column(
            lambda p: round(p[MAJORITY]["accuracy"] - p[LATEST]["accuracy"], 4)
        ),
        "accuracy_true_labels": column(lambda p: p["true_labels_accuracy"]),
        "labels_latest": column(lambda p: p[LATEST]["labels"]),
        "labels_majority": column(lambda p: p[MAJORITY]["labels"]),
        "suspects_latest": column(lambda p: p[LATEST]["suspect_list"]["suspects"]),
        "suspect_precision": column(lambda p: p[LATEST]["suspect_list"]["precision"]),
        "suspect_recall": column(lambda p: p[LATEST]["suspect_list"]["recall"]),
        "suspect_recall_of_all_wrong": column(
            lambda p: p[LATEST]["suspect_list"]["recall_of_all_wrong"]
        ),
        "suspect_base_rate": column(lambda p: p[LATEST]["suspect_list"]["base_rate"]),
        "suspects_majority": column(lambda p: p[MAJORITY]["suspect_list"]["suspects"]),
    }


# ---- main -------------------------------------------------------------------------------


@contextlib.contextmanager
def server_for(work_dir: Path, *, reuse: bool) -> Iterator[LabelStudioServer]:
    if not reuse:
        with common.label_studio(work_dir) as server:
            yield server
        return
    missing = [k for k in REUSE_ENV if k not in os.environ]
    if missing:
        raise SystemExit(f"--reuse-test-server needs {', '.join(missing)} in the environment")
    url, token, pat = (os.environ[k] for k in REUSE_ENV)
    yield ExternalLabelStudioServer(url=url, legacy_token=token, pat=pat)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every seed in turn; the results file is rewritten after each (`complete` at the end)."""
    runs: list[dict[str, Any]] = []
    payload: dict[str, Any] = {}
    with (
        common.work_directory(NAME, keep=args.keep) as work_dir,
        server_for(work_dir, reuse=args.reuse_test_server) as server,
    ):
        log_stream = common.quiet_daemon_logs(work_dir / "daemon.log")
        client = LabelStudioClient(server)
        try:
            users = make_users(client, len(ANNOTATORS), prefix="team-noise")
            for seed in args.seeds:
                runs.append(
                    await run_seed(
                        server=server,
                        client=client,
                        users=users,
                        seed=seed,
                        args=args,
                        work_dir=work_dir,
                    )
                )
                payload = _payload(args, runs, machine=common.machine_info(server))
                common.write_result(args.name, payload, module=f"bench.{NAME}")
        finally:
            log_stream.close()
    return payload


def _payload(
    args: argparse.Namespace, runs: list[dict[str, Any]], *, machine: dict[str, Any]
) -> dict[str, Any]:
    return {
        "mode": "through a real Label Studio (daemon cycles, annotations by three users)",
        "complete": len(runs) == len(args.seeds),
        "settings": {
            "seeds": args.seeds,
            "tasks": args.tasks,
            "step": args.step,
            "noise": args.noise,
            "overlap": 2,
            "annotators": list(ANNOTATORS),
            "noisy_annotator": ANNOTATORS[NOISY],
            "unlabeled_tasks": UNLABELED_TASKS,
            "server": "shared test server" if args.reuse_test_server else "private",
        },
        "runs": runs,
        "summary": summarize(runs),
        "machine": machine,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}", description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--tasks", type=int, default=DEFAULT_TASKS, help="tasks annotated")
    parser.add_argument("--step", type=int, default=DEFAULT_STEP, help="tasks per retrain")
    parser.add_argument(
        "--noise", type=float, default=DEFAULT_NOISE, help="how often the noisy one is wrong"
    )
    parser.add_argument(
        "--reuse-test-server",
        action="store_true",
        help="use the server of ALDAEMON_TEST_LS_URL/_TOKEN/_PAT instead of a private one",
    )
    parser.add_argument("--name", default=NAME, help="results file name (bench/results/NAME.json)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parts.add_combine_option(parser)
    args = parser.parse_args(argv)
    if args.combine:
        parts.join_parts(
            args.combine,
            name=args.name,
            module=f"bench.{NAME}",
            same_settings=("tasks", "step", "noise", "overlap", "unlabeled_tasks"),
            summarize=summarize,
        )
        return 0
    payload = asyncio.run(run(args))
    summary = payload["summary"]
    for key, value in summary.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
