"""Benchmark 1: cycle latency, next to the floor of a bare bulk import.

    python -m bench.cycle_latency [--sizes 1000 10000] [--repetitions 3]

For each project size: import that many fine-food reviews as tasks, wait out the poll's
overlap window (so the fresh import is not re-read as "recently changed"), then let the daemon
(`Runtime.run_cycle`, the code `aldaemon run` runs) publish two warm-up versions, so that
every measured upload meets the steady state `keep_versions = 2` leaves behind: two own
versions already on the server. Each repetition then

1. adds `min_new_annotations` (10) labels; the clock starts when the POST of the last
   one, the annotation that crosses the threshold, has returned;
2. runs one cycle at once (as a webhook would trigger it); the clock stops when
   `run_cycle` returns, i.e. the new version is active and the queue view re-sorted;
3. prunes (`aldaemon.loop.prune.prune_own_versions`, what the daemon runs in its own task
   after a cycle), timed on its own;
4. measures the FLOOR: one bare bulk import of the very predictions the cycle uploaded
   (same tasks, labels and scores) under another model_version, into the same project
   with the same number of predictions already there;
5. deletes that floor version again (timed too: it is the same server call as a prune),
   so the next repetition starts from the same state.

The headline is the median over repetitions of latency / floor (target: <= 1.3), with
the cycle split into train, score, upload, activate (project PATCH) and view (the queue
view PATCH), timed by wrapping the gateway's methods around their real requests.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aldaemon.config import Config, ProjectConfig
from aldaemon.loop.poll import WATERMARK_OVERLAP_SECONDS
from aldaemon.loop.prune import prune_own_versions
from aldaemon.service.runtime import Runtime
from bench import common
from tests.lsserver import LabelStudioClient, LabelStudioServer

NAME = "cycle_latency"
TARGET_RATIO = 1.3
NEW_LABELS_PER_CYCLE = 10  # = min_new_annotations: the 10th label crosses the threshold
FIRST_LABELS = 20
WARM_UP_VERSIONS = 2
TIMED_METHODS = ("import_predictions", "update_project", "replace_view", "create_view")


async def measure_size(
    *,
    server: LabelStudioServer,
    client: LabelStudioClient,
    size: int,
    repetitions: int,
    work_dir: Path,
    upload_batch_size: int | None,
) -> dict[str, Any]:
    """Every repetition's figures for one project size, and their medians."""
    tasks = common.repeated_tasks(common.corpus(), size)
    started = time.perf_counter()
    project_id, by_task_id = common.create_project(client, title=f"latency {size}", tasks=tasks)
    import_seconds = time.perf_counter() - started
    print(f"[{size}] project {project_id}: {size} tasks imported in {import_seconds:.1f} s")
    # A poll re-reads the tasks changed in the overlap window below its watermark. Labels
    # made within seconds of the import would put every task of the project in that window
    # for the first repetitions (it was so at 1,000 tasks: 0.6 s of a 1.35 s cycle), which
    # a project imported before its annotators start never sees.
    time.sleep(WATERMARK_OVERLAP_SECONDS + 1)
    unlabeled = sorted(by_task_id)
    random.Random(size).shuffle(unlabeled)

    def label_next(count: int) -> None:
        for _ in range(count):
            task_id = unlabeled.pop()
            common.annotate(client, task_id, by_task_id[task_id].label)

    predictions_options: dict[str, object] = {"keep_versions": 2, "prune_per_cycle": 0}
    if upload_batch_size is not None:
        predictions_options["batch_size"] = upload_batch_size
    config = common.daemon_config(
        directory=work_dir / f"daemon-{size}",
        server=server,
        project_id=project_id,
        # min_interval = 0: repetitions follow each other within seconds.
        retrain={"min_new_annotations": NEW_LABELS_PER_CYCLE, "min_interval": 0},
        # The daemon's own prune task is switched off (prune_per_cycle = 0) so that it
        # cannot run beside a measurement; the benchmark prunes explicitly, timed.
        predictions=predictions_options,
    )
    project = config.projects[0]
    batch_size = project.predictions.batch_size
    repetitions_done: list[dict[str, Any]] = []
    warm_up: list[dict[str, Any]] = []
    async with Runtime(config) as runtime:
        assert runtime.gateway is not None and runtime.store is not None
        timer = common.CallTimer()
        timer.wrap(runtime.gateway, *TIMED_METHODS, "delete_model_version")
        for number in range(WARM_UP_VERSIONS):
            label_next(FIRST_LABELS if number == 0 else NEW_LABELS_PER_CYCLE)
            report = await runtime.run_cycle(project)
            _require_published(report.outcome, report.counts, report.error)
            warm_up.append({"version": report.version, "seconds": _rounded(report.seconds)})
            print(f"[{size}] warm-up {report.version}: {sum(report.seconds.values()):.1f} s")
        timer.take()
        for repetition in range(1, repetitions + 1):
            figures = await _one_repetition(
                runtime=runtime,
                project=project,
                config=config,
                timer=timer,
                label_next=label_next,
                repetition=repetition,
            )
            repetitions_done.append(figures)
            print(
                f"[{size}] rep {repetition}: latency {figures['latency_s']:.2f} s, floor "
                f"{figures['floor_s']:.2f} s, ratio {figures['latency_over_floor']:.2f}; "
                f"train {figures['train_s']:.2f} score {figures['score_s']:.2f} upload "
                f"{figures['upload_s']:.2f} ({figures['upload_requests']} requests) activate "
                f"{figures['activate_s']:.2f} view {figures['view_s']:.2f}; prune "
                f"{figures['prune_s']:.1f} s, floor delete {figures['floor_delete_s']:.1f} s"
            )
    return {
        "tasks": size,
        "upload_batch_size": batch_size,
        "task_import_s": common.rounded(import_seconds),
        "warm_up": warm_up,
        "repetitions": repetitions_done,
        "median": _medians(repetitions_done),
    }


async def _one_repetition(
    *,
    runtime: Runtime,
    project: ProjectConfig,
    config: Config,
    timer: common.CallTimer,
    label_next: Any,
    repetition: int,
) -> dict[str, Any]:
    assert runtime.gateway is not None and runtime.store is not None
    label_next(NEW_LABELS_PER_CYCLE)
    threshold_crossed = time.perf_counter()
    report = await runtime.run_cycle(project)
    latency = time.perf_counter() - threshold_crossed
    _require_published(report.outcome, report.counts, report.error)
    calls = timer.take()

    prune_ctx = runtime.context(
        dataclasses.replace(
            project, predictions=dataclasses.replace(project.predictions, prune_per_cycle=1)
        )
    )
    started = time.perf_counter()
    pruned = await prune_own_versions(prune_ctx)
    prune_seconds = time.perf_counter() - started

    assert report.version is not None
    predictions = runtime.store.load_predictions(project.id, report.version)
    floor_version = f"bench-floor-{repetition}"
    started = time.perf_counter()
    created = await runtime.gateway.import_predictions(
        project.id, model_version=floor_version, schema=common.SCHEMA, predictions=predictions
    )
    floor_seconds = time.perf_counter() - started
    if created != len(predictions):
        raise RuntimeError(f"floor import created {created} of {len(predictions)}")
    started = time.perf_counter()
    await runtime.gateway.delete_model_version(project.id, floor_version)
    floor_delete_seconds = time.perf_counter() - started
    timer.take()

    steps = report.seconds
    view = sum(calls.get("replace_view", [])) + sum(calls.get("create_view", []))
    return {
        "version": report.version,
        "predictions": report.counts.get("predictions_uploaded", 0),
        "http_requests": report.counts.get("http_requests", 0),
        "latency_s": latency,
        "cycle_steps_s": _rounded(steps),
        "train_s": steps.get("train", 0.0),
        "score_s": steps.get("score", 0.0),
        "upload_s": steps.get("upload", 0.0),
        "upload_requests": len(calls.get("import_predictions", [])),
        "upload_request_s": [common.rounded(s) for s in calls.get("import_predictions", [])],
        "activate_s": steps.get("activate", 0.0) - view,
        "view_s": view,
        "read_and_poll_s": steps.get("read_project", 0.0) + steps.get("poll", 0.0),
        # The id listing the daemon runs before a training when the last one is older than
        # a few minutes: part of the latency of such a cycle.
        "resync_s": steps.get("resync", 0.0),
        "prune_s": prune_seconds,
        "pruned": pruned,
        "floor_s": floor_seconds,
        "floor_delete_s": floor_delete_seconds,
        "latency_over_floor": latency / floor_seconds,
        "upload_over_floor": steps.get("upload", 0.0) / floor_seconds,
    }


def _require_published(outcome: str, counts: dict[str, int], error: str | None) -> None:
    if outcome != "ok" or "activated" not in counts:
        raise RuntimeError(f"the cycle did not publish a version: {outcome} {error or ''}")


MEDIAN_KEYS = (
    "latency_s",
    "floor_s",
    "latency_over_floor",
    "upload_over_floor",
    "train_s",
    "score_s",
    "upload_s",
    "activate_s",
    "view_s",
    "read_and_poll_s",
    "resync_s",
    "prune_s",
    "floor_delete_s",
    "http_requests",
    "predictions",
    "upload_requests",
)


def _medians(repetitions: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Median of each figure over the repetitions (prune: only those that deleted one)."""
    medians: dict[str, float] = {}
    for key in MEDIAN_KEYS:
        values = [float(r[key]) for r in repetitions if key != "prune_s" or r["pruned"]]
        medians[key] = common.rounded(common.median(values))
    return medians


def _rounded(seconds: dict[str, float]) -> dict[str, float]:
    return {step: common.rounded(value) for step, value in seconds.items()}


async def run(
    *, sizes: Sequence[int], repetitions: int, keep: bool, upload_batch_size: int | None
) -> dict[str, Any]:
    with (
        common.work_directory(NAME, keep=keep) as work_dir,
        common.label_studio(work_dir) as server,
    ):
        log_stream = common.quiet_daemon_logs(work_dir / "daemon.log")
        client = LabelStudioClient(server)
        results = []
        try:
            for size in sizes:
                results.append(
                    await measure_size(
                        server=server,
                        client=client,
                        size=size,
                        repetitions=repetitions,
                        work_dir=work_dir,
                        upload_batch_size=upload_batch_size,
                    )
                )
        finally:
            log_stream.close()
        return {
            "target": f"latency <= {TARGET_RATIO} x floor (median of repetitions)",
            "repetitions": repetitions,
            "new_labels_per_cycle": NEW_LABELS_PER_CYCLE,
            "sizes": results,
            "machine": common.machine_info(server),
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cycle_latency", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument(
        "--upload-batch-size",
        type=int,
        default=None,
        help="override predictions.batch_size (diagnostic; default: the daemon's default)",
    )
    parser.add_argument("--name", default=NAME, help="results file name (bench/results/NAME.json)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    payload = asyncio.run(
        run(
            sizes=args.sizes,
            repetitions=args.repetitions,
            keep=args.keep,
            upload_batch_size=args.upload_batch_size,
        )
    )
    for size in payload["sizes"]:
        m = size["median"]
        verdict = "met" if m["latency_over_floor"] <= TARGET_RATIO else "MISSED"
        print(
            f"{size['tasks']:>6} tasks: latency {m['latency_s']:.2f} s = "
            f"{m['latency_over_floor']:.2f} x floor ({m['floor_s']:.2f} s), target {verdict}"
        )
    common.write_result(args.name, payload, module=f"bench.{NAME}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
