"""The model behind the example backend: one classifier per Label Studio project.

It serves the first `<Choices>` of a labeling config that classifies an `<Image>` (the
picture is a `data:` URL, read as an 8x8 digit grid) or a `<Text>` (TF-IDF). Both end
in a LogisticRegression, so the answer carries a real probability: the task's `score`
is the probability of the predicted label (low = unsure = worth labelling first).

Before its first training a project's model is uniform: every label has probability
1/n, the first label is predicted with that score, and the version says "untrained".
Each training bumps the version (`example-1`, `example-2`, ...).
"""

from __future__ import annotations

import functools
import re
import threading
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline

from examples.ml_backend import images

UNTRAINED_VERSION = "example-untrained"
DIGIT_LABELS = tuple(str(d) for d in range(10))
PRETRAINED_VERSION = "example-pretrained"
_FIELD = re.compile(r"^\$([A-Za-z0-9_\-]+)$")


class TrainingFailed(Exception):
    """Training could not produce a model; the message says why, for Label Studio's UI."""


@dataclass(frozen=True)
class Target:
    """What the backend predicts: the control, the object it labels, and the task field."""

    control: str
    object_name: str
    object_tag: str  # "Image" or "Text"
    field: str
    labels: tuple[str, ...]


def read_target(label_config: str) -> Target:
    """The first `<Choices>` over an `<Image>` or `<Text>` whose value is a task field."""
    root = ElementTree.fromstring(label_config)
    objects = {e.attrib["name"]: e for e in root.iter() if {"name", "value"} <= e.attrib.keys()}
    for control in root.iter("Choices"):
        target = objects.get(control.attrib.get("toName", "").split(",")[0])
        if target is None or target.tag not in ("Image", "Text"):
            continue
        field_match = _FIELD.match(target.attrib["value"])
        labels = tuple(
            c.attrib.get("alias") or c.attrib["value"]
            for c in control.iter("Choice")
            if "value" in c.attrib
        )
        if field_match and len(labels) >= 2:
            return Target(
                control=control.attrib["name"],
                object_name=target.attrib["name"],
                object_tag=target.tag,
                field=field_match.group(1),
                labels=labels,
            )
    raise ValueError("the labeling config has no <Choices> over an <Image> or <Text> field")


@functools.cache
def pretrained_digits(labels: tuple[str, ...]) -> LogisticRegression:
    """LogisticRegression fitted on every bundled digit whose label is among `labels`
    (classes are indices into `labels`); fitted once per process."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    names = [str(label) for label in digits.target]
    known = [n for n, name in enumerate(names) if name in labels]
    model = LogisticRegression(max_iter=2000)
    model.fit(digits.data[known], [labels.index(names[n]) for n in known])
    return model


@dataclass
class ProjectModel:
    """One project's classifier and its version; `last_error` is the last failed training."""

    target: Target
    version: str = UNTRAINED_VERSION
    trainings: int = 0
    pipeline: Pipeline | LogisticRegression | None = None
    last_error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def predict(self, tasks: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One Label Studio prediction per task, in order."""
        probabilities = self._probabilities(tasks)
        answers = []
        for row in probabilities:
            best = int(np.argmax(row))
            score = float(row[best])
            result = {
                "from_name": self.target.control,
                "to_name": self.target.object_name,
                "type": "choices",
                "value": {"choices": [self.target.labels[best]]},
                "score": score,
            }
            answers.append({"result": [result], "score": score, "model_version": self.version})
        return answers

    def train(self, examples: Sequence[tuple[Mapping[str, Any], str]]) -> str:
        """Fit on (task data, label) pairs; return the new version."""
        known = [(data, label) for data, label in examples if label in self.target.labels]
        seen = {label for _, label in known}
        if len(seen) < 2:
            raise TrainingFailed(
                f"need annotations of at least two labels to train, got {len(known)} "
                f"annotation(s) of {sorted(seen) or 'no label'}"
            )
        inputs = [data for data, _ in known]
        targets = [self.target.labels.index(label) for _, label in known]
        model = self._new_model()
        model.fit(self._features(inputs), targets)
        with self.lock:
            self.pipeline = model
            self.trainings += 1
            self.version = f"example-{self.trainings}"
            self.last_error = None
        return self.version

    def pretrain_on_digits(self, version: str = PRETRAINED_VERSION) -> None:
        """A fixed model: fitted once on scikit-learn's bundled digits, never trained again."""
        if self.target.object_tag != "Image":
            raise TrainingFailed("FIXED_MODEL=1 serves image (digits) projects only")
        model = pretrained_digits(self.target.labels)
        with self.lock:
            self.pipeline = model
            self.version = version

    def _new_model(self) -> Pipeline | LogisticRegression:
        if self.target.object_tag == "Image":
            return LogisticRegression(max_iter=2000)
        return make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=2000))

    def _features(self, datas: Sequence[Mapping[str, Any]]) -> Any:
        values = [data.get(self.target.field, "") for data in datas]
        if self.target.object_tag == "Image":
            return np.stack([images.data_url_to_digit(str(v)) for v in values])
        return [str(v) for v in values]

    def _probabilities(self, tasks: Sequence[Mapping[str, Any]]) -> npt.NDArray[np.float64]:
        width = len(self.target.labels)
        with self.lock:
            model = self.pipeline
        if model is None or not tasks:
            return np.full((len(tasks), width), 1.0 / width)
        known = model.predict_proba(self._features([task.get("data", {}) for task in tasks]))
        # The classifier knows only labels it has seen: spread its columns over all labels.
        full = np.zeros((len(tasks), width))
        full[:, list(model.classes_)] = known
        return full
