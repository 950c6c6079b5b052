"""Label efficiency through an ML backend: digits images, aldaemon's queue against random.

    python -m bench.ml_backend_digits [--seeds 0 1 2] [--step 40] [--cap 400]

scikit-learn's 1,797 bundled digits are split once (stratified, fixed): 1,400 become
tasks of a Label Studio project, 397 are the test set. The example backend (a real
process, LogisticRegression on the 64 pixels) is connected through Label Studio's API.
Per seed, both arms start from the same 20 seed labels (two of each digit, chosen by the
seed):

- aldaemon: `model = "ml-backend"`, retraining every `step` labels (one cycle per step;
  min_new_annotations = 20 so the first version trains on the seed labels, min_interval
  = 0). Each cycle asks Label Studio to train the backend, scores the
  unlabeled pool through /predict, uploads and activates the version with uncertainty
  sampling; a simulated annotator then takes `step` tasks from `GET /api/projects/{id}/next`
  and answers with the true digit. The backend's score is its probability of the
  predicted digit, so Label Studio serves the least confident first;
- random: the same seed labels, then the rest of the pool in a random order (seeded),
  `step` at a time. The model is the same, so it is fitted here rather than in the
  backend: Label Studio's "Uniform sampling" would only pick the same way.

After every step the model the backend trained (fitted here the same way on the same
labels: LogisticRegression is deterministic) is scored on the test set. Reported per
seed: labels needed to reach 99 % of the accuracy of the model trained on all 1,400
(labeling goes on past `cap` until it does), the ratio to random, and the area under the
learning curve from the seed labels to `cap` (bench/curves.py).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.model_selection import train_test_split

from aldaemon.secret import Secret
from aldaemon.service.runtime import Runtime
from bench import common, curves, digits
from bench.label_efficiency import TARGET_SHARE_OF_FULL, keep_labeling
from demo.labelstudio import DemoGateway
from examples.ml_backend.process import BackendProcess
from tests.lsserver import LabelStudioClient, LabelStudioServer

NAME = "ml_backend_digits"
TEST_SIZE = 397
SEED_PER_CLASS = 2
Features = npt.NDArray[np.float64]


class Data:
    """The fixed split: pool (task) digit ids and test digit ids, features and labels."""

    def __init__(self) -> None:
        self.features, self.targets = digits.digits()
        ids = np.arange(len(self.targets))
        pool, test = train_test_split(
            ids, test_size=TEST_SIZE, stratify=self.targets, random_state=0
        )
        self.pool: list[int] = sorted(int(i) for i in pool)
        self.test: list[int] = sorted(int(i) for i in test)

    def accuracy(self, labeled: Sequence[int]) -> float:
        """Test accuracy of the backend's model fitted on these digit ids."""
        model = digits.fit(self.features[list(labeled)], [int(self.targets[i]) for i in labeled])
        predicted = model.predict(self.features[self.test])
        return float(np.mean(predicted == self.targets[self.test]))

    def seed_labels(self, seed: int) -> list[int]:
        chooser = random.Random(f"digits-seed-labels-{seed}")
        chosen: list[int] = []
        for digit in range(10):
            of_digit = [i for i in self.pool if int(self.targets[i]) == digit]
            chosen += chooser.sample(of_digit, SEED_PER_CLASS)
        return chosen


def random_curve(
    data: Data, seed: int, *, step: int, cap: int, target: float
) -> list[tuple[int, float]]:
    """The random arm: seed labels, then the rest of the pool in a seeded random order."""
    labeled = data.seed_labels(seed)
    rest = [i for i in data.pool if i not in set(labeled)]
    random.Random(f"digits-random-order-{seed}").shuffle(rest)
    curve = [(len(labeled), data.accuracy(labeled))]
    while keep_labeling(
        labels=len(labeled),
        cap=cap,
        reached_target=any(a >= target for _, a in curve),
        pool_left=len(rest),
    ):
        labeled += rest[:step]
        rest = rest[step:]
        curve.append((len(labeled), data.accuracy(labeled)))
    return curve


async def aldaemon_curve(
    server: LabelStudioServer,
    backend: BackendProcess,
    data: Data,
    seed: int,
    *,
    step: int,
    cap: int,
    target: float,
    max_labels: int,
    work_dir: Path,
) -> tuple[list[tuple[int, float]], list[dict[str, Any]]]:
    """The aldaemon arm through Label Studio and the backend; the curve and per-step log."""
    client = LabelStudioClient(server)
    project_id, by_task = digits.create_project(
        server, client, title=f"digits seed {seed}", digit_ids=data.pool
    )
    task_of_digit = {digit_id: task_id for task_id, digit_id in by_task.items()}
    labeled = data.seed_labels(seed)
    for digit_id in labeled:
        digits.annotate(client, task_of_digit[digit_id], int(data.targets[digit_id]))
    digits.connect(client, project_id, backend)
    config = common.daemon_config(
        directory=work_dir / f"daemon-{seed}",
        server=server,
        project_id=project_id,
        retrain={
            "min_new_annotations": min(step, len(labeled)),
            "min_interval": 0,
            "min_per_class": 1,
        },
        predictions={"prune_per_cycle": 0},
        ml_backend={"batch_size": 100, "timeout": 60},
    )
    curve: list[tuple[int, float]] = []
    steps: list[dict[str, Any]] = []
    async with (
        Runtime(config) as runtime,
        DemoGateway(url=server.url, token=Secret(server.legacy_token)) as annotator,
    ):
        while True:
            began = time.perf_counter()
            report = await runtime.run_cycle(config.projects[0])
            if report.outcome != "ok" or report.version is None:
                raise RuntimeError(
                    f"no version at {len(labeled)} labels: {report.outcome} {report.decision} "
                    f"{report.error or ''}"
                )
            cycle_seconds = time.perf_counter() - began
            curve.append((len(labeled), data.accuracy(labeled)))
            if not keep_labeling(
                labels=len(labeled),
                cap=cap,
                reached_target=any(a >= target for _, a in curve),
                pool_left=min(len(data.pool), max_labels) - len(labeled),
            ):
                break
            for _ in range(step):
                task = await annotator.next_task(project_id)
                if task is None:
                    break
                digit_id = by_task[int(task["id"])]
                label = str(int(data.targets[digit_id]))
                await annotator.create_annotation(
                    int(task["id"]), schema=digits.SCHEMA, label=label
                )
                labeled.append(digit_id)
            steps.append(
                {
                    "version": report.version,
                    "backend_version": report.backend_version,
                    "cycle_s": common.rounded(cycle_seconds),
                    "steps_s": {k: common.rounded(v) for k, v in report.seconds.items()},
                }
            )
    return curve, steps


def summarize(
    runs: Sequence[dict[str, Any]], *, cap: int, target: float, max_labels: int | None = None
) -> dict[str, Any]:
    """Per seed and median: labels needed, ratio to random, AULC up to `cap`.

    A run stopped at `max_labels` before the target counts as `max_labels` (censored)."""
    bound = max_labels or cap
    ours = [curves.labels_needed(r["aldaemon"], target=target) for r in runs]
    theirs = [curves.labels_needed(r["random"], target=target) for r in runs]
    comparison = curves.compare_to_random(ours, theirs, cap=bound)
    area_ours = [curves.normalized_area([p for p in r["aldaemon"] if p[0] <= cap]) for r in runs]
    area_theirs = [curves.normalized_area([p for p in r["random"] if p[0] <= cap]) for r in runs]
    return {
        "per_seed": [
            {
                "seed": r["seed"],
                "aldaemon_labels_needed": o,
                "random_labels_needed": t,
                "ratio": ratio,
                "aldaemon_aulc": common.rounded(a, 4),
                "random_aulc": common.rounded(b, 4),
            }
            for r, o, t, ratio, a, b in zip(
                runs, ours, theirs, comparison.ratios, area_ours, area_theirs, strict=True
            )
        ],
        "median_labels_needed": {
            "aldaemon": statistics.median([o or bound for o in ours]),
            "random": statistics.median([t or bound for t in theirs]),
        },
        "median_ratio": comparison.median_ratio,
        "censored": comparison.censored,
        "median_aulc": {
            "aldaemon": common.rounded(statistics.median(area_ours), 4),
            "random": common.rounded(statistics.median(area_theirs), 4),
        },
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    data = Data()
    full = data.accuracy(data.pool)
    target = TARGET_SHARE_OF_FULL * full
    print(f"model on all {len(data.pool)} pool digits: accuracy {full:.4f}; target {target:.4f}")
    runs: list[dict[str, Any]] = []
    payload: dict[str, Any] = {}
    with (
        common.work_directory(NAME, keep=args.keep) as work_dir,
        common.label_studio(work_dir, startup_timeout=digits.STARTUP_TIMEOUT) as server,
        digits.example_backend(server, work_dir) as backend,
    ):
        log_stream = common.quiet_daemon_logs(work_dir / "daemon.log")
        try:
            for seed in args.seeds:
                began = time.perf_counter()
                ours, steps = await aldaemon_curve(
                    server, backend, data, seed,
                    step=args.step, cap=args.cap, target=target,
                    max_labels=args.max_labels, work_dir=work_dir,
                )  # fmt: skip
                theirs = random_curve(data, seed, step=args.step, cap=args.cap, target=target)
                runs.append(
                    {
                        "seed": seed,
                        "aldaemon": ours,
                        "random": theirs,
                        "steps": steps,
                        "seconds": common.rounded(time.perf_counter() - began),
                    }
                )
                print(f"seed {seed}: aldaemon {ours[-1]}, random {theirs[-1]}")
                # Written after every seed: a run cut short keeps the seeds it finished.
                payload = _payload(args, data, runs, full=full, target=target,
                                   machine=common.machine_info(server))  # fmt: skip
                common.write_result(NAME, payload, module=f"bench.{NAME}")
        finally:
            log_stream.close()
    return payload


def _payload(
    args: argparse.Namespace,
    data: Data,
    runs: Sequence[dict[str, Any]],
    *,
    full: float,
    target: float,
    machine: dict[str, Any],
) -> dict[str, Any]:
    return {
        "pool": len(data.pool),
        "test": len(data.test),
        "step": args.step,
        "cap": args.cap,
        "max_labels": args.max_labels,
        "seeds_done": [run["seed"] for run in runs],
        "seed_labels": SEED_PER_CLASS * 10,
        "full_pool_accuracy": common.rounded(full, 4),
        "target_accuracy": common.rounded(target, 4),
        "summary": summarize(runs, cap=args.cap, target=target, max_labels=args.max_labels),
        "runs": list(runs),
        "machine": machine,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}", description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--step", type=int, default=40, help="labels between two retrains")
    parser.add_argument("--cap", type=int, default=400, help="labels the AULC spans")
    parser.add_argument(
        "--max-labels", type=int, default=800,
        help="aldaemon's arm stops here even below the target (censored: reported so)",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    payload = asyncio.run(run(args))
    print(payload["summary"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
