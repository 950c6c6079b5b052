"""What the daemon asks of a model, and how a configured one is found.

Any object with sklearn's classifier surface will do: `fit(texts, labels)`,
`predict_proba(texts)` and, after fitting, `classes_` (the column order of
predict_proba). A factory is a zero-argument callable returning a fresh, unfitted one;
config names it as "package.module:factory". A factory, not an instance, because
cross-validation needs several fresh copies and an instance is not safe to reuse.

Factories are resolved by import path (not pickled callables) so the worker process can
import them by name: the config stays a string, and the artifact records where its
model came from.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from aldaemon.errors import ModelError

DEFAULT_FACTORY = "aldaemon.model.default:make_text_classifier"


@runtime_checkable
class TextClassifier(Protocol):
    """A probabilistic text classifier with sklearn's method names."""

    classes_: Any  # array-like of labels, set by fit; the column order of predict_proba

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> Any: ...

    def predict_proba(self, texts: Sequence[str]) -> npt.NDArray[np.float64]: ...


ModelFactory = Callable[[], TextClassifier]


def load_factory(ref: str) -> ModelFactory:
    """Import the factory named "package.module:attribute" (attribute may be dotted).

    Every failure is a ModelError that starts with the ref as written in the config, so
    `check-config` and the logs point at the line to fix.
    """
    module_name, sep, attribute_path = ref.partition(":")
    if not sep or not module_name or not attribute_path:
        raise ModelError(f"model = {ref!r}: expected 'package.module:factory'")
    try:
        target: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"model = {ref!r}: cannot import module {module_name}: {exc}") from exc
    except Exception as exc:  # the module itself raised while importing
        raise ModelError(
            f"model = {ref!r}: importing module {module_name} raised {type(exc).__name__}: {exc}"
        ) from exc
    owner = module_name
    for name in attribute_path.split("."):
        if not hasattr(target, name):
            raise ModelError(f"model = {ref!r}: module {owner} has no attribute {name}")
        target = getattr(target, name)
        owner = f"{owner}.{name}"
    if not callable(target):
        raise ModelError(f"model = {ref!r}: {owner} is not callable")
    factory: ModelFactory = target
    return factory


def build_model(ref: str) -> TextClassifier:
    """Call the factory and check that what it made can be trained and asked.

    `classes_` is not checked: an unfitted sklearn estimator does not have it yet.
    """
    factory = load_factory(ref)
    try:
        model = factory()
    except Exception as exc:
        raise ModelError(f"model = {ref!r}: factory raised {type(exc).__name__}: {exc}") from exc
    missing = [
        name for name in ("fit", "predict_proba") if not callable(getattr(model, name, None))
    ]
    if missing:
        raise ModelError(
            f"model = {ref!r}: factory returned {type(model).__name__}, "
            f"which has no {' or '.join(missing)}"
        )
    return model
