"""The labeling-team settings of a project: `[projects.labels]` and `[projects.stop]`.

Apart from config.py so the team features (sync.consensus, sync.stopping) keep their
settings, defaults and checks in one place: written once, on the fields, and read by
config_section.read_settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aldaemon.sync.consensus import LATEST, POLICIES


@dataclass(frozen=True)
class LabelsConfig:
    policy: str = field(default=LATEST, metadata={"choices": POLICIES})


@dataclass(frozen=True)
class StopConfig:
    # Bloodgood & Vijay-Shanker (2009), "A Method for Stopping Active Learning Based on
    # Stabilizing Predictions": stop when kappa >= 0.99 for 3 consecutive versions.
    kappa: float = field(default=0.99, metadata={"minimum": -1.0, "maximum": 1.0})
    versions: int = field(default=3, metadata={"minimum": 1, "maximum": 100})
    stop_when_stable: bool = False
    stop_set_size: int = field(default=500, metadata={"minimum": 10, "maximum": 100_000})
    # New label changes since the last training, as a share of the labels it trained on,
    # that reopen a project stopped as stable.
    reopen_fraction: float = field(default=0.1, metadata={"minimum": 0.0, "maximum": 1.0})
