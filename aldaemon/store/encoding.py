"""How values the database has no type for are stored: JSON text, on every backend."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def _json_default(value: object) -> object:
    """numpy scalars (from the model worker) become plain numbers; anything else is a bug."""
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def to_json(value: object) -> str | None:
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, default=_json_default)


def from_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def json_tuple(text: str | None) -> tuple[Any, ...] | None:
    """A JSON array as stored, back as a tuple; NULL stays None."""
    return None if text is None else tuple(json.loads(text))


def encode_labels(labels: Sequence[str] | None) -> str | None:
    """A label set as stored (a JSON array, order kept); None stays NULL: no answer."""
    return None if labels is None else json.dumps(list(labels))


def decode_labels(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(str(label) for label in json.loads(text))
