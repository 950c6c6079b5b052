"""Benchmark: the cycle time of a 10,000-task named-entity project, next to its floor.

    python -m bench.ner_cycle_latency [--size 10000] [--repetitions 3] [--external]

Like bench/cycle_latency.py (same steps, same floor), for `<Labels>` over `<Text>`:
import `size` synthetic sentences (bench/ner_corpus.py), annotate 40 with their gold
spans and publish two warm-up versions; then each repetition

1. annotates 10 more tasks (min_new_annotations); the clock starts when the last POST
   returned;
2. runs one cycle (`Runtime.run_cycle`: train the CRF, predict and score every unlabeled
   task, upload the span predictions, activate, re-sort the view); the clock stops when
   it returns;
3. measures the FLOOR: one bare bulk import of the very predictions the cycle uploaded
   (same tasks, spans and scores) under another model_version, then deletes it again.

`--external` uses the Label Studio named by ALDAEMON_TEST_LS_URL/_TOKEN/_PAT (a server
already running, as the test suite can reuse one) instead of starting one; the daemon's
own prune is off (prune_per_cycle = 0) so it never runs beside a measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aldaemon.labelstudio.served_config import read_served_schema
from aldaemon.service.runtime import Runtime
from bench import common
from bench.ner_corpus import NER_CONFIG, ner_texts, span_result
from tests.lsserver import LabelStudioClient, LabelStudioServer

NAME = "ner_cycle_latency"
NEW_LABELS_PER_CYCLE = 10
FIRST_LABELS = 40
WARM_UP_VERSIONS = 2
TIMED_METHODS = ("import_predictions", "update_project", "replace_view", "create_view")


async def measure(
    *, server: LabelStudioServer, size: int, repetitions: int, work_dir: Path
) -> dict[str, Any]:
    client = LabelStudioClient(server)
    items = ner_texts(size)
    started = time.perf_counter()
    project_id, listed = common.create_project_of(
        client,
        title=f"ner latency {size}",
        label_config=NER_CONFIG,
        data=[{"text": item.text, "n": n} for n, item in enumerate(items)],
    )
    by_task_id = {task_id: items[int(data["n"])] for task_id, data in listed.items()}
    print(f"project {project_id}: {size} tasks imported in {time.perf_counter() - started:.1f} s")
    time.sleep(6)  # the poll's overlap window (see bench/cycle_latency.py)
    unlabeled = sorted(by_task_id, reverse=True)

    def label_next(count: int) -> None:
        for _ in range(count):
            task_id = unlabeled.pop()
            body = {"result": span_result(by_task_id[task_id])}
            client.call("POST", f"/api/tasks/{task_id}/annotations/", body)

    config = common.daemon_config(
        directory=work_dir / "daemon",
        server=server,
        project_id=project_id,
        retrain={"min_new_annotations": NEW_LABELS_PER_CYCLE, "min_interval": 0},
        predictions={"keep_versions": 2, "prune_per_cycle": 0},
    )
    project = config.projects[0]
    schema = read_served_schema(NER_CONFIG)
    figures: list[dict[str, Any]] = []
    async with Runtime(config) as runtime:
        assert runtime.gateway is not None and runtime.store is not None
        timer = common.CallTimer()
        timer.wrap(runtime.gateway, *TIMED_METHODS)
        for number in range(WARM_UP_VERSIONS):
            label_next(FIRST_LABELS if number == 0 else NEW_LABELS_PER_CYCLE)
            report = await runtime.run_cycle(project)
            _require_published(report.outcome, report.counts, report.error)
            print(f"warm-up {report.version}: {sum(report.seconds.values()):.1f} s")
        timer.take()
        for repetition in range(1, repetitions + 1):
            label_next(NEW_LABELS_PER_CYCLE)
            crossed = time.perf_counter()
            report = await runtime.run_cycle(project)
            latency = time.perf_counter() - crossed
            _require_published(report.outcome, report.counts, report.error)
            calls = timer.take()
            assert report.version is not None
            predictions = runtime.store.load_predictions(project.id, report.version)
            floor_version = f"bench-floor-{repetition}"
            started = time.perf_counter()
            created = await runtime.gateway.import_predictions(
                project.id, model_version=floor_version, schema=schema, predictions=predictions
            )
            floor = time.perf_counter() - started
            if created != len(predictions):
                raise RuntimeError(f"floor import created {created} of {len(predictions)}")
            await runtime.gateway.delete_model_version(project.id, floor_version)
            timer.take()
            steps = report.seconds
            row = {
                "version": report.version,
                "predictions": len(predictions),
                "spans_predicted": sum(len(p.labels or ()) for p in predictions),
                "latency_s": latency,
                "floor_s": floor,
                "latency_over_floor": latency / floor,
                "train_s": steps.get("train", 0.0),
                "score_s": steps.get("score", 0.0),
                "upload_s": steps.get("upload", 0.0),
                "upload_requests": len(calls.get("import_predictions", [])),
                "activate_s": steps.get("activate", 0.0),
            }
            figures.append(row)
            print(
                f"rep {repetition}: latency {latency:.2f} s, floor {floor:.2f} s, ratio "
                f"{latency / floor:.2f}; train {row['train_s']:.2f} score {row['score_s']:.2f} "
                f"upload {row['upload_s']:.2f}"
            )
    keys = [k for k in figures[0] if k != "version"]
    medians = {k: common.rounded(common.median([float(f[k]) for f in figures])) for k in keys}
    return {"tasks": size, "repetitions": figures, "median": medians}


def _require_published(outcome: str, counts: dict[str, int], error: str | None) -> None:
    if outcome != "ok" or "activated" not in counts:
        raise RuntimeError(f"the cycle did not publish a version: {outcome} {error or ''}")


async def run(*, size: int, repetitions: int, keep: bool, external: bool) -> dict[str, Any]:
    with (
        common.work_directory(NAME, keep=keep) as work_dir,
        common.server_for(work_dir, external=external) as server,
    ):
        log_stream = common.quiet_daemon_logs(work_dir / "daemon.log")
        try:
            result = await measure(
                server=server, size=size, repetitions=repetitions, work_dir=work_dir
            )
        finally:
            log_stream.close()
        return {"result": result, "machine": common.machine_info(server)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ner_cycle_latency", description=__doc__)
    parser.add_argument("--size", type=int, default=10000)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--external", action="store_true", help="use ALDAEMON_TEST_LS_URL")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    payload = asyncio.run(
        run(size=args.size, repetitions=args.repetitions, keep=args.keep, external=args.external)
    )
    m = payload["result"]["median"]
    print(
        f"{args.size} tasks: latency {m['latency_s']:.2f} s = {m['latency_over_floor']:.2f} x "
        f"floor ({m['floor_s']:.2f} s)"
    )
    common.write_result(NAME, payload, module=f"bench.{NAME}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
