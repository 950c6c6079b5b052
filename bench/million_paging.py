"""What one page of the daemon's full read costs Label Studio in a big project, and why.

    python -m bench.million_paging --database aldaemon_bench_million_1m [--size 1000000]

Runs against the project a `bench.million --database NAME` run imported (same title),
in the Label Studio on PostgreSQL that it kept. The daemon reads a project page by page
with a keyset filter (`tasks:id > last id seen`, ordered by id, page 1 of `page_size`
500). Label Studio answers every page with the project-wide totals of what the filter
matches (`COUNT(*)`, `SUM(total_annotations)`, `SUM(total_predictions)` over every task
after the cursor, seen in pg_stat_activity), so a page costs in proportion to the tasks
AFTER it, and a full read costs O(N^2 / page_size). Timed here, `--repetitions` each, at
cursors spread over the project:

- `keyset`: the daemon's request (`id > cursor`, page_size 500);
- `keyset 5000`: the same with page_size 5,000 (10x fewer pages, the same totals each);
- `windowed`: `id > cursor AND id <= cursor + 500` (a bounded window: the totals then
  cover at most one page).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import common
from bench.million_setup import label_studio_on_postgres, reusable_project
from tests.lsserver import LabelStudioClient, http_json

NAME = "million_paging"
PAGE = 500


def _filter(items: list[dict[str, Any]]) -> str:
    query = {"filters": {"conjunction": "and", "items": items}, "ordering": ["tasks:id"]}
    return json.dumps(query, separators=(",", ":"))


def _id_filter(operator: str, value: int) -> dict[str, Any]:
    return {"filter": "filter:tasks:id", "operator": operator, "type": "Number", "value": value}


def timed_page(
    client: LabelStudioClient, project_id: int, *, items: list[dict[str, Any]], page_size: int
) -> tuple[float, int]:
    query = urllib.parse.urlencode(
        {
            "project": project_id,
            "page": 1,
            "page_size": page_size,
            "fields": "all",
            "include": "id,updated_at,data",
            "query": _filter(items),
        }
    )
    started = time.perf_counter()
    answer = http_json(
        "GET",
        f"{client.url}/api/tasks/?{query}",
        token=common._legacy_token(client),
        timeout=common.SLOW_CALL_TIMEOUT,
    )
    return time.perf_counter() - started, len(answer["tasks"])


def measure(
    client: LabelStudioClient, project_id: int, *, first_id: int, size: int, repetitions: int
) -> list[dict[str, Any]]:
    rows = []
    for share in (0.0, 0.5, 0.9):
        cursor = first_id - 1 + int(size * share)
        variants = {
            "keyset": ([_id_filter("greater", cursor)], PAGE),
            "keyset 5000": ([_id_filter("greater", cursor)], PAGE * 10),
            "windowed": (
                [_id_filter("greater", cursor), _id_filter("less_or_equal", cursor + PAGE)],
                PAGE,
            ),
        }
        for name, (items, page_size) in variants.items():
            seconds, tasks = zip(
                *(
                    timed_page(client, project_id, items=items, page_size=page_size)
                    for _ in range(repetitions)
                ),
                strict=True,
            )
            row = {
                "cursor_share": share,
                "variant": name,
                "page_size": page_size,
                "tasks_returned": tasks[0],
                "seconds": [common.rounded(s) for s in seconds],
                "median_s": common.rounded(common.median(seconds)),
                "ms_per_task": common.rounded(1000 * common.median(seconds) / max(1, tasks[0])),
            }
            rows.append(row)
            print(
                f"cursor at {share:.0%}: {name:>12}: {row['median_s']:.3f} s for "
                f"{tasks[0]} tasks ({row['ms_per_task']:.2f} ms a task)",
                flush=True,
            )
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
        first = http_json(
            "GET",
            f"{client.url}/api/tasks/?project={project_id}&fields=all&include=id"
            "&page_size=1&page=1&" + urllib.parse.urlencode({"query": _filter([])}),
            token=common._legacy_token(client),
        )["tasks"][0]
        rows = measure(
            client,
            project_id,
            first_id=int(first["id"]),
            size=args.size,
            repetitions=args.repetitions,
        )
        payload = {"tasks": args.size, "rows": rows, "machine": common.machine_info(server)}
    common.write_result(NAME, payload, module=f"bench.{NAME}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
