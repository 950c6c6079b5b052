"""What Label Studio knows about a project's ML backends, and asking it to train one.

aldaemon copies nothing about a backend (URL, auth) into its own config: it reads the
backends connected to the project from Label Studio, picks one (`ml_backend_id`, or the
only one), and asks Label Studio to train it. Every call takes an `httpx.AsyncClient`
whose base URL and auth header the caller prepared (the gateway's client, later).

Reading a training's outcome, as Label Studio 1.23 behaves (ml/models.py, ml/api.py):

    POST /api/ml/{id}/train     LS POSTs {"action": "START_TRAINING", "project": {..}} to
                                the backend's /webhook, waits, answers 200 whatever
                                happened; stores state TR, or ER + error_message
    GET  /api/ml/{id}           LS first calls the backend's /health and /setup and
                                OVERWRITES state and error_message from them (CO and
                                null when /setup succeeds); model_version from /setup

So an ER read after training means the backend still reports the failure from /setup
(the example backend does, until a training succeeds); a backend whose /setup succeeds
after a failed /webhook looks trained here. The error message LS keeps is requests' status
line ("500 Server Error: <reason> for url: ..."), not the backend's body: a backend that
wants its message shown puts it in the HTTP reason phrase.

Failures:

    MLBackendSelectionError (AldaemonError)  none connected, several and no id, id unknown
    MLBackendTrainingFailed (ModelError)     state ER after training, with LS's message
    LabelStudioUnreachable / LabelStudioRefused / LabelStudioAuthError  (aldaemon.errors)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx

from aldaemon.errors import (
    AldaemonError,
    LabelStudioAuthError,
    LabelStudioRefused,
    LabelStudioUnreachable,
    ModelError,
)
from aldaemon.labelstudio import payloads

# The fields of Label Studio's TaskSimpleSerializer, which is what its own "Retrieve
# Predictions" sends a backend's /predict for each task (ml/models.py `predict_tasks`).
PREDICT_TASK_INCLUDE = (
    "id,data,meta,created_at,updated_at,is_labeled,overlap,inner_id,total_annotations,"
    "cancelled_annotations,total_predictions,comment_count,unresolved_comment_count,"
    "last_comment_updated_at,project,updated_by,file_upload,comment_authors,annotations,predictions"
)
_TASK_PAGE_SIZE = 500
# Whole tasks (images as data URLs, every prediction) are slow for Label Studio to list
# when it is busy: a read may take longer than the client's usual timeout.
READ_TIMEOUT = 120.0


class MLBackendState(StrEnum):
    """`MLBackend.state` in Label Studio 1.23."""

    CONNECTED = "CO"
    DISCONNECTED = "DI"
    ERROR = "ER"
    TRAINING = "TR"
    PREDICTING = "PR"


_KNOWN_STATES = frozenset(state.value for state in MLBackendState)


class MLBackendSelectionError(AldaemonError):
    """No backend, or no single backend, can be picked for the project."""


class MLBackendTrainingFailed(ModelError):
    """Label Studio reports the backend in error after training; `message` is its text."""

    def __init__(self, message: str, *, backend_id: int) -> None:
        self.backend_id = backend_id
        super().__init__(message)


@dataclass(frozen=True)
class MLBackend:
    """One backend connected to a project, as `GET /api/ml` lists it."""

    id: int
    project: int
    title: str
    url: str
    state: MLBackendState | str
    error_message: str | None
    model_version: str | None

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> MLBackend:
        state = str(raw.get("state") or "")
        return cls(
            id=int(raw["id"]),
            project=int(raw["project"]),
            title=str(raw.get("title") or ""),
            url=str(raw["url"]),
            state=MLBackendState(state) if state in _KNOWN_STATES else state,
            error_message=raw.get("error_message") or None,
            model_version=raw.get("model_version") or None,
        )


@dataclass(frozen=True)
class TrainingOutcome:
    """What a training left behind: the backend's version before and after."""

    backend: MLBackend
    version_before: str | None
    version_after: str | None

    @property
    def version_moved(self) -> bool:
        """False for a backend that does not train (a fixed model): score only new tasks."""
        return self.version_before != self.version_after


def pick_backend(backends: Sequence[MLBackend], *, ml_backend_id: int | None) -> MLBackend:
    """The backend with `ml_backend_id`, or the only one connected; else a clear error."""
    if ml_backend_id is not None:
        for backend in backends:
            if backend.id == ml_backend_id:
                return backend
        raise MLBackendSelectionError(
            f"ml_backend_id = {ml_backend_id} is not connected to this project; "
            f"connected: {_describe(backends)}"
        )
    if not backends:
        raise MLBackendSelectionError(
            "no ML backend is connected to this project in Label Studio: connect one "
            '(Settings > Model, or POST /api/ml {"url", "project", "title"})'
        )
    if len(backends) > 1:
        raise MLBackendSelectionError(
            f"{len(backends)} ML backends are connected to this project "
            f"({_describe(backends)}): set ml_backend_id to pick one"
        )
    return backends[0]


async def list_backends(client: httpx.AsyncClient, *, project_id: int) -> list[MLBackend]:
    """`GET /api/ml?project=P` (LS health-checks and sets up each backend while answering)."""
    answer = await _call(client, "GET", "/api/ml", params={"project": project_id})
    if not isinstance(answer, list):
        raise LabelStudioRefused(f"GET /api/ml answered something that is not a list: {answer}")
    return [MLBackend.from_api(raw) for raw in answer]


async def find_backend(
    client: httpx.AsyncClient, *, project_id: int, ml_backend_id: int | None = None
) -> MLBackend:
    """The project's backend per `pick_backend`, read fresh from Label Studio."""
    return pick_backend(
        await list_backends(client, project_id=project_id), ml_backend_id=ml_backend_id
    )


async def get_backend(client: httpx.AsyncClient, backend_id: int) -> MLBackend:
    """`GET /api/ml/{id}`: state and model_version refreshed from the backend's /setup."""
    return MLBackend.from_api(await _call(client, "GET", f"/api/ml/{backend_id}"))


async def train_backend(
    client: httpx.AsyncClient, *, backend_id: int, timeout: float | None = None
) -> TrainingOutcome:
    """Ask Label Studio to train the backend, then read the outcome and the new version.

    Raises MLBackendTrainingFailed with Label Studio's message when the backend is in
    error afterwards. The training request waits for the backend (LS's ML_TIMEOUT_TRAIN):
    the client's timeout, or `timeout`, must be longer.
    """
    # An error read here (an earlier failed training) does not stop a retry: the state
    # read after training is the outcome.
    before = await get_backend(client, backend_id)
    extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    await _call(client, "POST", f"/api/ml/{backend_id}/train", json={}, **extra)
    after = await get_backend(client, backend_id)
    if after.state in (MLBackendState.ERROR, MLBackendState.DISCONNECTED):
        why = after.error_message or (
            "the backend is disconnected (its /health does not answer)"
            if after.state == MLBackendState.DISCONNECTED
            else "no message"
        )
        raise MLBackendTrainingFailed(
            f"training ML backend {after.id} ({after.title!r} at {after.url}) failed: {why}",
            backend_id=after.id,
        )
    return TrainingOutcome(
        backend=after, version_before=before.model_version, version_after=after.model_version
    )


@dataclass(frozen=True)
class ProjectForBackend:
    """What a `/predict` payload needs from the project (see model.ml_backend.project_uid)."""

    id: int
    created_at: str
    label_config: str


async def project_for_backend(client: httpx.AsyncClient, *, project_id: int) -> ProjectForBackend:
    """`GET /api/projects/{id}/`: the project's creation time and labeling config."""
    raw = await _call(client, "GET", f"/api/projects/{project_id}/")
    return ProjectForBackend(
        id=int(raw["id"]), created_at=str(raw["created_at"]), label_config=str(raw["label_config"])
    )


async def tasks_for_predict(
    client: httpx.AsyncClient, *, project_id: int, task_ids: Sequence[int]
) -> list[dict[str, Any]]:
    """The tasks `task_ids` whole, as Label Studio sends them to `/predict`, in that order.

    One id-range scan of `/api/tasks/` (pages by id, page 1 each time); tasks of the range
    that were not asked for are dropped, and a task deleted meanwhile is simply missing.
    """
    if not task_ids:
        return []
    wanted = set(task_ids)
    found: dict[int, dict[str, Any]] = {}
    after_id, last_id = min(wanted) - 1, max(wanted)
    while True:
        params = {
            "project": project_id,
            "page": 1,
            "page_size": _TASK_PAGE_SIZE,
            "fields": "all",
            "include": PREDICT_TASK_INCLUDE,
            "query": payloads.task_query(updated_after=None, after_id=after_id, up_to_id=last_id),
        }
        answer = await _call(client, "GET", "/api/tasks/", params=params, timeout=READ_TIMEOUT)
        page = list(answer.get("tasks") or []) if isinstance(answer, Mapping) else []
        found.update({int(task["id"]): task for task in page if int(task["id"]) in wanted})
        if not page or len(page) >= int(answer.get("total", 0)):
            break
        after_id = int(page[-1]["id"])
    return [found[task_id] for task_id in task_ids if task_id in found]


async def delete_task_predictions(
    client: httpx.AsyncClient, *, task_id: int, model_version: str
) -> int:
    """Delete the task's predictions of `model_version` (only that version's); how many."""
    listed = await _call(client, "GET", "/api/predictions/", params={"task": task_id})
    doomed = [
        int(p["id"])
        for p in listed or []
        if isinstance(p, Mapping) and p.get("model_version") == model_version
    ]
    for prediction_id in doomed:
        await _call(client, "DELETE", f"/api/predictions/{prediction_id}/")
    return len(doomed)


def _describe(backends: Sequence[MLBackend]) -> str:
    if not backends:
        return "none"
    return ", ".join(f"id {b.id} {b.title!r} at {b.url}" for b in backends)


async def _call(client: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> Any:
    """One request; HTTP failures become aldaemon's Label Studio errors."""
    try:
        response = await client.request(method, path, **kwargs)
    except httpx.TransportError as error:
        raise LabelStudioUnreachable(f"{method} {path}: {error!r}") from None
    status = response.status_code
    if status in (401, 403):
        raise LabelStudioAuthError(f"{method} {path} -> {status}", status_code=status)
    if status in (408, 429) or status >= 500:
        raise LabelStudioUnreachable(
            f"{method} {path} -> {status}: {response.text[:200]}", status_code=status
        )
    if status >= 400:
        raise LabelStudioRefused(
            f"{method} {path} -> {status}: {response.text[:200]}", status_code=status
        )
    return response.json() if response.content else None
