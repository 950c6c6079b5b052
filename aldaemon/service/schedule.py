"""The daemon's APScheduler jobs: one poll job per project, plus a cron job when configured.

Each APScheduler run is its own asyncio task, so a slow project never delays another,
and structlog's context variables (project_id, cycle_id) stay with their own cycle.
Job defaults: coalesce (a backlog of missed runs becomes one), max_instances=1, and no
misfire cut-off, so a run late because the loop was busy still happens once.

What a job runs is the daemon's `_run_project`, which hands the run to the project's
`ProjectRunner`; this module only says when.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from apscheduler.events import EVENT_JOB_ERROR, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from aldaemon.config import ProjectConfig

log = structlog.get_logger(__name__)

# A project's first poll after start or reload; staggered so they do not all hit at once.
STAGGER_SECONDS = 0.5

ProjectJob = Callable[..., Coroutine[Any, Any, None]]


def poll_job_id(project_id: int) -> str:
    return f"poll-{project_id}"


def cron_job_id(project_id: int) -> str:
    return f"cron-{project_id}"


def utc_now_plus(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def new_scheduler() -> AsyncIOScheduler:
    """An (unstarted) scheduler with the job defaults above and a listener for job errors."""
    scheduler = AsyncIOScheduler(
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        timezone="UTC",
    )
    scheduler.add_listener(_log_job_error, EVENT_JOB_ERROR)
    return scheduler


def _log_job_error(event: JobExecutionEvent) -> None:
    # A runner never raises for a cycle's own failure: reaching this is a bug.
    log.error(
        "scheduler.job_failed",
        job_id=event.job_id,
        error=f"{type(event.exception).__name__}: {event.exception}",
        traceback=event.traceback,
    )


def schedule_projects(
    scheduler: AsyncIOScheduler,
    projects: Iterable[ProjectConfig],
    *,
    poll_interval: float,
    run: ProjectJob,
) -> None:
    """(Re)create each project's jobs; the first poll comes now, staggered.

    `run(project_id)` is a poll, `run(project_id, forced_training=True)` a cron run.
    """
    for index, project in enumerate(projects):
        scheduler.add_job(
            run,
            IntervalTrigger(seconds=poll_interval, jitter=min(poll_interval * 0.1, 5.0)),
            args=(project.id,),
            id=poll_job_id(project.id),
            name=f"poll project {project.id}",
            replace_existing=True,
            next_run_time=utc_now_plus(index * STAGGER_SECONDS),
        )
        if project.retrain.cron:
            scheduler.add_job(
                run,
                CronTrigger.from_crontab(project.retrain.cron, timezone="UTC"),
                args=(project.id,),
                kwargs={"forced_training": True},
                id=cron_job_id(project.id),
                name=f"forced retrain project {project.id}",
                replace_existing=True,
            )
        elif scheduler.get_job(cron_job_id(project.id)) is not None:
            scheduler.remove_job(cron_job_id(project.id))


def unschedule_project(scheduler: AsyncIOScheduler, project_id: int) -> None:
    for job_id in (poll_job_id(project_id), cron_job_id(project_id)):
        if scheduler.get_job(job_id) is not None:
            scheduler.remove_job(job_id)


def poll_soon(scheduler: AsyncIOScheduler, project_id: int) -> None:
    """Move the project's poll job to now; a no-op when it has none."""
    job = scheduler.get_job(poll_job_id(project_id))
    if job is None:
        return
    log.debug("poll.requested_early", project_id=project_id)
    job.modify(next_run_time=utc_now_plus(0))
