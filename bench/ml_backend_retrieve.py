"""Label Studio's own "Retrieve Predictions" against aldaemon's scoring, one backend, one run.

    python -m bench.ml_backend_retrieve [--tasks 10000] [--labels 40] [--batch-size 100]

One private Label Studio, the example backend as a process, two projects holding the same
`--tasks` digit images (the 1,797 bundled digits repeated), `--labels` of them labeled
(four of each digit) and the backend trained once through Label Studio
(`POST /api/ml/{id}/train`) in each, so both sides score with a trained model:

- retrieve: the Data Manager action `retrieve_tasks_predictions` on every task, as a user
  clicks it (one request; the client waits up to 30 minutes). Measured: whether it
  answered 200, its wall time, what it said, and how many predictions Label Studio really
  holds afterwards (model-versions count);
- aldaemon: one cycle (`Runtime.run_cycle`) of a `model = "ml-backend"` project: training
  requested, the unlabeled pool scored through /predict in `--batch-size` batches, the
  predictions uploaded, checked and activated. Measured: wall time per step and the
  count Label Studio holds.

Both sides run in the same process, one after the other, on the same machine state.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aldaemon.service.runtime import Runtime
from bench import common, digits
from examples.ml_backend.process import BackendProcess
from tests.lsserver import LabelStudioClient, LabelStudioServer, LabelStudioServerError, http_json

NAME = "ml_backend_retrieve"
RETRIEVE_TIMEOUT = 1800.0


def labeled_positions(count: int) -> list[int]:
    """Positions (task order) of the labeled tasks: the first `count`, every digit alike."""
    return list(range(count))


def prepare(
    server: LabelStudioServer,
    client: LabelStudioClient,
    backend: BackendProcess,
    *,
    title: str,
    tasks: int,
    labels: int,
) -> tuple[int, int, int]:
    """A project of `tasks` digits, `labels` labeled, the backend connected and trained once.

    Returns (project id, backend id, unlabeled tasks)."""
    _, targets = digits.digits()
    digit_ids = [n % len(targets) for n in range(tasks)]
    project_id, by_task = digits.create_project(server, client, title=title, digit_ids=digit_ids)
    task_ids = sorted(by_task)
    for position in labeled_positions(labels):
        digits.annotate(client, task_ids[position], int(targets[by_task[task_ids[position]]]))
    backend_id = digits.connect(client, project_id, backend)
    return project_id, backend_id, tasks - labels


def retrieve(server: LabelStudioServer, project_id: int, backend_id: int) -> dict[str, Any]:
    """Train once through Label Studio, then its own retrieve action on every task."""
    http_json(
        "POST", f"{server.url}/api/ml/{backend_id}/train", token=server.legacy_token,
        body={}, timeout=RETRIEVE_TIMEOUT,
    )  # fmt: skip
    started = time.perf_counter()
    try:
        answer: Any = http_json(
            "POST",
            f"{server.url}/api/dm/actions?id=retrieve_tasks_predictions&project={project_id}",
            token=server.legacy_token,
            body={"selectedItems": {"all": True, "excluded": []}},
            timeout=RETRIEVE_TIMEOUT,
        )
        status = "200"
    except (LabelStudioServerError, OSError) as error:
        answer, status = str(error)[:300], type(error).__name__
    seconds = time.perf_counter() - started
    # Label Studio stores the predictions under the version each result carries (the
    # backend's); the connection's title appears too, with none. Count them all.
    counts = digits.model_version_counts(server, project_id)
    return {
        "status": status,
        "answer": answer,
        "seconds": common.rounded(seconds),
        "predictions_stored": sum(counts.values()),
        "model_version_counts": counts,
    }


async def aldaemon_cycle(
    server: LabelStudioServer, project_id: int, *, work_dir: Path, batch_size: int
) -> dict[str, Any]:
    """One daemon cycle of the project: train, score through /predict, publish."""
    config = common.daemon_config(
        directory=work_dir / "daemon",
        server=server,
        project_id=project_id,
        retrain={"min_new_annotations": 1, "min_interval": 0, "min_per_class": 1},
        predictions={"prune_per_cycle": 0},
        ml_backend={"batch_size": batch_size, "timeout": 60},
    )
    async with Runtime(config) as runtime:
        started = time.perf_counter()
        report = await runtime.run_cycle(config.projects[0])
        seconds = time.perf_counter() - started
    counts = digits.model_version_counts(server, project_id)
    return {
        "outcome": report.outcome,
        "error": report.error,
        "version": report.version,
        "backend_version": report.backend_version,
        "seconds": common.rounded(seconds),
        "steps_s": {k: common.rounded(v) for k, v in report.seconds.items()},
        "tasks_scored": report.counts.get("tasks_scored", 0),
        "predictions_stored": counts.get(report.version or "", 0),
        "model_version_counts": counts,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with (
        common.work_directory(NAME, keep=args.keep) as work_dir,
        common.label_studio(work_dir, startup_timeout=digits.STARTUP_TIMEOUT) as server,
        digits.example_backend(server, work_dir) as backend,
    ):
        log_stream = common.quiet_daemon_logs(work_dir / "daemon.log")
        client = LabelStudioClient(server)
        try:
            theirs_project, theirs_backend, unlabeled = prepare(
                server, client, backend, title="retrieve", tasks=args.tasks, labels=args.labels
            )
            ours_project, _, _ = prepare(
                server, client, backend, title="aldaemon", tasks=args.tasks, labels=args.labels
            )
            print(f"{args.tasks} tasks, {unlabeled} unlabeled per project; retrieving ...")
            theirs = retrieve(server, theirs_project, theirs_backend)
            print(f"retrieve: {theirs}")
            ours = await aldaemon_cycle(
                server, ours_project, work_dir=work_dir, batch_size=args.batch_size
            )
            print(f"aldaemon: {ours}")
        finally:
            log_stream.close()
        machine = common.machine_info(server)
    payload = {
        "tasks": args.tasks,
        "labeled": args.labels,
        "unlabeled": unlabeled,
        "batch_size": args.batch_size,
        "retrieve": theirs,
        "aldaemon": ours,
        "time_ratio_aldaemon_to_retrieve": (
            common.rounded(ours["seconds"] / theirs["seconds"]) if theirs["seconds"] else None
        ),
        "machine": machine,
    }
    common.write_result(NAME, payload, module=f"bench.{NAME}")
    return payload


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}", description=__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--labels", type=int, default=40, help="labeled tasks per project")
    parser.add_argument("--batch-size", type=int, default=100, help="aldaemon's batch_size")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if args.labels < 20 or args.labels >= args.tasks:
        print("--labels must be at least 20 (two of each digit) and below --tasks", file=sys.stderr)
        return 2
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
