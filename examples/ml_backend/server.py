"""The HTTP side of the example backend: the four routes Label Studio 1.23 calls.

    GET  /health    {"status": "UP"}; Label Studio calls it (1 s timeout) on every read
                    of the backend, and before it accepts the backend at all
    POST /setup     {"project": "<id>.<ts>", "schema": label_config, ...}
                    -> {"model_version": "..."}; also called on every read, 3 s timeout
    POST /predict   {"tasks": [...], "project": "<id>.<ts>", "label_config": ..., "params": {}}
                    -> {"results": [{"result": [...], "score": 0.7, "model_version": "..."}]}
                    one result per task, in the order of the tasks
    POST /webhook   {"action": "START_TRAINING", "project": {"id": ..., "label_config": ...}}
                    -> 201 {"status": "ok", "model_version": ...} or 500 {"error": ...}

Why a failed training also fails /setup: Label Studio stores "Error" and the message when
/webhook fails, but re-runs /health and /setup on every later read of the backend and
overwrites both when /setup succeeds. Failing /setup until a training succeeds keeps the
failure visible to whoever reads the backend (the UI, or aldaemon after asking to train).
Label Studio keeps only the HTTP status line of a failed call (requests' message
"500 Server Error: <reason> for url: ..."), so the message also goes in the reason phrase.

Test switches (environment variables): FAIL_TRAINING=1 makes every training fail with a
message; NO_SCORE=1 leaves "score" out of predictions; SHORT_ANSWER=1 answers one result
fewer than there are tasks; PREDICT_DELAY=<seconds> makes every /predict call that slow.
FIXED_MODEL=1 makes it a backend that does not train: a model fitted once on all of
scikit-learn's digits (version "example-pretrained") that acknowledges START_TRAINING
and keeps its model (FIXED_MODEL_VERSION=<name> names that version). REQUEST_LOG=<path>
appends one JSON line per /predict and /webhook call ({"path": ..., "body": ...}), to see
what the backend was sent.

MODEL_DIR=<dir> keeps each project's trained model in `<dir>/<project id>.joblib`, so a
restarted backend answers with the model (and version) it had, as a real one must.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import joblib
from aiohttp import web

from examples.ml_backend.model import (
    DIGIT_LABELS,
    PRETRAINED_VERSION,
    ProjectModel,
    Target,
    TrainingFailed,
    pretrained_digits,
    read_target,
)

log = logging.getLogger("examples.ml_backend")
_MODELS = web.AppKey("models", dict[str, ProjectModel])
_PAGE_SIZE = 500
# Only tasks with an annotation, and only the fields training reads: a pool of images
# as data URLs is megabytes Label Studio would serialize for nothing.
_ANNOTATED_ONLY = json.dumps(
    {
        "filters": {
            "conjunction": "and",
            "items": [
                {
                    "filter": "filter:tasks:total_annotations",
                    "operator": "greater",
                    "type": "Number",
                    "value": 0,
                }
            ],
        },
        "ordering": ["tasks:id"],
    }
)


def flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def create_app() -> web.Application:
    if flag("FIXED_MODEL"):  # fit before answering /health: /setup has 3 s in Label Studio
        pretrained_digits(DIGIT_LABELS)
    app = web.Application(client_max_size=256 * 1024**2)
    app[_MODELS] = {}
    app.router.add_get("/health", health)
    app.router.add_get("/", health)
    app.router.add_post("/setup", setup)
    app.router.add_post("/predict", predict)
    app.router.add_post("/webhook", webhook)
    return app


def _project_id(project: object) -> str:
    """Label Studio names a project "<id>.<created timestamp>" in /setup and /predict."""
    if isinstance(project, Mapping):
        return str(project.get("id"))
    return str(project).split(".", 1)[0]


def _model_for(app: web.Application, project_id: str, label_config: str) -> ProjectModel:
    """The project's model; a changed labeling config starts a fresh, untrained one."""
    models = app[_MODELS]
    target = read_target(label_config)
    model = models.get(project_id)
    if model is None or model.target != target:
        model = models[project_id] = _saved_model(project_id, target) or ProjectModel(target=target)
        if flag("FIXED_MODEL"):
            model.pretrain_on_digits(os.environ.get("FIXED_MODEL_VERSION") or PRETRAINED_VERSION)
    return model


def _model_path(project_id: str) -> Path | None:
    directory = os.environ.get("MODEL_DIR", "").strip()
    return Path(directory) / f"{int(project_id)}.joblib" if directory else None


def _saved_model(project_id: str, target: Target) -> ProjectModel | None:
    path = _model_path(project_id)
    if path is None or not path.exists():
        return None
    saved = joblib.load(path)
    if saved["target"] != target:
        return None
    return ProjectModel(
        target=target,
        version=saved["version"],
        trainings=saved["trainings"],
        pipeline=saved["pipeline"],
    )


def _save_model(project_id: str, model: ProjectModel) -> None:
    path = _model_path(project_id)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = {
        "target": model.target,
        "version": model.version,
        "trainings": model.trainings,
        "pipeline": model.pipeline,
    }
    joblib.dump(saved, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)


def _error(status: int, message: str) -> web.Response:
    # A reason phrase is one latin-1 line: keep what Label Studio will show readable.
    reason = " ".join(message.split()).encode("latin-1", "replace").decode("latin-1")[:200]
    return web.json_response({"error": message}, status=status, reason=reason)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "UP", "model_class": "ExampleChoicesModel"})


async def setup(request: web.Request) -> web.Response:
    body = await request.json()
    try:
        model = _model_for(request.app, _project_id(body.get("project")), body.get("schema", ""))
    except (ValueError, SyntaxError) as error:
        return _error(400, f"cannot serve this labeling config: {error}")
    if model.last_error is not None:
        return _error(500, f"last training failed: {model.last_error}")
    return web.json_response({"model_version": model.version})


def _log_request(path: str, body: object) -> None:
    log_path = os.environ.get("REQUEST_LOG", "").strip()
    if log_path:
        with open(log_path, "a", encoding="utf-8") as file:
            file.write(json.dumps({"path": path, "body": body}) + "\n")


async def predict(request: web.Request) -> web.Response:
    body = await request.json()
    _log_request("/predict", body)
    tasks = body.get("tasks") or []
    delay = float(os.environ.get("PREDICT_DELAY") or 0)
    if delay:
        await asyncio.sleep(delay)
    try:
        model = _model_for(request.app, _project_id(body.get("project")), body["label_config"])
        results = await asyncio.to_thread(model.predict, tasks)
    except (KeyError, ValueError, SyntaxError) as error:
        return _error(400, f"cannot predict: {error}")
    if flag("NO_SCORE"):
        for result in results:
            result.pop("score", None)
            for region in result["result"]:
                region.pop("score", None)
    if flag("SHORT_ANSWER") and results:
        results = results[:-1]
    return web.json_response({"results": results})


async def webhook(request: web.Request) -> web.Response:
    body = await request.json()
    _log_request("/webhook", body)
    if body.get("action") != "START_TRAINING":
        return web.json_response({"status": "ignored", "action": body.get("action")})
    project = body.get("project") or {}
    project_id = _project_id(project)
    model = _model_for(request.app, project_id, project.get("label_config", ""))
    if flag("FIXED_MODEL"):
        return web.json_response(
            {"status": "fixed model, not trained", "model_version": model.version}
        )
    try:
        if flag("FAIL_TRAINING"):
            raise TrainingFailed("FAIL_TRAINING is set: this backend refuses to train")
        examples = await read_annotations(project_id, model.target.control)
        version = await asyncio.to_thread(model.train, examples)
        await asyncio.to_thread(_save_model, project_id, model)
    except (TrainingFailed, aiohttp.ClientError) as error:
        model.last_error = str(error)
        log.warning("training of project %s failed: %s", project_id, error)
        return _error(500, f"training failed: {error}")
    log.info("project %s trained on %d annotations: %s", project_id, len(examples), version)
    return web.json_response(
        {"status": "ok", "model_version": version, "annotations": len(examples)}, status=201
    )


async def read_annotations(project_id: str, control: str) -> list[tuple[dict[str, Any], str]]:
    """(task data, chosen label) for every task annotated in the project, read from the API
    (`GET /api/tasks/` filtered to tasks with an annotation).

    LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (a legacy token, sent as `Token`) say where.
    Skipped annotations and annotations without this control are left out; a task with
    several annotations counts its latest.
    """
    url = os.environ.get("LABEL_STUDIO_URL", "").rstrip("/")
    key = os.environ.get("LABEL_STUDIO_API_KEY", "")
    if not url or not key:
        raise TrainingFailed("set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY to train")
    headers = {"Authorization": f"Token {key}"}
    examples: list[tuple[dict[str, Any], str]] = []
    async with aiohttp.ClientSession(headers=headers) as session:
        page = 1
        while True:
            params = {
                "project": project_id,
                "page": str(page),
                "page_size": str(_PAGE_SIZE),
                "fields": "all",
                "include": "id,data,annotations,result,was_cancelled",
                "query": _ANNOTATED_ONLY,
            }
            async with session.get(f"{url}/api/tasks/", params=params) as response:
                if response.status == 404 and page > 1:
                    break  # Label Studio answers 404 past the last page
                if response.status != 200:
                    text = await response.text()
                    raise TrainingFailed(f"Label Studio answered {response.status}: {text[:200]}")
                answer = await response.json()
            tasks = answer.get("tasks", [])
            for task in tasks:
                example = _labelled(task, control)
                if example is not None:
                    examples.append(example)
            if len(tasks) < _PAGE_SIZE:
                break
            page += 1
    return examples


def _labelled(task: Mapping[str, Any], control: str) -> tuple[dict[str, Any], str] | None:
    for annotation in sorted(task.get("annotations") or [], key=lambda a: a.get("id", 0))[::-1]:
        if annotation.get("was_cancelled"):
            continue
        for region in annotation.get("result") or []:
            choices = region.get("value", {}).get("choices") or []
            if region.get("from_name") == control and choices:
                return dict(task.get("data") or {}), str(choices[0])
    return None
