"""The labeling-team steps of a cycle: team views, suspects, the stop set and the stop hold.

The decisions live in sync/ (consensus, stopping, team_views); this module reads and
writes what they need: the store's `team_state` values and aldaemon's own Data Manager
views "Conflicting labels" and "Suspected label errors" (found by stored id, else by
title, and rewritten in place: never a second one, never anyone else's view).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog

from aldaemon.errors import LabelStudioRefused
from aldaemon.loop.context import CycleContext, CycleReport
from aldaemon.loop.fence import confirm_owner
from aldaemon.records import ViewInfo
from aldaemon.store import VersionRow
from aldaemon.store.team import (
    REOPENED_FOR,
    STABLE_ANNOUNCED,
    STABLE_SINCE,
    STOP_PREDICTIONS,
    STOP_SET,
    SUSPECTS,
)
from aldaemon.sync.consensus import LATEST
from aldaemon.sync.policy import TrainingDecision
from aldaemon.sync.stopping import (
    choose_stop_set,
    consecutive_agreements,
    prediction_key,
    reopen_threshold,
    stable_since,
)
from aldaemon.sync.team_views import (
    CONFLICTS_VIEW_TITLE,
    SUSPECTS_VIEW_TITLE,
    ViewStep,
    task_list_view_data,
    team_view_step,
    views_check_due,
)
from aldaemon.sync.versions import label_changes_since_training, last_trained, withheld_tasks

Logger = structlog.typing.FilteringBoundLogger

# The resync time at which the team views were last listed (sync.team_views.views_check_due).
VIEWS_CHECKED_AT = "views_checked_at"
# Predictions kept per project: enough for any `versions` setting to find its run.
STOP_HISTORY_KEPT = 101


def record_suspects(
    ctx: CycleContext,
    version: str,
    task_ids: Sequence[int],
    *,
    report: CycleReport,
    logger: Logger,
) -> None:
    """Store a training's suspected label errors (they fill the suspects view)."""
    ctx.store.set_team_value(
        ctx.project.id, SUSPECTS, {"version": version, "task_ids": list(task_ids)}
    )
    report.count("suspected_label_errors", len(task_ids))
    if task_ids:
        logger.info(
            "labels.suspected_errors", version=version, count=len(task_ids), task_ids=task_ids[:20]
        )


async def score_stop_set(ctx: CycleContext, version: VersionRow, *, logger: Logger) -> None:
    """Predict the project's stop set with `version`, then update "stable since"."""
    store, project_id, stop = ctx.store, ctx.project.id, ctx.project.stop
    stop_set = store.team_value(project_id, STOP_SET)
    if stop_set is None:
        candidates = store.scorable_unlabeled_ids(project_id)
        stop_set = choose_stop_set(candidates, size=stop.stop_set_size, seed=project_id)
        store.set_team_value(project_id, STOP_SET, stop_set)
    texts = store.task_texts(project_id, stop_set)
    scorable = [(t, texts[t]) for t in stop_set if texts.get(t) and str(texts[t]).strip()]
    if not scorable or version.artifact_path is None:
        return
    scored = await ctx.worker.score(
        artifact_path=version.artifact_path,
        task_ids=[t for t, _ in scorable],
        texts=[str(text) for _, text in scorable],
        strategy=ctx.project.predictions.strategy,
    )
    keys = (
        [prediction_key(s) for s in scored.label_sets]
        if scored.label_sets is not None
        else list(scored.labels)
    )
    history: list[Any] = store.team_value(project_id, STOP_PREDICTIONS) or []
    history = [h for h in history if h[0] != version.name]
    history.append([version.name, {str(t): k for t, k in zip(scored.task_ids, keys, strict=True)}])
    history = history[-STOP_HISTORY_KEPT:]
    store.set_team_value(project_id, STOP_PREDICTIONS, history)
    agreements = consecutive_agreements([(name, preds) for name, preds in history])
    since = stable_since(agreements, threshold=stop.kappa, k=stop.versions)
    store.set_team_value(project_id, STABLE_SINCE, since)
    kappa = agreements[-1].kappa if agreements else None
    logger.info("stop.agreement", version=version.name, kappa=kappa, stable_since=since)
    if since is not None and store.team_value(project_id, STABLE_ANNOUNCED) != since:
        store.set_team_value(project_id, STABLE_ANNOUNCED, since)
        logger.info(
            "project.stable",
            stable_since=since,
            kappa=kappa,
            versions=stop.versions,
            action="more labels barely change the model's predictions; see README "
            "'Working with a team'"
            + (
                "; retraining stops until labels change (stop_when_stable)"
                if stop.stop_when_stable
                else ""
            ),
        )


def hold_if_stable(
    ctx: CycleContext, decision: TrainingDecision, *, logger: Logger
) -> TrainingDecision:
    """With `stop_when_stable`, a stable project does not retrain until labels reopen it.

    Reopened by label changes since the last training of at least `reopen_fraction` of
    the labels it trained on (and never fewer than `min_new_annotations`). A cron run is
    held too: it retrains "when anything changed", and nothing changed enough.
    """
    stop, store, project_id = ctx.project.stop, ctx.store, ctx.project.id
    if not decision.train or not stop.stop_when_stable:
        return decision
    since = store.stable_since(project_id)
    versions = store.list_versions(project_id)
    last = last_trained(versions)
    if since is None or last is None:
        return decision
    changes = label_changes_since_training(
        label_changes=store.sync_state(project_id).label_changes, versions=versions
    )
    needed = reopen_threshold(
        trained_on=last.n_labels or 0,
        fraction=stop.reopen_fraction,
        min_new_annotations=ctx.project.retrain.min_new_annotations,
    )
    if changes >= needed:
        if store.team_value(project_id, REOPENED_FOR) != last.name:
            store.set_team_value(project_id, REOPENED_FOR, last.name)
            logger.info("project.reopened", stable_since=since, label_changes=changes)
        return decision
    return TrainingDecision(
        False,
        f"stable since {since}: retraining stopped (stop_when_stable); "
        f"{changes} of {needed} label changes reopen it",
    )


async def refresh_views(ctx: CycleContext, *, logger: Logger) -> None:
    """Rewrite the team views whose task lists changed; recreate the ones deleted.

    After every resync (periodic, and before each training) the project's views are
    listed once, so a view a person deleted comes back even when its list did not change
    (sync/team_views.py); in between an unchanged list costs no request.
    """
    store, project = ctx.store, ctx.project
    lists: dict[str, list[int]] = {}
    if project.labels.policy != LATEST:
        withheld = withheld_tasks(store.annotated_tasks(project.id), project.labels.policy)
        lists[CONFLICTS_VIEW_TITLE] = sorted(withheld)
    if store.team_value(project.id, SUSPECTS) is not None:
        lists[SUSPECTS_VIEW_TITLE] = store.suspects(project.id)
    if not lists:
        return
    last_resync_at = store.sync_state(project.id).last_resync_at
    listed: list[ViewInfo] | None = None
    if views_check_due(
        last_resync_at=last_resync_at, checked_at=store.team_value(project.id, VIEWS_CHECKED_AT)
    ):
        listed = await ctx.gateway.list_views(project.id)
    for title, task_ids in lists.items():
        await _write_task_view(ctx, title, task_ids, listed=listed, logger=logger)
    if listed is not None:
        store.set_team_value(project.id, VIEWS_CHECKED_AT, last_resync_at or 0.0)


async def _write_task_view(
    ctx: CycleContext,
    title: str,
    task_ids: list[int],
    *,
    listed: list[ViewInfo] | None,
    logger: Logger,
) -> None:
    store, project_id = ctx.store, ctx.project.id
    id_key, written_key = f"view:{title}", f"view_tasks:{title}"
    view_id = store.team_value(project_id, id_key)
    step = team_view_step(
        view_id=view_id,
        written=store.team_value(project_id, written_key),
        task_ids=task_ids,
        listed_ids=None if listed is None else {v.id for v in listed},
    )
    if step == ViewStep.KEEP:
        return
    data = task_list_view_data(title=title, task_ids=task_ids)
    if step == ViewStep.FIND:
        views = listed if listed is not None else await ctx.gateway.list_views(project_id)
        view_id = next((v.id for v in views if v.title == title), None)
    elif step == ViewStep.RECREATE:
        view_id = None
    confirm_owner(ctx)
    if view_id is not None:
        try:
            await ctx.gateway.replace_view(view_id, project_id=project_id, data=data)
        except LabelStudioRefused as exc:
            if exc.status_code != 404:
                raise
            step, view_id = ViewStep.RECREATE, None
    if view_id is None:
        view_id = (await ctx.gateway.create_view(project_id, data=data)).id
        if step == ViewStep.RECREATE:
            logger.warning(
                "view.recreated", title=title, view_id=view_id, reason="view was deleted"
            )
    store.set_team_value(project_id, id_key, view_id)
    store.set_team_value(project_id, written_key, task_ids)
