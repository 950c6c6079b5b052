"""The model choice of a project: `model = "ml-backend"`, `[projects.ml_backend]`, `controls`.

Apart from config.py so the settings of the ML-backend path (loop/backend.py) and of
several-control projects keep their defaults and checks in one place, beside each other.
Defaults and limits are written once, on the fields (config_section.read_settings).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aldaemon.config_section import Section

ML_BACKEND_MODEL = "ml-backend"


@dataclass(frozen=True)
class MLBackendConfig:
    # tasks per /predict call: well under any proxy's 60 s
    batch_size: int = field(default=100, metadata={"minimum": 1, "maximum": 10_000})
    # seconds per /predict call
    timeout: float = field(default=50.0, metadata={"minimum": 1.0, "maximum": 3600.0})


def read_controls(section: Section) -> tuple[str, ...] | None:
    """`controls = ["sentiment", "topic"]`: a non-empty list of distinct control names."""
    if not section.has("controls"):
        return None
    raw = section.get("controls")
    if not isinstance(raw, list) or not raw or not all(isinstance(n, str) and n for n in raw):
        section.error("controls", "must be a non-empty list of control names (strings)")
        return None
    if len(set(raw)) != len(raw):
        section.error("controls", f"names a control twice: {raw!r}")
        return None
    return tuple(raw)
