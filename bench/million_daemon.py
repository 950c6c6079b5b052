"""The daemon under test for bench/million.py, in a process of its own, and its memory.

The benchmark's own process holds the synthetic pool and the task ids (hundreds of MiB
at 1M tasks); measured in-process, the daemon's RSS would include them. So the daemon
runs here as a child: `python -m bench.million_daemon CONFIG LOG` opens the daemon's own
`Runtime` (what `aldaemon run` runs) and obeys one JSON command per stdin line, answering
each with one `RESULT {...}` line on stdout:

- `{"do": "cycle"}`: `Runtime.run_cycle` now (as a webhook would trigger it); answers the
  cycle's outcome, version, counts (HTTP requests, tasks read) and per-step seconds;
- `{"do": "prune"}`: `prune_own_versions` with `prune_per_cycle = 1` (the daemon's own
  prune task, run explicitly so that it never overlaps a measurement), timed;
- `{"do": "floor", "version": V, "label_config": XML}`: the REFERENCE: one bare import
  of the predictions of version V as the store holds them, under another model version,
  through the daemon's own gateway (one `import_predictions` call), then its deletion;
  both timed;
- `{"do": "quit"}`.

It imports the daemon's modules only (bench/common.py would add ~66 MiB of its own
imports to the RSS measured); bench/million_watch.py is the parent's side.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from aldaemon.config import load_config
from aldaemon.labelstudio.labeling_config import parse_labeling_config
from aldaemon.loop.prune import prune_own_versions
from aldaemon.service.logs import configure_logging
from aldaemon.service.runtime import Runtime

RESULT_PREFIX = "RESULT "


# ---- the child --------------------------------------------------------------------------


async def serve(config_path: str, commands: IO[str], answers: IO[str]) -> None:
    config = load_config(config_path, env={})
    project = config.projects[0]
    async with Runtime(config) as runtime:
        assert runtime.store is not None and runtime.gateway is not None
        while line := await asyncio.to_thread(commands.readline):
            command = json.loads(line)
            if command["do"] == "quit":
                break
            answer = await _obey(runtime, project, command)
            answers.write(RESULT_PREFIX + json.dumps(answer) + "\n")
            answers.flush()


async def _obey(runtime: Runtime, project: Any, command: Mapping[str, Any]) -> dict[str, Any]:
    assert runtime.store is not None and runtime.gateway is not None
    started = time.perf_counter()
    if command["do"] == "cycle":
        report = await runtime.run_cycle(project)
        return {
            "outcome": report.outcome,
            "decision": report.decision,
            "version": report.version,
            "error": report.error,
            "counts": report.counts,
            "steps_s": {k: round(v, 3) for k, v in report.seconds.items()},
            "seconds": time.perf_counter() - started,
        }
    if command["do"] == "prune":
        one_per_cycle = dataclasses.replace(
            project, predictions=dataclasses.replace(project.predictions, prune_per_cycle=1)
        )
        pruned = await prune_own_versions(runtime.context(one_per_cycle))
        return {"pruned": pruned, "seconds": time.perf_counter() - started}
    if command["do"] == "floor":
        predictions = runtime.store.load_predictions(project.id, command["version"])
        version = f"bench-floor-{command['version']}"
        schema = parse_labeling_config(command["label_config"])
        began = time.perf_counter()  # only the import request is the reference
        created = await runtime.gateway.import_predictions(
            project.id, model_version=version, schema=schema, predictions=predictions
        )
        import_seconds = time.perf_counter() - began
        began = time.perf_counter()
        deleted = await runtime.gateway.delete_model_version(project.id, version)
        return {
            "predictions": len(predictions),
            "created": created,
            "import_s": import_seconds,
            "deleted": deleted,
            "delete_s": time.perf_counter() - began,
        }
    raise ValueError(f"unknown command {command!r}")


def main() -> int:
    config_path, log_path = sys.argv[1], Path(sys.argv[2])
    with log_path.open("a", encoding="utf-8") as log_stream:
        configure_logging(log_format="json", level="info", stream=log_stream)
        asyncio.run(serve(config_path, sys.stdin, sys.stdout))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
