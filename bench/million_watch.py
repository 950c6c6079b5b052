"""The parent's side of bench/million_daemon.py: start it, send it commands, and sample
the RSS of it and its descendants (the model worker) every SAMPLE_INTERVAL, kept per
phase, with bench/footprint.py's /proc readers. VmRSS is sampled (VmHWM is a process's
whole-life peak and cannot be split into phases; it is kept too).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from bench import common
from bench.footprint import memory_kib, process_tree, role
from bench.million_daemon import RESULT_PREFIX

SAMPLE_INTERVAL = 0.1


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
