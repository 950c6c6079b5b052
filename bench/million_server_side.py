"""Label Studio's share of one cycle in a 1M-task project: the floor under freshness.

    python -m bench.million_server_side --database aldaemon_bench_million_1m [--size 1000000]

Runs against the project a `bench.million --database NAME` run imported (same title), in
the Label Studio on PostgreSQL it kept. Without a daemon synced to the project (its first
full read takes ~45 minutes at 1M: BENCHMARKS.md), this times the server calls a cycle
that publishes K = 1,000 (`queue_depth`'s default) makes, through the daemon's own
gateway, `--repetitions` times:

- read_project: `get_project` (each cycle starts with it);
- versions: `model_version_counts`, which the upload calls twice (name not taken before,
  verify after);
- import, activate (project PATCH + queue view, also timed apart), queue page, prune:
  bench/queue_depth.py's `publish_once` for K = 1,000 random tasks.

What a cycle adds on the daemon's side (poll, train, score) is not here; freshness at
1M is at least the sum of these.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aldaemon.labelstudio import LabelStudioGateway
from aldaemon.secret import Secret
from aldaemon.sync.versions import queue_view_data
from bench import common
from bench.million_setup import label_studio_on_postgres, reusable_project, task_ids_by_pool_index
from bench.queue_depth import VIEW_TITLE, publish_once
from tests.lsserver import LabelStudioClient, LabelStudioServer

NAME = "million_server_side"
DEPTH = 1000


async def measure(
    server: LabelStudioServer, *, project_id: int, task_ids: Sequence[int], repetitions: int
) -> list[dict[str, float]]:
    client = LabelStudioClient(server)
    view = client.call(
        "POST",
        "/api/dm/views/",
        {"project": project_id, "data": queue_view_data(title=VIEW_TITLE, version="none")},
    )
    rng = random.Random(14)
    rows = []
    async with LabelStudioGateway(
        url=server.url, token=Secret(server.legacy_token), timeout=common.SLOW_CALL_TIMEOUT
    ) as gateway:
        timer = common.CallTimer()  # splits publish_once's activation into its two calls
        timer.wrap(gateway, "update_project", "replace_view")
        for repetition in range(repetitions):
            started = time.perf_counter()
            await gateway.get_project(project_id)
            read_project = time.perf_counter() - started
            started = time.perf_counter()
            await gateway.model_version_counts(project_id)
            versions = time.perf_counter() - started
            figures = await publish_once(
                gateway,
                server,
                project_id=project_id,
                view_id=int(view["id"]),
                task_ids=task_ids,
                depth=DEPTH,
                version=f"bench-server-side-{repetition}",
                rng=rng,
                prune=True,
            )
            calls = timer.take()
            row = {
                "read_project_s": read_project,
                "versions_s": versions,
                **figures,
                "project_patch_s": sum(calls["update_project"]),
                "view_patch_s": sum(calls["replace_view"]),
            }
            row["cycle_floor_s"] = read_project + 2 * versions + row["import_s"] + row["activate_s"]
            rows.append(row)
            print(", ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}", description=__doc__)
    parser.add_argument("--database", required=True)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args(argv)
    work_dir = Path(tempfile.gettempdir()) / f"aldaemon-bench-{args.database}"
    with label_studio_on_postgres(work_dir, database=args.database) as server:
        client = LabelStudioClient(server)
        title = f"million {args.size}"
        project_id = reusable_project(client, title=title, size=args.size, annotated=True)
        if project_id is None:
            raise SystemExit(f"no project {title!r} of {args.size} tasks in {args.database}")
        task_ids = task_ids_by_pool_index(client, project_id, args.size)
        rows = asyncio.run(
            measure(server, project_id=project_id, task_ids=task_ids, repetitions=args.repetitions)
        )
        medians: dict[str, Any] = {
            key: common.rounded(common.median([row[key] for row in rows])) for key in rows[0]
        }
        payload = {
            "tasks": args.size,
            "depth": DEPTH,
            "rows": rows,
            "median": medians,
            "machine": common.machine_info(server),
        }
    print("medians:", medians)
    common.write_result(NAME, payload, module=f"bench.{NAME}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
