"""Train and score several `<Choices>` on one task: one model per control.

Kept apart from training.py (which re-exports the job, so the worker finds it by name),
like multilabel_jobs.py and span_jobs.py. Each control gets the model it would get
alone: a single-choice control the configured `model` factory, fitted on the tasks whose
answer holds one of its labels; a multi-label control the built-in one-vs-rest model,
fitted on every task (no label of it = "none of these"). Answers arrive as codes
(sync/control_answers.py); the saved artifact is a `ControlModels`.

Scoring (sync/shape_scoring.py): each control scores its tasks on the common scale
(single choice: `single_choice_scores`, least_confidence rescaled so any K compares;
multi-label: `multilabel_scores`), and the task scores the MINIMUM over controls
(`combine_controls`): the control the model is least sure of decides. The prediction
carries one result per control (its most probable label, or its labels with p >= 0.5).

Cross-validation is not run per control yet: the version's `metrics` stay empty.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from aldaemon.errors import ModelError
from aldaemon.model.artifacts import save_trained
from aldaemon.model.multilabel import OneVsRestTextModel
from aldaemon.model.requests import ControlsTraining, ScoringRequest
from aldaemon.model.results import ScoredPool, TrainingResult
from aldaemon.sync.config_shapes import MultiChoice, ServedControl
from aldaemon.sync.control_answers import answers_of, code_counts, control_codes, encode_choice
from aldaemon.sync.shape_results import MULTILABEL_THRESHOLD
from aldaemon.sync.shape_scoring import combine_controls, multilabel_scores, single_choice_scores

CONTROLS_FACTORY = "aldaemon.model.control_jobs:ControlModels"


@dataclass
class ControlModels:
    """The fitted model of every learned control, by control name, in config order."""

    controls: tuple[ServedControl, ...]
    models: dict[str, Any]


def train_controls_and_save(request: ControlsTraining) -> TrainingResult:
    """Fit one model per control and save them together, atomically."""
    from aldaemon.model.training import fitted_model  # training.py imports this module

    texts, answers, controls = request.texts, request.answers, request.controls
    request.require_one_answer_per_text(answers, "answers")
    started = time.perf_counter()
    models: dict[str, Any] = {}
    for control in controls:
        per_task = [answers_of(codes, control.name) for codes in answers]
        if isinstance(control, MultiChoice):
            try:
                models[control.name] = OneVsRestTextModel(control.labels).fit(
                    list(texts), [set(chosen) for chosen in per_task]
                )
            except Exception as exc:
                raise ModelError(
                    f"control {control.name!r}: multi-label fit raised {type(exc).__name__}: {exc}"
                ) from exc
            continue
        answered = [i for i, chosen in enumerate(per_task) if chosen]
        labels = [per_task[i][0] for i in answered]
        if len(set(labels)) < 2:
            raise ModelError(
                f"control {control.name!r} needs at least 2 classes, got {sorted(set(labels))}"
            )
        models[control.name] = fitted_model(
            factory_ref=request.factory_ref,
            texts=[texts[i] for i in answered],
            labels=labels,
            seed=request.seed,
        )
    codes = control_codes(controls)
    return save_trained(
        request,
        model=ControlModels(controls=tuple(controls), models=models),
        classes=codes,
        factory_ref=CONTROLS_FACTORY,
        class_counts=code_counts(answers, codes),
        metrics={},
        started=started,
    )


def score_controls(bundle: ControlModels, request: ScoringRequest) -> ScoredPool:
    """Score every task per control; the task scores the minimum over its controls."""
    texts = list(request.texts)
    per_control_scores = []
    chosen: list[list[str]] = [[] for _ in texts]
    for control in bundle.controls:
        model = bundle.models[control.name]
        proba = np.asarray(model.predict_proba(texts), dtype=np.float64)
        classes = [str(c) for c in model.classes_]
        if isinstance(control, MultiChoice):
            per_control_scores.append(multilabel_scores(proba, strategy=request.strategy))
            for row, on in zip(chosen, proba >= MULTILABEL_THRESHOLD, strict=True):
                row += [
                    encode_choice(control.name, c) for c, o in zip(classes, on, strict=True) if o
                ]
        else:
            per_control_scores.append(single_choice_scores(proba, strategy=request.strategy))
            for row, best in zip(chosen, proba.argmax(axis=1), strict=True):
                row.append(encode_choice(control.name, classes[int(best)]))
    return request.pool(
        combine_controls(per_control_scores),
        labels=[row[0].partition(":")[2] if row else "" for row in chosen],
        label_sets=chosen,
    )
