"""The daemon under test for bench/million.py, in a process of its own, and its memory.

The benchmark's own process holds the synthetic pool and the task ids (hundreds of MiB
at 1M tasks); measured in-process, the daemon's RSS would include them. So the daemon
runs here as a child: `python -m bench.million_daemon CONFIG` opens the daemon's own
`Runtime` (what `aldaemon run` runs) and obeys one JSON command per stdin line, answering
each with one `RESULT {...}` line on stdout:

- `{"do": "cycle"}`: `Runtime.run_cycle` now (as a webhook would trigger it); answers the
  cycle's outcome, version, counts (HTTP requests, tasks read) and per-step seconds;
- `{"do": "prune"}`: `prune_own_versions` with `prune_per_cycle = 1` (the daemon's own
  prune task, run explicitly so that it never overlaps a measurement), timed;
- `{"do": "floor", "version": V}`: the REFERENCE: one bare import of the predictions of
  version V as the store holds them, under another model version, through the daemon's
  own gateway (one `import_predictions` call), then its deletion; both timed;
- `{"do": "quit"}`.

`DaemonProcess` (the parent's side) starts it, sends commands, and samples the RSS of
the child and its descendants (the model worker) every SAMPLE_INTERVAL, kept per phase,
with bench/footprint.py's /proc readers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from aldaemon.config import load_config
from aldaemon.loop.prune import prune_own_versions
from aldaemon.service.runtime import Runtime
from bench import common
from bench.footprint import memory_kib, process_tree, role

RESULT_PREFIX = "RESULT "
SAMPLE_INTERVAL = 0.1


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
            "steps_s": {k: common.rounded(v) for k, v in report.seconds.items()},
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
        created = await runtime.gateway.import_predictions(
            project.id, model_version=version, schema=common.SCHEMA, predictions=predictions
        )
        import_seconds = time.perf_counter() - started
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
    log_stream = common.quiet_daemon_logs(log_path)
    try:
        asyncio.run(serve(config_path, sys.stdin, sys.stdout))
    finally:
        log_stream.close()
    return 0


# ---- the parent's side --------------------------------------------------------------------


class DaemonProcess:
    """The child above, with a thread sampling its process tree's RSS per phase."""

    def __init__(self, *, config_path: Path, log_path: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALDAEMON_")}
        env["PYTHONPATH"] = str(common.REPO_ROOT)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.million_daemon", str(config_path), str(log_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=common.REPO_ROOT,
        )
        self.phase = "start"
        self.peaks: dict[str, dict[str, int]] = {}  # phase -> role -> KiB (sampled VmRSS)
        self.high_water: dict[str, int] = {}  # role -> KiB (VmHWM, whole life)
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def command(self, phase: str, **command: Any) -> dict[str, Any]:
        """Send one command, its RSS samples kept under `phase`; wait for the answer."""
        assert self._process.stdin is not None and self._process.stdout is not None
        self.phase = phase
        self._process.stdin.write(json.dumps(command) + "\n")
        self._process.stdin.flush()
        while True:
            line = self._process.stdout.readline()
            if not line:
                raise RuntimeError(f"the daemon process exited during {command}")
            if line.startswith(RESULT_PREFIX):
                answer: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
                return answer

    def close(self) -> None:
        if self._process.poll() is None and self._process.stdin is not None:
            self._process.stdin.write(json.dumps({"do": "quit"}) + "\n")
            self._process.stdin.close()
            self._process.wait(timeout=120)
        self._stop.set()
        self._sampler.join()

    def peaks_mib(self, phase: str) -> dict[str, float]:
        return {r: round(kib / 1024, 1) for r, kib in sorted(self.peaks.get(phase, {}).items())}

    def _sample(self) -> None:
        while not self._stop.is_set() and self._process.poll() is None:
            phase = self.peaks.setdefault(self.phase, {})
            for pid in process_tree(self._process.pid):
                sample = memory_kib(pid)
                if sample is None:
                    continue
                rss, hwm, command_line = sample
                name = role(command_line)
                phase[name] = max(phase.get(name, 0), rss)
                self.high_water[name] = max(self.high_water.get(name, 0), hwm)
            self._stop.wait(SAMPLE_INTERVAL)

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if exc_info[0] is not None and self._process.poll() is None:
            self._process.kill()
        self.close()


if __name__ == "__main__":
    raise SystemExit(main())
