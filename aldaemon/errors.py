"""Every way aldaemon can fail, as one tree, split first by what a retry can do.

    AldaemonError                      base of everything below; exit 1 unless named
    +-- TemporaryError                 the world may change by the next poll: retry
    |   +-- LabelStudioUnreachable     connection refused/reset, timeout, 408, 429, 5xx
    |   |                              after retries (also a LabelStudioError)
    |   +-- ModelWorkerLost            the worker process died under a job (killed, out
    |   |                              of memory); a fresh one takes the next job
    |   |                              (also a ModelError)
    |   +-- ModelClusterUnreachable    the Dask scheduler of `[daemon] dask_scheduler`
    |                                  cannot be reached, or was lost mid-job; the
    |                                  next job connects again (also a ModelError)
    +-- PermanentError                 the same call fails the same way: a person acts
        +-- ConfigError                the TOML file is wrong; carries every problem with
        |                              its key path; exit 78 (EX_CONFIG)
        +-- StateError                 local state unusable: not writable, corrupt, or
        |   |                          from a newer release; exit 73 (EX_CANTCREAT)
        |   +-- StateLockedError       a second daemon on the same state dir; exit 73
        +-- LabelStudioRefused         a 4xx retrying will not change (400 payload, ...)
        |   |                          (also a LabelStudioError)
        |   +-- LabelStudioAuthError   401/403: the token is wrong or revoked
        |   +-- ProjectNotFound        404 on the project itself
        |   +-- NotLabelStudio         the URL answers, but not as Label Studio does (an
        |                              HTML login page, another server's 404, a 501)
        +-- UnsupportedLabelingConfig  no shape the daemon can serve (names the tag)
        +-- ForeignWriter              another daemon publishes versions of our prefix

    Topic bases, across the split (catch them to handle a subsystem as a whole):
    LabelStudioError = LabelStudioUnreachable | LabelStudioRefused
    ModelError       = ModelWorkerLost | ModelClusterUnreachable | a ModelError raised
                       as such: the model could not be built or trained from this data
                       (permanent in effect)

What the runtime does with them: a project whose cycle ends in Label Studio being
unreachable is "degraded" and simply polled again; any other error marks it "failed" in
`status` and `/healthz` (logged once, as `project.failed`) until its next successful
cycle clears it (logged once, as `project.recovered`). `exit_code` and `error_kind` below
are the one mapping from this tree to exit statuses and to metric/log labels. No message
built from these ever contains the API token.
"""

from __future__ import annotations

EX_CONFIG = 78  # sysexits.h: systemd's RestartPreventExitStatus keys on it
EX_CANTCREAT = 73  # sysexits.h: cannot create (or lock) an output file
# What a message says to do when an optional dependency of the scale-out is missing.
SCALE_EXTRA_HINT = "pip install 'aldaemon[scale]'"


class AldaemonError(Exception):
    """Base class: a failure the daemon knows how to explain."""


class TemporaryError(AldaemonError):
    """Retrying later may succeed; nothing needs fixing."""


class PermanentError(AldaemonError):
    """Retrying the same thing fails the same way until a person changes something."""


class ConfigError(PermanentError):
    """The configuration file is invalid; `problems` lists each with its key path."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = list(problems)
        super().__init__(f"{path}: " + "; ".join(self.problems))


class StateError(PermanentError):
    """Local state cannot be used; the message names the path and what to do."""


class StateLockedError(StateError):
    """Another daemon holds the state directory."""


class OwnershipLost(TemporaryError):
    """This replica no longer owns the project (another replica carries it on)."""


class LabelStudioError(AldaemonError):
    """Talking to Label Studio failed (topic base: see the two branches below)."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        self.status_code = status_code
        super().__init__(message)


class LabelStudioUnreachable(LabelStudioError, TemporaryError):
    """Temporary: retried with backoff, then left for the next poll."""


class LabelStudioRefused(LabelStudioError, PermanentError):
    """Permanent: Label Studio said no and retrying will not change its mind."""


class LabelStudioAuthError(LabelStudioRefused):
    """The token was rejected (401/403)."""


class ProjectNotFound(LabelStudioRefused):
    """The configured project does not exist (or the token cannot see it)."""


class NotLabelStudio(LabelStudioRefused):
    """Something answers at the URL, but not Label Studio's API (whose answers are JSON)."""


class UnsupportedLabelingConfig(PermanentError):
    """The labeling config has no Text + Choices pair the daemon can serve."""


class ForeignWriter(PermanentError):
    """Another writer (a second state dir) publishes versions named with our prefix."""


class ModelError(AldaemonError):
    """The model factory failed or training raised (topic base for model failures)."""


class ModelWorkerLost(ModelError, TemporaryError):
    """The worker process died under a job (killed, out of memory)."""


class ModelClusterUnreachable(ModelError, TemporaryError):
    """The Dask scheduler cannot be reached (the message names its address)."""


# Most specific first: the first class an error is an instance of decides.
_EXIT_CODES: tuple[tuple[type[AldaemonError], int], ...] = (
    (ConfigError, EX_CONFIG),
    (StateError, EX_CANTCREAT),
    (AldaemonError, 1),
)

# The `kind` label of metrics and of `project.failed`; most specific first
# (`LabelStudioAuthError` is also a `LabelStudioRefused`).
_KINDS: tuple[tuple[type[AldaemonError], str], ...] = (
    (LabelStudioUnreachable, "unreachable"),
    (LabelStudioAuthError, "auth"),
    (ProjectNotFound, "not_found"),
    (NotLabelStudio, "not_label_studio"),
    (LabelStudioRefused, "refused"),
    (ForeignWriter, "foreign_writer"),
)
ERROR_KINDS = (*(kind for _, kind in _KINDS), "other")


def exit_code(error: AldaemonError) -> int:
    """The process exit status a command ends with when `error` stops it."""
    for cls, code in _EXIT_CODES:
        if isinstance(error, cls):
            return code
    return 1


def error_kind(error: BaseException) -> str:
    """A short label for metrics and logs: one of ERROR_KINDS."""
    for cls, kind in _KINDS:
        if isinstance(error, cls):
            return kind
    return "other"
