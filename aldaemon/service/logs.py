"""Structured logging: JSON lines for machines, readable lines for people.

One renderer for everything: our own structlog events and the stdlib records of
libraries (aiohttp, apscheduler, httpx) go through the same processor chain, so
`journalctl -o cat | jq` sees one format. Event names are stable and dotted
(`cycle.finished`, `labelstudio.unreachable`); they are part of the interface.

The last processor before rendering scrubs registered secrets from every string value,
a backstop behind the Secret type: even a library that logs a header it was handed
cannot put the token into a line.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

LOG_FORMATS = ("auto", "json", "console")
_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Never let this exact string reach a log line (short values are ignored)."""
    if len(value) >= 8:
        _secrets.add(value)


def _scrub(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def scrub_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    if not _secrets:
        return event_dict
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = _scrub(value)
        elif value is not None and not isinstance(value, int | float | bool):
            text = str(value)
            scrubbed = _scrub(text)
            if scrubbed != text:
                event_dict[key] = scrubbed
    return event_dict


def configure_logging(
    *, log_format: str = "auto", level: str = "info", stream: TextIO | None = None
) -> None:
    """Set up structlog and route the stdlib root logger through the same renderer."""
    stream = stream or sys.stderr
    if log_format == "auto":
        log_format = "console" if stream.isatty() else "json"
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        scrub_secrets,
    ]
    renderer: Any
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Chatty libraries stay at warning unless we debug.
    quiet = logging.WARNING if level.lower() != "debug" else logging.DEBUG
    for name in ("httpx", "aiohttp.access", "urllib3"):
        logging.getLogger(name).setLevel(max(quiet, root.level))
    # httpcore's debug lines carry raw response headers, Set-Cookie session ids included.
    logging.getLogger("httpcore").setLevel(logging.INFO)
    # APScheduler warns on every skipped run while a cycle outlasts poll_interval; that is
    # max_instances=1 doing its job. Job errors reach us through the scheduler listener.
    logging.getLogger("apscheduler").setLevel(
        logging.DEBUG if quiet == logging.DEBUG else logging.ERROR
    )
