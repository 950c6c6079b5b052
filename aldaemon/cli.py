"""The command line: argv in, exit status out; nothing else parses argv.

Every command loads the config the same way, calls its function (the one-shot ones live
in aldaemon/commands.py, `run` in aldaemon/service/daemon.py) and turns an error of
aldaemon/errors.py into one clear line on stderr, never a traceback, and the exit code
`errors.exit_code` assigns it:

    0   success
    1   a project's cycle failed, or Label Studio refused / was unreachable
    2   usage error (argparse)
    73  local state cannot be created or is locked (EX_CANTCREAT)
    78  invalid configuration (EX_CONFIG; systemd does not restart-loop on it)
    130 interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence

import structlog

from aldaemon import __version__
from aldaemon.config import Config, default_config_path, load_config
from aldaemon.errors import AldaemonError, ConfigError, exit_code
from aldaemon.service.logs import LOG_FORMATS, configure_logging, register_secret

log = structlog.get_logger(__name__)


def _global_flags(*, defaults: bool) -> argparse.ArgumentParser:
    """The flags every command takes, accepted before and after the command name.

    One definition, used twice: on the main parser with their defaults, and as a parent
    of every command whose copies default to SUPPRESS, so `aldaemon run --config X` and
    `aldaemon --config X run` mean the same and a flag given before the command is not
    overwritten by the command's own default.
    """
    flags = argparse.ArgumentParser(add_help=False)

    def default(value: str | None) -> str | None:
        return value if defaults else argparse.SUPPRESS

    flags.add_argument(
        "--config",
        default=default(None),
        help="config file (default: $ALDAEMON_CONFIG, else /etc/aldaemon/config.toml)",
    )
    flags.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=default(os.environ.get("ALDAEMON_LOG_FORMAT", "auto")),
        help="json lines, readable console lines, or auto (console on a terminal)",
    )
    flags.add_argument(
        "--log-level",
        default=default(os.environ.get("ALDAEMON_LOG_LEVEL", "info")),
        choices=("debug", "info", "warning", "error"),
    )
    return flags


class _Commands:
    """Adds commands that all accept the global flags after their name too."""

    def __init__(self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]):
        self._subparsers = subparsers
        self._flags = _global_flags(defaults=False)

    def add(self, name: str, *, help: str) -> argparse.ArgumentParser:
        return self._subparsers.add_parser(name, help=help, parents=[self._flags])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aldaemon",
        description="A live active-learning loop for Label Studio.",
        parents=[_global_flags(defaults=True)],
    )
    parser.add_argument("--version", action="version", version=f"aldaemon {__version__}")
    commands = _Commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    commands.add("run", help="run until SIGTERM or SIGINT")
    commands.add("once", help="one full cycle for every project, then exit")
    commands.add("check-config", help="validate the config; exit 78 when invalid")
    status = commands.add("status", help="per-project state, from local state alone")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    pin = commands.add("pin", help="activate one of our older versions and keep it")
    pin.add_argument("--project", type=int, required=True)
    pin.add_argument("--version", required=True, dest="model_version")
    unpin = commands.add("unpin", help="resume automatic activation of new versions")
    unpin.add_argument("--project", type=int, required=True)
    webhook = commands.add("webhook", help="manage the Label Studio webhook")
    webhook_commands = _Commands(webhook.add_subparsers(dest="webhook_command", required=True))
    install = webhook_commands.add("install", help="register the webhook in Label Studio")
    install.add_argument("--project", type=int, required=True)
    install.add_argument("--url", required=True, help="e.g. http://10.0.0.5:9090/webhook")
    state = commands.add("state", help="local state maintenance")
    state_commands = _Commands(state.add_subparsers(dest="state_command", required=True))
    rebuild = state_commands.add(
        "rebuild", help="forget a project's local state and re-read it from Label Studio"
    )
    rebuild.add_argument("--project", type=int, required=True)
    report = commands.add("report", help="write an HTML report with plots")
    report.add_argument("--project", type=int, required=True)
    report.add_argument("--out", required=True, help="output directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(log_format=args.log_format, level=args.log_level)
    config_path = args.config or default_config_path()
    handler = _COMMANDS[args.command]
    try:
        return handler(args, config_path)
    except ConfigError as exc:
        _print_config_errors(exc)
        return exit_code(exc)
    except AldaemonError as exc:
        print(f"aldaemon: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        return 130


def _print_config_errors(exc: ConfigError) -> None:
    print(f"aldaemon: invalid configuration in {exc.path}:", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)


def _load(config_path: str) -> Config:
    config = load_config(config_path)
    register_secret(config.labelstudio.token.reveal())
    if config.daemon.webhook_secret is not None:
        register_secret(config.daemon.webhook_secret.reveal())
    return config


def _check_config(args: argparse.Namespace, config_path: str) -> int:
    config = _load(config_path)
    projects = ", ".join(str(p.id) for p in config.projects)
    print(f"{config_path}: valid ({len(config.projects)} project(s): {projects})")
    return 0


def _once(args: argparse.Namespace, config_path: str) -> int:
    from aldaemon import commands

    config = _load(config_path)
    results = asyncio.run(commands.run_once(config))
    for line in results.lines:
        print(line)
    return 0 if results.all_succeeded else 1


def _run(args: argparse.Namespace, config_path: str) -> int:
    from aldaemon.service import daemon

    config = _load(config_path)
    return asyncio.run(daemon.run_daemon(config, config_path=config_path))


def _status(args: argparse.Namespace, config_path: str) -> int:
    from aldaemon.views import status

    config = _load(config_path)
    report = status.collect(config)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=False))
    else:
        print(status.render_text(report))
    return 0


def _pin(args: argparse.Namespace, config_path: str) -> int:
    from aldaemon import commands

    config = _load(config_path)
    message = asyncio.run(
        commands.pin_version(config, project_id=args.project, version=args.model_version)
    )
    print(message)
    return 0


def _unpin(args: argparse.Namespace, config_path: str) -> int:
    from aldaemon import commands

    config = _load(config_path)
    print(commands.unpin_version(config, project_id=args.project))
    return 0


def _webhook(args: argparse.Namespace, config_path: str) -> int:
    from aldaemon import commands

    config = _load(config_path)
    print(asyncio.run(commands.install_webhook(config, project_id=args.project, url=args.url)))
    return 0


def _state(args: argparse.Namespace, config_path: str) -> int:
    from aldaemon import commands

    config = _load(config_path)
    print(asyncio.run(commands.rebuild_state(config, project_id=args.project)))
    return 0


def _report(args: argparse.Namespace, config_path: str) -> int:
    from aldaemon.views import report

    config = _load(config_path)
    path = report.write_report(config, project_id=args.project, out_dir=args.out)
    print(f"report written to {path}")
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace, str], int]] = {
    "run": _run,
    "once": _once,
    "check-config": _check_config,
    "status": _status,
    "pin": _pin,
    "unpin": _unpin,
    "webhook": _webhook,
    "state": _state,
    "report": _report,
}

if __name__ == "__main__":
    sys.exit(main())
