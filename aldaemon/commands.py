"""The one-shot commands behind `aldaemon once|pin|unpin|webhook install|state rebuild`.

Each takes a loaded `Config` and returns what the command prints (or raises an
`AldaemonError` that `cli.py` turns into a message and an exit code). They run outside
the daemon: `once` and `state rebuild` open a `Runtime` of their own; `pin`, `unpin` and
`webhook install` open the store without its lock, so they work next to a running daemon.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from aldaemon.config import Config, ProjectConfig
from aldaemon.errors import AldaemonError, LabelStudioRefused, StateError, StateLockedError
from aldaemon.loop.context import CycleContext, CycleReport
from aldaemon.loop.publish import activate_version
from aldaemon.service.health import ProjectHealth
from aldaemon.service.runtime import Runtime, make_gateway
from aldaemon.store import Store, quarantine_database
from aldaemon.sync.versions import VersionState, own_version_number

log = structlog.get_logger(__name__)
WEBHOOK_ACTIONS = (
    "ANNOTATION_CREATED",
    "ANNOTATIONS_CREATED",
    "ANNOTATION_UPDATED",
    "ANNOTATIONS_DELETED",
    "TASKS_CREATED",
    "TASKS_DELETED",
)


@dataclass
class OnceResult:
    lines: list[str] = field(default_factory=list)
    all_succeeded: bool = True


async def run_once(config: Config) -> OnceResult:
    """`aldaemon once`: one full cycle for every project, concurrently."""
    result = OnceResult()
    async with Runtime(config) as runtime:
        reports: Sequence[CycleReport] = await asyncio.gather(
            *(runtime.run_cycle(project) for project in config.projects)
        )
        await runtime.wait_for_prunes()
        for report in reports:
            health = runtime.runner(report.project_id).health
            result.lines.append(summary_line(report, health))
            if report.outcome == "failed" or report.error is not None or health.failing:
                result.all_succeeded = False
    return result


def summary_line(report: CycleReport, health: ProjectHealth | None) -> str:
    counts = report.counts
    parts = [
        f"project {report.project_id}: {report.outcome}",
        f"read {counts.get('tasks_read', 0)} task(s)",
        f"+{counts.get('annotations_created', 0)}"
        f" ~{counts.get('annotations_updated', 0)}"
        f" -{counts.get('annotations_deleted', 0)} annotation(s)",
    ]
    if report.version:
        parts.append(f"version {report.version}")
    if counts.get("predictions_uploaded"):
        parts.append(f"{counts['predictions_uploaded']} prediction(s) uploaded")
    if report.decision:
        parts.append(report.decision)
    parts.append(f"{counts.get('http_requests', 0)} request(s)")
    if health is not None and health.failure:
        parts.append(f"FAILED: {health.failure}")
    elif health is not None and health.unreachable_since:
        parts.append("Label Studio unreachable")
    elif report.error:
        parts.append(f"error: {report.error}")
    return "; ".join(parts)


def _project(config: Config, project_id: int) -> ProjectConfig:
    project = config.project(project_id)
    if project is None:
        configured = ", ".join(str(p.id) for p in config.projects)
        raise AldaemonError(f"project {project_id} is not in the config (configured: {configured})")
    return project


async def pin_version(config: Config, *, project_id: int, version: str) -> str:
    """Activate one of our own complete versions and stop automatic activation."""
    project = _project(config, project_id)
    store = Store.from_config(config.state, lock=False)
    try:
        row = store.get_version(project_id, version)
        if row is None or own_version_number(project.predictions.version_prefix, version) is None:
            raise AldaemonError(
                f"{version} is not a version aldaemon created for project {project_id}"
            )
        if row.state not in (VersionState.ACTIVE, VersionState.SUPERSEDED):
            raise AldaemonError(f"{version} is {row.state}; only a complete version can be pinned")
        async with make_gateway(config) as gateway:
            counts = await gateway.model_version_counts(project_id)
            if counts.get(version, 0) < (row.n_predictions or 0):
                raise AldaemonError(
                    f"{version} has {counts.get(version, 0)} of {row.n_predictions} predictions "
                    "in Label Studio; pin a complete version"
                )
            ctx = CycleContext(
                project=project,
                daemon=config.daemon,
                gateway=gateway,
                store=store,
                worker=None,  # type: ignore[arg-type]  # activation needs no model
                artifacts_dir=config.state.dir,
            )
            # The pin is recorded first: a running daemon that finishes a version meanwhile
            # sees it and does not activate over it; prune never deletes it.
            previous_pin = store.get_meta(project_id).pinned_version
            store.set_meta(project_id, pinned_version=version)
            try:
                await activate_version(ctx, version)
            except BaseException:
                store.set_meta(project_id, pinned_version=previous_pin)
                raise
    finally:
        store.close()
    log.info("version.pinned", project_id=project_id, version=version)
    return (
        f"project {project_id}: {version} is active and pinned; "
        f"`aldaemon unpin --project {project_id}` resumes automatic activation"
    )


def unpin_version(config: Config, *, project_id: int) -> str:
    _project(config, project_id)
    store = Store.from_config(config.state, lock=False)
    try:
        pinned = store.get_meta(project_id).pinned_version
        store.set_meta(project_id, pinned_version=None)
    finally:
        store.close()
    log.info("version.unpinned", project_id=project_id, was=pinned)
    if pinned is None:
        return f"project {project_id}: nothing was pinned"
    return f"project {project_id}: {pinned} unpinned; the next new version becomes active"


async def install_webhook(config: Config, *, project_id: int, url: str) -> str:
    """Register our webhook in Label Studio, with the shared secret header."""
    _project(config, project_id)
    secret = config.daemon.webhook_secret
    if secret is None:
        raise AldaemonError(
            "no webhook secret configured: set [daemon].webhook_secret_file, "
            "ALDAEMON_WEBHOOK_SECRET or the credential webhook-secret first"
        )
    async with make_gateway(config) as gateway:
        try:
            webhook_id = await gateway.create_webhook(
                project_id, url=url, secret=secret, actions=WEBHOOK_ACTIONS
            )
        except LabelStudioRefused as exc:
            if (
                exc.status_code == 403
                or "private" in str(exc).lower()
                or "ssrf" in str(exc).lower()
            ):
                raise AldaemonError(
                    f"Label Studio refused the webhook URL {url}: {exc}. Label Studio blocks "
                    "webhooks to local and private addresses unless it runs with "
                    "SSRF_PROTECTION_ENABLED=false; set that on the Label Studio server or use "
                    "an address it accepts"
                ) from None
            raise
    return f"project {project_id}: webhook {webhook_id} -> {url}"


async def rebuild_state(config: Config, *, project_id: int) -> str:
    """Forget a project's local tasks and labels, re-read them all, retrain."""
    project = _project(config, project_id)
    try:
        store = Store.from_config(config.state)
    except StateLockedError:
        raise
    except StateError as exc:
        if config.state.dsn is not None:
            raise  # PostgreSQL keeps its own files; only a SQLite file is moved aside
        moved = quarantine_database(config.state.dir, now=time.time())
        log.warning("state.quarantined", error=str(exc), moved_to=str(moved))
        store = Store.from_config(config.state)
    store.wipe_project(project_id)
    store.close()
    async with Runtime(config) as runtime:
        report = await runtime.run_cycle(project, force_resync=True, forced_training=True)
        line = summary_line(report, runtime.runner(project_id).health)
    return f"rebuilt: {line}"
