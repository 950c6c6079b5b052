"""Benchmark: what publishing K of N predictions costs Label Studio, against all N.

    python -m bench.queue_depth [--size 10000] [--depths 500,1000,2000,5000] [--repetitions 3]

Why: `queue_depth` (publish only the K most informative tasks) is chosen from this. One
private Label Studio 1.23.2 on SQLite holds one project of `size` fine-food reviews; for
each K (and K = size, every task: the REFERENCE, measured in the same run) and each
repetition, through the daemon's own gateway calls:

1. import  one bulk `import/predictions` of K predictions under a fresh model version;
2. activate  `PATCH` the project (that version, uncertainty sampling) and replace the
   queue view's data, as `publish.activate_version` does;
3. queue   the first page (30 tasks) of the queue view, sorted by score: what an
   annotator opening the view waits for;
4. prune   `DELETE model-versions/` of that version, as the prune step does.

All of it runs twice: with the server's default prediction import, then after a restart
with `fflag_fix_back_4620_memory_efficient_predictions_import_08012025_short=true` (the
flag aldaemon recommends). Ratios are to K = size of the same setting, medians over the
repetitions.

Deleting predictions is slow (tens of ms each on a loaded SQLite) and the flag does not
touch it, so only the first `--prune-repetitions` repetitions of the first setting prune;
the other versions stay, and later repetitions import into a project holding more
predictions of other versions (every K alike: the depths are interleaved).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aldaemon.labelstudio import UNCERTAINTY_SAMPLING, LabelStudioGateway
from aldaemon.labelstudio.failures import MEMORY_EFFICIENT_IMPORT_FLAG
from aldaemon.records import PredictionRecord
from aldaemon.secret import Secret
from aldaemon.sync.versions import queue_view_data
from bench import common
from tests.lsserver import LabelStudioClient, LabelStudioServer, http_json

NAME = "queue_depth"
STEPS = ("import_s", "activate_s", "queue_s", "prune_s")
VIEW_TITLE = "Active learning queue"
QUEUE_PAGE = 30


async def publish_once(
    gateway: LabelStudioGateway,
    server: LabelStudioServer,
    *,
    project_id: int,
    view_id: int,
    task_ids: Sequence[int],
    depth: int,
    version: str,
    rng: random.Random,
    prune: bool,
) -> dict[str, float]:
    """Time the four steps for one version of `depth` predictions."""
    chosen = rng.sample(list(task_ids), depth)
    predictions = [
        PredictionRecord(task_id=task_id, label=rng.choice(["great", "other"]), score=rng.random())
        for task_id in sorted(chosen)
    ]
    figures: dict[str, float] = {}
    started = time.perf_counter()
    created = await gateway.import_predictions(
        project_id, model_version=version, schema=common.SCHEMA, predictions=predictions
    )
    figures["import_s"] = time.perf_counter() - started
    if created != depth:
        raise RuntimeError(f"{version}: Label Studio created {created} of {depth}")
    started = time.perf_counter()
    await gateway.update_project(project_id, model_version=version, sampling=UNCERTAINTY_SAMPLING)
    await gateway.replace_view(
        view_id, project_id=project_id, data=queue_view_data(title=VIEW_TITLE, version=version)
    )
    figures["activate_s"] = time.perf_counter() - started
    started = time.perf_counter()
    page = http_json(
        "GET",
        f"{server.url}/api/tasks/?"
        + urllib.parse.urlencode(
            {"view": view_id, "project": project_id, "page": 1, "page_size": QUEUE_PAGE}
        ),
        token=server.legacy_token,
        timeout=common.SLOW_CALL_TIMEOUT,
    )
    figures["queue_s"] = time.perf_counter() - started
    if len(page["tasks"]) != min(QUEUE_PAGE, depth):
        raise RuntimeError(f"{version}: the queue view lists {len(page['tasks'])} tasks")
    if prune:
        started = time.perf_counter()
        deleted = await gateway.delete_model_version(project_id, version)
        figures["prune_s"] = time.perf_counter() - started
        if deleted != depth:
            raise RuntimeError(f"{version}: deleted {deleted} of {depth}")
    return figures


async def measure_setting(
    server: LabelStudioServer,
    *,
    setting: str,
    project_id: int,
    view_id: int,
    task_ids: Sequence[int],
    depths: Sequence[int],
    repetitions: int,
    prune_repetitions: int,
) -> dict[str, Any]:
    rng = random.Random(7)
    rows: dict[int, list[dict[str, float]]] = {depth: [] for depth in depths}
    async with LabelStudioGateway(
        url=server.url, token=Secret(server.legacy_token), timeout=common.SLOW_CALL_TIMEOUT
    ) as gateway:
        for repetition in range(repetitions):
            for depth in depths:  # interleaved, so a load change hits every depth alike
                figures = await publish_once(
                    gateway,
                    server,
                    project_id=project_id,
                    view_id=view_id,
                    task_ids=task_ids,
                    depth=depth,
                    version=f"bench-{setting}-k{depth}-r{repetition}",
                    rng=rng,
                    prune=repetition < prune_repetitions,
                )
                rows[depth].append(figures)
                print(
                    f"{setting} K={depth} r{repetition}: "
                    + ", ".join(f"{step} {value:.2f}" for step, value in figures.items()),
                    flush=True,
                )
    reference = len(task_ids)
    medians = {
        depth: {
            step: common.median([row[step] for row in rows[depth] if step in row])
            for step in STEPS
            if any(step in row for row in rows[depth])
        }
        for depth in depths
    }
    table = []
    for depth in depths:
        total = sum(medians[depth].values())
        reference_total = sum(medians[reference].values())
        table.append(
            {
                "depth": depth,
                **{step: common.rounded(value) for step, value in medians[depth].items()},
                "total_s": common.rounded(total),
                "total_over_all_tasks": common.rounded(total / reference_total),
                "repetitions": [
                    {step: common.rounded(value) for step, value in row.items()}
                    for row in rows[depth]
                ],
            }
        )
    return {"setting": setting, "table": table}


def create_project(server: LabelStudioServer, size: int) -> tuple[int, int, list[int]]:
    client = LabelStudioClient(server)
    tasks = common.repeated_tasks(common.corpus(), size)
    project_id, mapping = common.create_project(client, title=f"queue depth {size}", tasks=tasks)
    view = client.call(
        "POST",
        "/api/dm/views/",
        {"project": project_id, "data": queue_view_data(title=VIEW_TITLE, version="none")},
    )
    return project_id, int(view["id"]), sorted(mapping)


async def run(
    *, size: int, depths: Sequence[int], repetitions: int, prune_repetitions: int, keep: bool
) -> dict[str, Any]:
    all_depths = sorted({*depths, size})
    settings: list[dict[str, Any]] = []
    with common.work_directory(NAME, keep=keep) as work_dir:
        server = LabelStudioServer(
            data_dir=Path(work_dir) / "label-studio",
            extra_env={MEMORY_EFFICIENT_IMPORT_FLAG: "false"},
        )
        server.start()
        try:
            project_id, view_id, task_ids = create_project(server, size)
            for setting, flag in (("default_import", "false"), ("memory_efficient_import", "true")):
                if server.extra_env[MEMORY_EFFICIENT_IMPORT_FLAG] != flag:
                    server.stop()
                    server.extra_env[MEMORY_EFFICIENT_IMPORT_FLAG] = flag
                    server.start()
                settings.append(
                    await measure_setting(
                        server,
                        setting=setting,
                        project_id=project_id,
                        view_id=view_id,
                        task_ids=task_ids,
                        depths=all_depths,
                        repetitions=repetitions,
                        prune_repetitions=prune_repetitions if not settings else 0,
                    )
                )
            machine = common.machine_info(server)
        finally:
            server.stop()
    return {"tasks": size, "settings": settings, "machine": machine}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.queue_depth", description=__doc__)
    parser.add_argument("--size", type=int, default=10000)
    parser.add_argument("--depths", default="500,1000,2000,5000")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--prune-repetitions", type=int, default=1)
    parser.add_argument("--name", default=NAME, help="results file name (bench/results/NAME.json)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    depths = [int(depth) for depth in args.depths.split(",") if depth.strip()]
    payload = asyncio.run(
        run(
            size=args.size,
            depths=depths,
            repetitions=args.repetitions,
            prune_repetitions=args.prune_repetitions,
            keep=args.keep,
        )
    )
    for setting in payload["settings"]:
        for row in setting["table"]:
            print(
                f"{setting['setting']:>24} K={row['depth']:>6}: "
                + ", ".join(f"{step} {row[step]:.2f}" for step in STEPS if step in row)
                + f", total {row['total_s']:.2f} s = {row['total_over_all_tasks']:.2f} x all"
            )
    common.write_result(args.name, payload, module=f"bench.{NAME}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
