"""One table of a TOML document, read with its key path; problems are recorded, not raised.

`config.py` reads the whole file through this, so every problem is collected with the path
that locates it (`projects[1].retrain.min_new_annotations: must be > 0, got 0`) and one
run of `aldaemon check-config` shows the operator everything to fix.

The blocks are read table-driven: `read_settings(section, SomeConfig)` reads each field of
the dataclass from the key of the same name, by the field's type (bool, int, float, str,
or one of them `| None`: a value that may be None), with the default written on the field
and the limits in its metadata (`field(default=60.0, metadata={"minimum": 0.0})`); a
field whose type is a dataclass is read from its own sub-table the same way.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields, is_dataclass
from typing import Any, TypeVar

_N = TypeVar("_N", int, float)
_T = TypeVar("_T")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Rule:
    """How one setting is checked beyond its type, written as the field's metadata
    (`field(default=2, metadata={"minimum": 1})`): numeric bounds (a number needs
    `minimum`), the allowed `choices` (a value outside them is reported and the default
    used), `parse` applied to the value read, then `check` returning the problem with it
    (or None); `blank_is_default`: an empty string means the default."""

    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    parse: Callable[[Any], Any] | None = None
    check: Callable[[Any], str | None] | None = None
    blank_is_default: bool = False


def read_settings(section: Section, cls: type[_T], **given: Any) -> _T:
    """Build the dataclass `cls` from `section`, then refuse keys it does not know.

    Fields named in `given` take that value as it is (what needs more than one key, or
    the environment); every other field is read from its key (see the module docstring).
    """
    hints = typing.get_type_hints(cls)
    values = dict(given)
    for spec in fields(cls):  # type: ignore[arg-type]  # cls is a dataclass
        if spec.name in given or not spec.init:
            continue
        kind = hints[spec.name]
        if is_dataclass(kind):
            values[spec.name] = read_settings(section.table(spec.name), kind)  # type: ignore[arg-type]
            continue
        default = spec.default if spec.default is not MISSING else None
        values[spec.name] = section.setting(
            spec.name, kind=kind, default=default, rule=Rule(**spec.metadata)
        )
    section.reject_unknown()
    return cls(**values)


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

    def setting(self, name: str, *, kind: Any, default: Any, rule: Rule) -> Any:
        """One key read by its type: see `read_settings`. A default of None means the
        key is required."""
        optional = isinstance(kind, types.UnionType) and type(None) in typing.get_args(kind)
        if optional:
            if self.get(name) is None:
                return default  # the field's own: None, or a value (queue_depth)
            kind = next(k for k in typing.get_args(kind) if k is not type(None))
        elif default is None and not self.has(name):
            self.error(name, "is required")
        value = self._typed(name, kind=kind, default=default, rule=rule)
        if rule.choices and value not in rule.choices:
            self.error(name, f"must be one of {', '.join(rule.choices)}, got {value!r}")
            return default
        if rule.blank_is_default and not value:
            return default
        if rule.parse is not None:
            value = rule.parse(value)
        problem = None if rule.check is None else rule.check(value)
        if problem is not None:
            self.error(name, problem)
        return value

    def _typed(self, name: str, *, kind: Any, default: Any, rule: Rule) -> Any:
        if kind is bool:
            return self.boolean(name, default)
        if kind is str:
            return self.string(name, default)
        if kind not in (int, float) or rule.minimum is None:
            raise TypeError(f"no reader for {self.key(name)}: {kind!r} (a number needs minimum)")
        if kind is int:
            maximum = None if rule.maximum is None else int(rule.maximum)
            return self.integer(name, default or 0, minimum=int(rule.minimum), maximum=maximum)
        return self.number(name, default or 0.0, minimum=rule.minimum, maximum=rule.maximum)

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
