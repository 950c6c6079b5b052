"""The example backend as a child process: how the tests, the demo and the benchmarks run it.

backend = BackendProcess(port=9091, label_studio_url=url, api_key=token, flags={...})
backend.start()     # returns once GET /health answers 200
...
backend.stop()      # SIGTERM, then SIGKILL; `kill()` is SIGKILL at once (a crash)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 300.0  # imports scikit-learn (and with FIXED_MODEL fits a model) first


class BackendStartFailed(RuntimeError):
    """The backend exited, or did not answer /health in time."""


class BackendProcess:
    """`python -m examples.ml_backend` on 127.0.0.1:`port`, reading annotations from LS."""

    def __init__(
        self,
        *,
        port: int,
        label_studio_url: str,
        api_key: str,
        model_dir: Path | None = None,
        flags: Mapping[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = {
            **os.environ,
            "LABEL_STUDIO_URL": label_studio_url,
            "LABEL_STUDIO_API_KEY": api_key,
            **({"MODEL_DIR": str(model_dir)} if model_dir is not None else {}),
            **(flags or {}),
        }
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> BackendProcess:
        output = self.log_path.open("ab") if self.log_path is not None else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "examples.ml_backend", "--port", str(self.port)],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C meant for the caller does not reach it
            )
        finally:
            if not isinstance(output, int):
                output.close()
        deadline = time.monotonic() + START_TIMEOUT
        while not self.healthy():
            if self.process.poll() is not None:
                raise BackendStartFailed(f"the example backend on {self.url} exited at start")
            if time.monotonic() > deadline:
                self.kill()
                raise BackendStartFailed(f"the example backend on {self.url} did not come up")
            time.sleep(0.1)
        return self

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self, *, grace: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()
