"""The labeling-team settings of a project: `[projects.labels]` and `[projects.stop]`.

Apart from config.py so the team features (sync.consensus, sync.stopping) keep their
settings, defaults and checks in one place. Defaults are written once, on the fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from aldaemon.config_section import Section
from aldaemon.sync.consensus import LATEST, POLICIES


@dataclass(frozen=True)
class LabelsConfig:
    policy: str = LATEST


@dataclass(frozen=True)
class StopConfig:
    # Bloodgood & Vijay-Shanker (2009), "A Method for Stopping Active Learning Based on
    # Stabilizing Predictions": stop when kappa >= 0.99 for 3 consecutive versions.
    kappa: float = 0.99
    versions: int = 3
    stop_when_stable: bool = False
    stop_set_size: int = 500
    # New label changes since the last training, as a share of the labels it trained on,
    # that reopen a project stopped as stable.
    reopen_fraction: float = 0.1


_LABELS = LabelsConfig()
_STOP = StopConfig()


def read_labels(section: Section) -> LabelsConfig:
    policy = section.string("policy", _LABELS.policy)
    if policy not in POLICIES:
        section.error("policy", f"must be one of {', '.join(POLICIES)}, got {policy!r}")
    section.reject_unknown()
    return LabelsConfig(policy=policy if policy in POLICIES else _LABELS.policy)


def read_stop(section: Section) -> StopConfig:
    config = StopConfig(
        kappa=section.number("kappa", _STOP.kappa, minimum=-1.0, maximum=1.0),
        versions=section.integer("versions", _STOP.versions, minimum=1, maximum=100),
        stop_when_stable=section.boolean("stop_when_stable", _STOP.stop_when_stable),
        stop_set_size=section.integer(
            "stop_set_size", _STOP.stop_set_size, minimum=10, maximum=100_000
        ),
        reopen_fraction=section.number(
            "reopen_fraction", _STOP.reopen_fraction, minimum=0.0, maximum=1.0
        ),
    )
    section.reject_unknown()
    return config
