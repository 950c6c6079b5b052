"""Benchmark 2: what an idle poll costs, at 1,000 and 10,000 tasks.

    python -m bench.idle_cost [--sizes 1000 10000] [--polls 5]

For each size: a project of fine-food reviews (its import left to age past the overlap
window), 20 labels, one cycle that reads every task and publishes a version, then
`--polls` cycles with nothing changed in Label Studio.
Each idle cycle's HTTP requests (`CycleReport.counts["http_requests"]`) and response
bytes (the gateway's `bytes_received`, counted in its httpx event hooks, so retries and
token refreshes would show) are recorded.

Idle polls differ by how long ago the watermark last moved, because the daemon asks
differently:
- within the overlap: right after a change the poll reaches WATERMARK_OVERLAP_SECONDS
  below the watermark (rows can commit out of timestamp order), so it re-reads the
  tasks changed in that window;
- the first poll after WATERMARK_SETTLE_SECONDS still re-reads that window once (the
  daemon decides "settled" from the previous poll's time, so every move of the watermark
  is followed by at least one re-read); recorded on its own;
- settled (the `--polls` after it): only tasks strictly newer than the watermark are
  asked for: the steady state of an idle project, which the target is about.
Also shown: the hourly resync (full id listing, how deleted tasks are found), which an
idle project pays once per `resync_interval`.

Target: settled idle polls cost the same at both sizes (same requests, bytes within 5 %:
the answers carry the project's title and task counts), and at most 2 requests.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aldaemon.loop.poll import WATERMARK_OVERLAP_SECONDS, WATERMARK_SETTLE_SECONDS
from aldaemon.service.runtime import Runtime
from bench import common
from tests.lsserver import LabelStudioClient, LabelStudioServer

NAME = "idle_cost"
MAX_REQUESTS = 2
SEED_LABELS = 20
# "The same" bytes: the project answer holds the title and task counts, whose digits grow
# with the size ("idle 10000" is one character longer than "idle 1000"); 5 % is far below
# what one task's data would add, and far above those few characters.
SAME_BYTES_TOLERANCE = 0.05


async def measure_size(
    *, server: LabelStudioServer, client: LabelStudioClient, size: int, polls: int, work_dir: Path
) -> dict[str, Any]:
    tasks = common.repeated_tasks(common.corpus(), size)
    project_id, by_task_id = common.create_project(client, title=f"idle {size}", tasks=tasks)
    # Labels made within seconds of the import would put the whole project in the overlap
    # window of the polls below; a project imported before its annotators start does not
    # look like that (the overlap re-read is then just the newest labels).
    time.sleep(WATERMARK_OVERLAP_SECONDS + 1.0)
    for task_id in sorted(by_task_id)[:SEED_LABELS]:
        common.annotate(client, task_id, by_task_id[task_id].label)
    config = common.daemon_config(
        directory=work_dir / f"daemon-{size}",
        server=server,
        project_id=project_id,
        retrain={"min_new_annotations": 10, "min_interval": 0},
    )
    project = config.projects[0]
    async with Runtime(config) as runtime:
        gateway = runtime.gateway
        assert gateway is not None

        async def one_poll(*, force_resync: bool = False) -> dict[str, Any]:
            await runtime.wait_for_prunes()  # its requests must not be counted as the poll's
            bytes_before = gateway.bytes_received
            started = time.perf_counter()
            report = await runtime.run_cycle(project, force_resync=force_resync)
            seconds = time.perf_counter() - started
            return {
                "outcome": report.outcome,
                "decision": report.decision,
                "http_requests": report.counts.get("http_requests", 0),
                "bytes": gateway.bytes_received - bytes_before,
                "tasks_read": report.counts.get("tasks_read", 0),
                "seconds": seconds,
            }

        first = await one_poll()
        if first["outcome"] != "ok":
            raise RuntimeError(f"the first cycle did not publish: {first}")
        within_overlap = await one_poll()
        await asyncio.sleep(WATERMARK_SETTLE_SECONDS + 1.0)
        # The daemon re-reads the overlap window once more in the first poll after the
        # settle time (every move of the watermark is followed by such a re-read): that
        # poll is recorded on its own, the steady state starts after it.
        first_after_settle = await one_poll()
        settled = [await one_poll() for _ in range(polls)]
        resync = await one_poll(force_resync=True)
        await runtime.wait_for_prunes()
    summary = {
        "requests_max": max(p["http_requests"] for p in settled),
        "requests_median": common.median([p["http_requests"] for p in settled]),
        "bytes_median": common.median([p["bytes"] for p in settled]),
        "seconds_median": common.rounded(common.median([p["seconds"] for p in settled]), 4),
    }
    print(
        f"[{size}] settled idle poll: {summary['requests_max']} request(s) max, "
        f"{summary['bytes_median']:.0f} bytes, {summary['seconds_median'] * 1000:.0f} ms; "
        f"within overlap: {within_overlap['http_requests']} request(s), "
        f"{within_overlap['bytes']} bytes; resync: {resync['http_requests']} request(s), "
        f"{resync['bytes']} bytes"
    )
    return {
        "tasks": size,
        "first_cycle": first,
        "within_overlap": within_overlap,
        "first_after_settle": first_after_settle,
        "settled": settled,
        "settled_summary": summary,
        "resync": resync,
    }


async def run(*, sizes: Sequence[int], polls: int, keep: bool) -> dict[str, Any]:
    with (
        common.work_directory(NAME, keep=keep) as work_dir,
        common.label_studio(work_dir) as server,
    ):
        log_stream = common.quiet_daemon_logs(work_dir / "daemon.log")
        client = LabelStudioClient(server)
        try:
            results = [
                await measure_size(
                    server=server, client=client, size=size, polls=polls, work_dir=work_dir
                )
                for size in sizes
            ]
        finally:
            log_stream.close()
        smallest, largest = results[0]["settled_summary"], results[-1]["settled_summary"]
        return {
            "target": f"settled idle poll: same at every size, <= {MAX_REQUESTS} requests",
            "sizes": results,
            "largest_over_smallest": {
                "requests": largest["requests_median"] / smallest["requests_median"],
                "bytes": largest["bytes_median"] / smallest["bytes_median"],
                "seconds": largest["seconds_median"] / smallest["seconds_median"],
            },
            "target_met": all(
                r["settled_summary"]["requests_max"] <= MAX_REQUESTS
                and r["settled_summary"]["requests_median"] == smallest["requests_median"]
                and abs(r["settled_summary"]["bytes_median"] / smallest["bytes_median"] - 1)
                <= SAME_BYTES_TOLERANCE
                for r in results
            ),
            "machine": common.machine_info(server),
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.idle_cost", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--polls", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    payload = asyncio.run(run(sizes=args.sizes, polls=args.polls, keep=args.keep))
    ratio = payload["largest_over_smallest"]
    print(
        f"largest/smallest size: requests x{ratio['requests']:.2f}, bytes x{ratio['bytes']:.2f}, "
        f"time x{ratio['seconds']:.2f}; target {'met' if payload['target_met'] else 'MISSED'}"
    )
    common.write_result(NAME, payload, module=f"bench.{NAME}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
