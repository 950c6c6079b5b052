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
    task_list_view_data,
)
from aldaemon.sync.versions import label_changes_since_training, last_trained, withheld_tasks

Logger = structlog.typing.FilteringBoundLogger

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
    pool = dict(store.unlabeled_tasks(project_id))
    stop_set = store.team_value(project_id, STOP_SET)
    if stop_set is None:
        candidates = [t for t, text in pool.items() if text and text.strip()]
        stop_set = choose_stop_set(candidates, size=stop.stop_set_size, seed=project_id)
        store.set_team_value(project_id, STOP_SET, stop_set)
    texts = pool | {t.task_id: t.text for t in store.annotated_tasks(project_id)}
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
    """Rewrite the team views whose task lists changed since they were last written."""
    store, project = ctx.store, ctx.project
    if project.labels.policy != LATEST:
        withheld = withheld_tasks(store.annotated_tasks(project.id), project.labels.policy)
        await _write_task_view(ctx, CONFLICTS_VIEW_TITLE, sorted(withheld), logger=logger)
    if store.team_value(project.id, SUSPECTS) is not None:
        await _write_task_view(ctx, SUSPECTS_VIEW_TITLE, store.suspects(project.id), logger=logger)


async def _write_task_view(
    ctx: CycleContext, title: str, task_ids: list[int], *, logger: Logger
) -> None:
    store, project_id = ctx.store, ctx.project.id
    id_key, written_key = f"view:{title}", f"view_tasks:{title}"
    view_id = store.team_value(project_id, id_key)
    if view_id is not None and store.team_value(project_id, written_key) == task_ids:
        return
    data = task_list_view_data(title=title, task_ids=task_ids)
    if view_id is None:
        existing = [v for v in await ctx.gateway.list_views(project_id) if v.title == title]
        view_id = existing[0].id if existing else None
    confirm_owner(ctx)
    if view_id is not None:
        try:
            await ctx.gateway.replace_view(view_id, project_id=project_id, data=data)
        except LabelStudioRefused as exc:
            if exc.status_code != 404:
                raise
            logger.warning("view.recreated", title=title, reason="view was deleted")
            view_id = None
    if view_id is None:
        view_id = (await ctx.gateway.create_view(project_id, data=data)).id
    store.set_team_value(project_id, id_key, view_id)
    store.set_team_value(project_id, written_key, task_ids)
