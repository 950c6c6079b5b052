"""Everything a user touches is documented: log events, config keys, metrics, commands."""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

from aldaemon.cli import build_parser
from aldaemon.service.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
DOCS = (ROOT / "README.md").read_text() + (ROOT / "deploy" / "README.md").read_text()
LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical"}
EVENT_NAME = re.compile(r"[a-z_]+(\.[a-z_]+)+")


def log_events() -> Iterator[str]:
    """Every dotted event name passed as the first argument of a log call in the package."""
    for path in (ROOT / "aldaemon").rglob("*.py"):
        if path.name.startswith("demo"):
            continue  # the demo's own chatter is not part of the daemon's interface
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LOG_METHODS
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                and EVENT_NAME.fullmatch(node.args[0].value)
            ):
                yield node.args[0].value


def config_keys(table: dict[str, object], prefix: str = "") -> Iterator[str]:
    for key, value in table.items():
        if isinstance(value, dict):
            yield from config_keys(value, f"{prefix}{key}.")
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    yield from config_keys(item, f"{prefix}{key}[].")
        else:
            yield f"{prefix}{key}"


class TestDocumentation:
    def test_every_log_event_is_documented(self) -> None:
        """Each event name the daemon logs appears in README.md or deploy/README.md."""
        assert [] == sorted({event for event in log_events() if f"`{event}`" not in DOCS})

    def test_every_config_key_is_documented(self) -> None:
        """Each key of config.example.toml appears, backquoted, in the README."""
        example = tomllib.loads((ROOT / "config.example.toml").read_text())
        missing = [
            key
            for key in config_keys(example)
            if f"`{key.replace('[]', '[]')}`" not in DOCS and f"`{key.split('.')[-1]}`" not in DOCS
        ]
        assert [] == missing

    def test_every_metric_is_documented(self) -> None:
        """Each Prometheus metric the daemon exports is named in the docs."""
        names = {
            metric.name
            for metric in Metrics().registry.collect()
            if metric.name.startswith("aldaemon_")
        }
        assert [] == sorted(name for name in names if name not in DOCS)

    def test_every_command_is_documented(self) -> None:
        """Each subcommand of the CLI appears as `aldaemon NAME` in the README."""
        parser = build_parser()
        subparsers = next(action for action in parser._actions if action.dest == "command")
        commands = list(subparsers.choices)  # type: ignore[attr-defined]
        assert [] == [name for name in commands if f"aldaemon {name}" not in DOCS]

    def test_every_test_module_named_in_the_readme_exists(self) -> None:
        """The bracketed test modules of "What happens when..." name real files in tests/."""
        named = {
            name.strip()
            for brackets in re.findall(r"\[(test_[a-z_, ]+)\]", DOCS)
            for name in brackets.split(",")
        }
        existing = {path.stem for path in (ROOT / "tests").rglob("test_*.py")}
        assert named, "the README names no test module any more"
        assert [] == sorted(named - existing)
