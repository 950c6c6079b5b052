"""Every way aldaemon can fail, as one tree.

    AldaemonError                  base of everything below
    +-- ConfigError                the TOML file is wrong; carries every problem with its
    |                              key path; `check-config` exits 78 (EX_CONFIG)
    +-- StateError                 local state unusable: not writable, locked by another
    |   |                          daemon, corrupt, or from a newer release
    |   +-- StateLockedError       a second daemon on the same state dir
    +-- LabelStudioError           anything while talking to Label Studio
    |   +-- LabelStudioUnreachable temporary: connection refused/reset, timeout, 408,
    |   |                          429, 5xx after retries; the next poll tries again
    |   +-- LabelStudioRefused     permanent: a 4xx the daemon cannot fix by retrying
    |       |                      (401 bad token, 404 project gone, 400 payload)
    |       +-- LabelStudioAuthError   401/403: the token is wrong or revoked
    |       +-- ProjectNotFound        404 on the project itself
    +-- UnsupportedLabelingConfig  the project's labeling config has no shape the daemon
    |                              can serve (says which tag is missing)
    +-- ModelError                 the model could not be built or trained

Temporary errors make a project "degraded" and are retried on the next poll. Permanent
ones mark the project "failed" in `status` and `/healthz` until the config is fixed and
reloaded. No message built from these ever contains the API token.
"""

from __future__ import annotations

EX_CONFIG = 78  # sysexits.h: systemd's RestartPreventExitStatus keys on it


class AldaemonError(Exception):
    """Base class: a failure the daemon knows how to explain."""


class ConfigError(AldaemonError):
    """The configuration file is invalid; `problems` lists each with its key path."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = list(problems)
        super().__init__(f"{path}: " + "; ".join(self.problems))


class StateError(AldaemonError):
    """Local state cannot be used; the message names the path and what to do."""


class StateLockedError(StateError):
    """Another daemon holds the state directory."""


class LabelStudioError(AldaemonError):
    """Talking to Label Studio failed."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        self.status_code = status_code
        super().__init__(message)


class LabelStudioUnreachable(LabelStudioError):
    """Temporary: retried with backoff, then left for the next poll."""


class LabelStudioRefused(LabelStudioError):
    """Permanent: Label Studio said no and retrying will not change its mind."""


class LabelStudioAuthError(LabelStudioRefused):
    """The token was rejected (401/403)."""


class ProjectNotFound(LabelStudioRefused):
    """The configured project does not exist (or the token cannot see it)."""


class UnsupportedLabelingConfig(AldaemonError):
    """The labeling config has no Text + Choices pair the daemon can serve."""


class ModelError(AldaemonError):
    """The model factory failed or training raised."""
