"""Scoring a project's pool through an ML backend's `/predict`, called directly.

Why not Label Studio's "Retrieve Predictions" action: it sends every selected task in ONE
request under a 100 s server-side timeout, reports the number selected as if predicted,
is silent when the backend is down, and skips tasks already holding a prediction of the
backend's version. aldaemon calls `/predict` itself, in batches of `batch_size` tasks with
a `timeout` per call, with the payload Label Studio itself sends:

    POST {backend}/predict  {"tasks": [{"id", "data", ...}], "project": "<id>.<ts>",
                             "label_config": "...", "params": {"login", "password", "context"}}
    <- {"results": [{"result": [...], "score": 0.7, "model_version": "..."}, ...]}

Every answer is checked before anything of it is kept: one result per task, in order; each
region's from_name/to_name/labels present in the project's labeling config (Label Studio
would silently drop the rest on import); and a score to sort by. The task's score is the
prediction's `score` (lower = less confident = asked first); a prediction without one
falls back to the minimum of its regions' `score` (span backends score each region); with
neither, the queue cannot be sorted and the answer is refused.

Failures, all `ModelError`s:

    BackendError               base: the ML backend could not score the pool
    +-- BackendUnreachable     temporary: connection refused, timeout, 5xx; retry later
    +-- BackendAnswerRejected  permanent for this answer: upload nothing of this version
        +-- ShortAnswer        fewer (or more) results than tasks
        +-- ForeignResult      a result for a control, object or label not in the config
        +-- NoScore            neither the prediction nor its regions carry a score

The pure parts (`config_controls`, `batches`, `predict_payload`, `check_answer`,
`task_score`) do no I/O; `predict_batch` and `predict_all` add httpx.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import httpx

from aldaemon.errors import ModelError

T = TypeVar("T")
_DTD_OR_ENTITY = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
# Result value keys that hold labels from the config: "choices", "taxonomy", "labels",
# "rectanglelabels", ...; the rest (text, points, rle, offsets) are free values.
_LABEL_VALUE_KEYS = frozenset({"choices", "taxonomy"})


class BackendError(ModelError):
    """The ML backend could not score the pool."""


class BackendUnreachable(BackendError):
    """Temporary: the backend did not answer, timed out, or answered 5xx."""


class BackendAnswerRejected(BackendError):
    """The answer cannot be used: nothing of this version may be uploaded."""


class ShortAnswer(BackendAnswerRejected):
    """The backend answered a different number of results than tasks it was sent."""


class ForeignResult(BackendAnswerRejected):
    """A result names a control, object or label the project's labeling config lacks."""


class NoScore(BackendAnswerRejected):
    """A prediction carries no score at all: the queue cannot be sorted."""


@dataclass(frozen=True)
class ConfigControl:
    """A control of the labeling config: its tag, the objects it labels, its labels.

    `labels` is None when the control takes free values (`<TextArea>`, `<Rating>`, labels
    read from task data): then any value is accepted.
    """

    name: str
    tag: str
    to_names: tuple[str, ...]
    labels: frozenset[str] | None


@dataclass(frozen=True)
class BackendPrediction:
    """One checked prediction: the task, Label Studio's result list, the sort score."""

    task_id: int
    result: list[dict[str, Any]]
    score: float
    model_version: str | None


def config_controls(label_config: str) -> dict[str, ConfigControl]:
    """Every control (a tag with `name` and `toName`) of a labeling config, by name."""
    if _DTD_OR_ENTITY.search(label_config):
        raise ValueError("labeling config must not contain a DTD or entities")
    root = ElementTree.fromstring(label_config)
    controls: dict[str, ConfigControl] = {}
    for element in root.iter():
        name, to_name = element.attrib.get("name"), element.attrib.get("toName")
        if not name or not to_name:
            continue
        labels = {
            child.attrib.get("alias") or child.attrib["value"]
            for child in element.iter()
            if child is not element and "value" in child.attrib
        }
        dynamic = element.attrib.get("value", "").startswith("$")
        controls[name] = ConfigControl(
            name=name,
            tag=element.tag,
            to_names=tuple(part.strip() for part in to_name.split(",")),
            labels=frozenset(labels) if labels and not dynamic else None,
        )
    return controls


def batches(items: Sequence[T], batch_size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most `batch_size` items, in order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]


def project_uid(project_id: int, created_at: str | datetime) -> str:
    """The project name Label Studio sends a backend: "<id>.<created_at as epoch seconds>"."""
    moment = (
        created_at
        if isinstance(created_at, datetime)
        else datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    )
    return f"{project_id}.{int(moment.timestamp())}"


def predict_payload(
    *,
    tasks: Sequence[Mapping[str, Any]],
    project: str,
    label_config: str,
    login: str | None = None,
    password: str | None = None,
) -> dict[str, Any]:
    """The body Label Studio 1.23 POSTs to `/predict` (ml/api_connector.py)."""
    return {
        "tasks": [dict(task) for task in tasks],
        "project": project,
        "label_config": label_config,
        "params": {"login": login, "password": password, "context": None},
    }


def task_score(prediction: Mapping[str, Any]) -> float:
    """The prediction's `score`, else the minimum of its regions' `score`s.

    Raises NoScore when there is neither: without a score the queue cannot be sorted.
    """
    score = _number(prediction.get("score"))
    if score is not None:
        return score
    region_scores = [
        value
        for region in prediction.get("result") or []
        if isinstance(region, Mapping) and (value := _number(region.get("score"))) is not None
    ]
    if region_scores:
        return min(region_scores)
    raise NoScore(
        "the ML backend's prediction has no 'score' (neither on the prediction nor on its "
        "regions): aldaemon cannot sort the queue by confidence; make /predict return a "
        "score per prediction (lower = less confident)"
    )


def check_answer(
    answer: object,
    *,
    tasks: Sequence[Mapping[str, Any]],
    controls: Mapping[str, ConfigControl],
) -> list[BackendPrediction]:
    """Checked predictions, one per task in order; raises a BackendAnswerRejected."""
    results = answer.get("results") if isinstance(answer, Mapping) else None
    if not isinstance(results, list):
        raise BackendAnswerRejected(
            f"the ML backend's /predict answer has no 'results' list: {str(answer)[:200]}"
        )
    if len(results) != len(tasks):
        raise ShortAnswer(
            f"the ML backend returned {len(results)} result(s) for {len(tasks)} task(s) "
            f"(task ids {_id_range(tasks)}): one result per task is required, in order; "
            "nothing of this version is uploaded"
        )
    checked = []
    for task, prediction in zip(tasks, results, strict=True):
        task_id = int(task["id"])
        if not isinstance(prediction, Mapping):
            raise BackendAnswerRejected(f"the result for task {task_id} is not an object")
        regions = prediction.get("result") or []
        if not isinstance(regions, list):
            raise BackendAnswerRejected(f"the 'result' of task {task_id} is not a list")
        for region in regions:
            _check_region(region, task_id=task_id, controls=controls)
        version = prediction.get("model_version")
        checked.append(
            BackendPrediction(
                task_id=task_id,
                result=[dict(region) for region in regions],
                score=task_score(prediction),
                model_version=None if version is None else str(version),
            )
        )
    return checked


async def predict_batch(
    client: httpx.AsyncClient,
    *,
    url: str,
    tasks: Sequence[Mapping[str, Any]],
    project: str,
    label_config: str,
    controls: Mapping[str, ConfigControl],
    timeout: float,
) -> list[BackendPrediction]:
    """One `/predict` call for `tasks`, checked; `url` is the backend's base URL."""
    body = predict_payload(tasks=tasks, project=project, label_config=label_config)
    endpoint = url.rstrip("/") + "/predict"
    try:
        response = await client.post(endpoint, json=body, timeout=timeout)
    except httpx.TimeoutException:
        raise BackendUnreachable(
            f"the ML backend at {url} did not answer /predict for {len(tasks)} task(s) "
            f"within {timeout:g} s"
        ) from None
    except httpx.TransportError as error:
        raise BackendUnreachable(f"cannot reach the ML backend at {url}: {error}") from None
    if response.status_code >= 500:
        raise BackendUnreachable(
            f"the ML backend at {url} answered /predict with {response.status_code}: "
            f"{response.text[:200]}"
        )
    if response.status_code >= 400:
        raise BackendAnswerRejected(
            f"the ML backend at {url} refused /predict with {response.status_code}: "
            f"{response.text[:200]}"
        )
    try:
        answer = response.json()
    except ValueError:
        raise BackendAnswerRejected(
            f"the ML backend at {url} answered /predict with something that is not JSON: "
            f"{response.text[:200]!r}"
        ) from None
    return check_answer(answer, tasks=tasks, controls=controls)


BatchDone = Callable[[int, list[BackendPrediction]], Awaitable[None]]


async def predict_all(
    client: httpx.AsyncClient,
    *,
    url: str,
    tasks: Sequence[Mapping[str, Any]],
    project: str,
    label_config: str,
    batch_size: int,
    timeout: float,
    first_batch: int = 0,
    on_batch: BatchDone | None = None,
) -> list[BackendPrediction]:
    """Score `tasks` in batches, from batch number `first_batch` on.

    `on_batch(number, predictions)` runs after each checked batch, so a caller can record
    progress and resume after a crash at the batch it stopped (same tasks, same order,
    same `batch_size`). The first failing batch raises; nothing after it is called.
    """
    controls = config_controls(label_config)
    scored: list[BackendPrediction] = []
    for number, batch in enumerate(batches(tasks, batch_size)):
        if number < first_batch:
            continue
        predictions = await predict_batch(
            client,
            url=url,
            tasks=batch,
            project=project,
            label_config=label_config,
            controls=controls,
            timeout=timeout,
        )
        if on_batch is not None:
            await on_batch(number, predictions)
        scored.extend(predictions)
    return scored


def _check_region(region: object, *, task_id: int, controls: Mapping[str, ConfigControl]) -> None:
    if not isinstance(region, Mapping):
        raise ForeignResult(f"a region of task {task_id} is not an object: {str(region)[:100]}")
    from_name, to_name = region.get("from_name"), region.get("to_name")
    control = controls.get(str(from_name))
    known = ", ".join(sorted(controls)) or "none"
    if control is None:
        raise ForeignResult(
            f"the ML backend answered for control {from_name!r} (task {task_id}), which the "
            f"project's labeling config does not have (its controls: {known}): is the "
            "backend serving another labeling config?"
        )
    if to_name not in control.to_names:
        raise ForeignResult(
            f"the ML backend labels {to_name!r} with control {from_name!r} (task {task_id}), "
            f"but that control labels {', '.join(control.to_names)} in the labeling config"
        )
    if control.labels is None:
        return
    unknown = sorted(set(_region_labels(region)) - control.labels)
    if unknown:
        raise ForeignResult(
            f"the ML backend answered label(s) {', '.join(map(repr, unknown))} for control "
            f"{from_name!r} (task {task_id}), not in the labeling config "
            f"({', '.join(sorted(control.labels))}); Label Studio would drop them silently"
        )


def _region_labels(region: Mapping[str, Any]) -> Iterator[str]:
    """The labels a region chooses (`choices`, `taxonomy` paths, `*labels`), flattened."""
    value = region.get("value")
    if not isinstance(value, Mapping):
        return
    for key, chosen in value.items():
        is_label_key = key in _LABEL_VALUE_KEYS or str(key).endswith("labels")
        if not is_label_key or not isinstance(chosen, list):
            continue
        for item in chosen:
            if isinstance(item, list):  # <Taxonomy>: a path of labels
                yield from (str(part) for part in item)
            else:
                yield str(item)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _id_range(tasks: Sequence[Mapping[str, Any]]) -> str:
    if not tasks:
        return "none"
    return f"{tasks[0].get('id')}..{tasks[-1].get('id')}"
