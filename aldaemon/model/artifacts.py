"""Model artifacts on disk: written atomically, read back with what made them.

A `kill -9` or power cut while saving must leave either the old file or the new one,
never half of one: the daemon may crash at any point and resume. So the model is dumped
to a temp file in the same directory, fsynced, renamed over the target (atomic on POSIX
within one filesystem), and the directory is fsynced so the rename itself survives.

The file holds a small envelope around the estimator, so a loaded artifact says which
factory and which scikit-learn made it, and a stray pickle is refused instead of used.
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import joblib
import sklearn

from aldaemon.errors import ModelError
from aldaemon.model.protocol import TextClassifier
from aldaemon.model.requests import TrainingRequest
from aldaemon.model.results import TrainingResult

ARTIFACT_FORMAT = 1


@dataclass(frozen=True)
class Artifact:
    """A trained model and where it came from."""

    model: TextClassifier
    classes: tuple[str, ...]
    factory_ref: str
    sklearn_version: str


def save_artifact(*, model: object, classes: tuple[str, ...], factory_ref: str, path: str) -> None:
    """Write the model to `path` atomically; on failure the previous file is untouched.

    `model` is a TextClassifier, or a bundle the scoring job recognizes (ControlModels,
    SpanModel)."""
    envelope = {
        "format": ARTIFACT_FORMAT,
        "model": model,
        "classes": classes,
        "factory_ref": factory_ref,
        "sklearn_version": sklearn.__version__,
    }
    try:
        write_atomically(envelope, path)
    except Exception as exc:
        raise ModelError(f"cannot save model artifact {path}: {type(exc).__name__}: {exc}") from exc


def save_trained(
    request: TrainingRequest,
    *,
    model: object,
    classes: tuple[str, ...],
    factory_ref: str,
    class_counts: dict[str, int],
    metrics: dict[str, float],
    started: float,
    suspects: tuple[int, ...] = (),
) -> TrainingResult:
    """The end of every training job: save the fitted model where the request says and
    describe it; `started` is the job's `time.perf_counter()` start (saving not counted)."""
    train_seconds = time.perf_counter() - started
    save_artifact(
        model=model,
        classes=classes,
        factory_ref=factory_ref,
        path=request.artifact_path,
    )
    return TrainingResult(
        classes=classes,
        n_labels=len(request.texts),
        class_counts=class_counts,
        metrics=metrics,
        train_seconds=train_seconds,
        artifact_path=request.artifact_path,
        suspects=suspects,
    )


def load_artifact(path: str) -> Artifact:
    """Read an artifact written by save_artifact; ModelError when missing or foreign."""
    try:
        envelope: Any = joblib.load(path)
    except FileNotFoundError as exc:
        raise ModelError(f"model artifact {path} does not exist") from exc
    except Exception as exc:
        raise ModelError(f"cannot load model artifact {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(envelope, dict) or envelope.get("format") != ARTIFACT_FORMAT:
        raise ModelError(f"{path} is not an aldaemon model artifact (format {ARTIFACT_FORMAT})")
    return Artifact(
        model=envelope["model"],
        classes=tuple(envelope["classes"]),
        factory_ref=str(envelope["factory_ref"]),
        sklearn_version=str(envelope["sklearn_version"]),
    )


def write_atomically(value: object, path: str) -> None:
    """joblib.dump `value` to `path` so that readers see the old file or the whole new one.

    Temp files left by an earlier crash while saving this same path are removed first;
    the caller runs one training per project at a time, so none of them is in use.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    prefix = f".{os.path.basename(path)}."
    for stale in glob.glob(os.path.join(glob.escape(directory), glob.escape(prefix) + "*.tmp")):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)
    fd, temp_path = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            joblib.dump(value, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_path)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    """Make a rename in `directory` durable (POSIX); a no-op where directories can't open."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
