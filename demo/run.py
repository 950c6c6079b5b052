"""`make demo`: the whole loop on a real Label Studio, in one command.

    python -m demo [--simulate] [--seconds N] [--annotators N] [--dir .demo]

    1. Label Studio 1.23.2: reuse the one answering on 127.0.0.1:8080 (its token must be
       in .demo/labelstudio-token), else start our own on .demo/label-studio/.
    2. The "Fine food reviews" project: 4,000 training reviews as tasks (demo/data.py).
    3. .demo/config.toml, then the daemon in this process, logging to the console.
    4. --simulate: annotators (asyncio tasks, one Label Studio user each) ask
       `GET /api/projects/{id}/next` and answer with the true label (demo/simulate.py).
    5. Ctrl-C or --seconds: stop annotators, daemon, then Label Studio if we started it,
       and print a summary: labels, versions, and each version's accuracy on the 1,000
       held-out test reviews (demo/summary.py).

Everything the demo creates lives in .demo/ and is reused by the next run: the Label
Studio data, the project (its id is in .demo/demo.json), the config and the daemon's
state. Delete .demo/ to start from nothing.

The demo is a program of its own beside the daemon, run from a clone of the repository
(it needs scripts/install-label-studio.sh and the `demo` extra); it is not in the wheel.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from aldaemon.errors import AldaemonError
from aldaemon.secret import Secret
from aldaemon.service.logs import configure_logging, register_secret
from demo.data import PROJECT_TITLE, ReviewSets, load_reviews
from demo.digits import DIGITS_TITLE
from demo.labelstudio import DemoUser, LocalLabelStudio, install_label_studio, is_healthy
from demo.paths import DemoPaths, read_json, update_json, write_private
from demo.session import SessionOptions, run_session
from demo.summary import DemoSummary, render_summary

log = structlog.get_logger(__name__)

DEFAULT_PORT = 8080
DEMO_EMAIL = "demo@example.com"


@dataclass
class _Started:
    """The Label Studio this run started (and so must stop), if any."""

    server: LocalLabelStudio | None = None


async def connect_label_studio(
    paths: DemoPaths, *, port: int, started: _Started
) -> tuple[str, Secret, DemoUser | None]:
    """Reuse the Label Studio answering on `port`, or start ours; return URL and token."""
    url = f"http://127.0.0.1:{port}"
    demo = read_json(paths.demo_file)
    if await is_healthy(url):
        if not paths.token_file.exists():
            raise AldaemonError(
                f"a Label Studio already answers on {url}, but {paths.token_file} is missing: "
                "put an API token of that server in it (Account & Settings), or stop that "
                "server and run the demo again"
            )
        log.info("demo.label_studio_reused", url=url)
        return url, _read_token(paths), _stored_user(demo, paths)
    user = _stored_user(demo, paths)
    if user is None:
        if paths.label_studio_dir.exists():
            raise AldaemonError(
                f"{paths.label_studio_dir} exists but the demo user's token or password is "
                f"gone; delete {paths.root} to start over"
            )
        user = DemoUser(
            email=DEMO_EMAIL,
            password=Secret(secrets.token_urlsafe(9)),
            legacy_token=Secret(secrets.token_hex(20)),
        )
        update_json(paths.demo_file, email=user.email, password=user.password.reveal())
        write_private(paths.token_file, user.legacy_token.reveal() + "\n")
    register_secret(user.legacy_token.reveal())
    first_start = not paths.label_studio_dir.exists()
    log.info(
        "demo.label_studio_starting",
        url=url,
        data_dir=str(paths.label_studio_dir),
        log=str(paths.label_studio_log),
        note="the first start migrates a new database: about a minute" if first_start else None,
    )
    venv = await asyncio.to_thread(install_label_studio)
    server = LocalLabelStudio(
        venv=venv, data_dir=paths.label_studio_dir, port=port, log_path=paths.label_studio_log
    )
    started.server = server
    await server.start(user)
    log.info("demo.label_studio_ready", url=url)
    return url, user.legacy_token, user


def _read_token(paths: DemoPaths) -> Secret:
    value = paths.token_file.read_text(encoding="utf-8").strip()
    if not value:
        raise AldaemonError(f"{paths.token_file} is empty")
    return Secret(value, source=str(paths.token_file))


def _stored_user(demo: Mapping[str, Any], paths: DemoPaths) -> DemoUser | None:
    email, password = demo.get("email"), demo.get("password")
    if not isinstance(email, str) or not isinstance(password, str):
        return None
    if not paths.token_file.exists():
        return None
    return DemoUser(email=email, password=Secret(password), legacy_token=_read_token(paths))


def print_banner(
    *,
    url: str,
    user: DemoUser | None,
    paths: DemoPaths,
    options: SessionOptions,
    project_id: int,
    digits_id: int | None,
) -> None:
    config = paths.config_file
    login = f"{user.email} / {user.password.reveal()}" if user else "(your own account)"
    lines = [
        "",
        f"  Label Studio   {url}   (log: {paths.label_studio_log})",
        f"  login          {login}",
        f"  project        {url}/projects/{project_id}/data  ({PROJECT_TITLE})",
    ]
    if digits_id is not None:
        lines += [
            f"  project        {url}/projects/{digits_id}/data  ({DIGITS_TITLE})",
            f"  ML backend     http://127.0.0.1:{options.backend_port}  "
            f"(log: {paths.root / 'backend.log'})",
        ]
    if options.listen:
        lines.append(f"  daemon health  http://{options.listen}/healthz   metrics: /metrics")
    lines += [
        f"  status         aldaemon --config {config} status",
        f"  report         aldaemon --config {config} report --project {project_id} "
        f"--out {paths.root / 'report'}",
        "  Ctrl-C stops the daemon"
        + (", the annotators" if options.annotators else "")
        + " and Label Studio (if the demo started it).",
        "",
    ]
    print("\n".join(lines), flush=True)


async def _demo(
    args: argparse.Namespace, paths: DemoPaths, reviews: ReviewSets, started: _Started
) -> DemoSummary:
    options = SessionOptions(
        seconds=args.seconds,
        annotators=args.annotators if args.simulate else 0,
        labels_per_second=args.rate,
        digits=not args.no_digits,
        backend_port=args.backend_port,
    )
    url, token, user = await connect_label_studio(paths, port=args.port, started=started)
    return await run_session(
        url=url,
        token=token,
        paths=paths,
        reviews=reviews,
        options=options,
        on_ready=lambda project_id, digits_id: print_banner(
            url=url,
            user=user,
            paths=paths,
            options=options,
            project_id=project_id,
            digits_id=digits_id,
        ),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description="Run aldaemon on a demo project in a local Label Studio.",
    )
    parser.add_argument("--simulate", action="store_true", help="add simulated annotators")
    parser.add_argument("--seconds", type=float, default=None, help="stop after N seconds")
    parser.add_argument("--annotators", type=int, default=3, help="simulated annotators (3)")
    parser.add_argument(
        "--rate", type=float, default=3.0, help="labels per second, all annotators (3)"
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="Label Studio port")
    parser.add_argument("--dir", default=".demo", help="demo directory (.demo)")
    parser.add_argument(
        "--no-digits", action="store_true", help="only the reviews project, no ML backend"
    )
    parser.add_argument(
        "--backend-port", type=int, default=9091, help="the example ML backend's port (9091)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.annotators < 1 or args.rate <= 0:
        print("demo: --annotators must be >= 1 and --rate > 0", file=sys.stderr)
        return 2
    configure_logging(log_format="console", level=os.environ.get("ALDAEMON_LOG_LEVEL", "info"))
    # A cycle that outlasts poll_interval (an upload takes ~10 s here) makes APScheduler warn
    # on every skipped tick; harmless (max_instances=1 is the point), but it floods a console.
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
    paths = DemoPaths(Path(args.dir).resolve())
    started = _Started()
    try:
        reviews = load_reviews()
        summary = asyncio.run(_demo(args, paths, reviews, started))
    except KeyboardInterrupt:
        print("\ndemo: interrupted", file=sys.stderr)
        return 130
    except AldaemonError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    finally:
        if started.server is not None:
            log.info("demo.label_studio_stopping", url=started.server.url)
            started.server.stop()
    print("\n" + render_summary(summary), flush=True)
    return 0
