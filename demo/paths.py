"""Where the demo keeps its files, and how it reads and writes them.

Everything the demo creates lives under one directory (.demo/ by default) and is reused by
the next run; the small JSON files there may hold a token or a password, so every write is
private (mode 0600) and atomic.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aldaemon.errors import AldaemonError


@dataclass(frozen=True)
class DemoPaths:
    """Where the demo keeps everything; all under one directory, reused across runs."""

    root: Path

    @property
    def token_file(self) -> Path:
        return self.root / "labelstudio-token"

    @property
    def demo_file(self) -> Path:
        return self.root / "demo.json"

    @property
    def annotators_file(self) -> Path:
        return self.root / "annotators.json"

    @property
    def config_file(self) -> Path:
        return self.root / "config.toml"

    @property
    def label_studio_dir(self) -> Path:
        return self.root / "label-studio"

    @property
    def label_studio_log(self) -> Path:
        return self.root / "label-studio.log"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"


def read_json(path: Path) -> dict[str, Any]:
    """A small JSON object from the demo dir; empty when the file does not exist yet."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise AldaemonError(f"{path} is not valid JSON ({exc}); delete it to start over") from None
    if not isinstance(loaded, dict):
        raise AldaemonError(f"{path} does not hold a JSON object; delete it to start over")
    return loaded


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it may hold a token or a password), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(temp, path)


def update_json(path: Path, **fields: object) -> dict[str, Any]:
    data = read_json(path)
    data.update(fields)
    write_private(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return data
