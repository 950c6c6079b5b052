"""One table of a TOML document, read with its key path; problems are recorded, not raised.

`config.py` reads the whole file through this, so every problem is collected with the path
that locates it (`projects[1].retrain.min_new_annotations: must be > 0, got 0`) and one
run of `aldaemon check-config` shows the operator everything to fix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, TypeVar

_N = TypeVar("_N", int, float)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class Section:
    """One table of the document, with its key path; records problems instead of raising."""

    def __init__(self, data: Mapping[str, Any], *, path: str, errors: list[str]) -> None:
        self.data = data
        self.path = path
        self.errors = errors
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        shown = name if _BARE_KEY.fullmatch(name) else json.dumps(name)
        return f"{self.path}.{shown}" if self.path else shown

    def error(self, name: str, message: str) -> None:
        self.errors.append(f"{self.key(name)}: {message}")

    def get(self, name: str) -> Any:
        """The raw value of `name` (None when absent), marking the key as known."""
        self.seen.add(name)
        return self.data.get(name)

    def has(self, name: str) -> bool:
        return name in self.data

    def string(self, name: str, default: str | None = None, *, required: bool = False) -> str:
        value = self.get(name)
        if value is None:
            if required:
                self.error(name, "is required")
            return default or ""
        if not isinstance(value, str):
            self.error(name, f"must be a string, got {_type_name(value)}")
            return default or ""
        return value

    def optional_string(self, name: str) -> str | None:
        if self.get(name) is None:
            return None
        return self.string(name)

    def integer(self, name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
        value = self.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(name, f"must be an integer, got {_type_name(value)}")
            return default
        return _check_range(self, name, value, minimum=minimum, maximum=maximum)

    def number(
        self, name: str, default: float, *, minimum: float, maximum: float | None = None
    ) -> float:
        value = self.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(name, f"must be a number, got {_type_name(value)}")
            return default
        return _check_range(self, name, float(value), minimum=minimum, maximum=maximum)

    def optional_number(self, name: str, *, minimum: float) -> float | None:
        if self.get(name) is None:
            return None
        return self.number(name, 0.0, minimum=minimum)

    def boolean(self, name: str, default: bool) -> bool:
        value = self.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.error(name, f"must be true or false, got {_type_name(value)}")
            return default
        return value

    def table(self, name: str) -> Section:
        value = self.get(name)
        if value is None:
            value = {}
        elif not isinstance(value, dict):
            self.error(name, f"must be a table, got {_type_name(value)}")
            value = {}
        return Section(value, path=self.key(name), errors=self.errors)

    def reject_unknown(self) -> None:
        for name in self.data:
            if name not in self.seen:
                self.error(name, "unknown key")


def _check_range(section: Section, name: str, value: _N, *, minimum: _N, maximum: _N | None) -> _N:
    if value < minimum:
        integer_one = isinstance(minimum, int) and minimum == 1
        comparison = "> 0" if integer_one else f">= {minimum:g}"
        section.error(name, f"must be {comparison}, got {value}")
    elif maximum is not None and value > maximum:
        section.error(name, f"must be <= {maximum}, got {value}")
    return value


def printable(text: str) -> str:
    """User text inside an error line: quoted when it could break or forge a line."""
    return text if text.isprintable() else json.dumps(text)


def _type_name(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)
