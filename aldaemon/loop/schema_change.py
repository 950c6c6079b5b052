"""Acting on labeling-config changes, without a flag that could be lost in a crash.

Each change is logged once, with what the daemon does about it (the decisions are pure,
in `aldaemon.sync.versions`):

- a label added or removed: the last model's labels (its `class_counts`) no longer match
  the config's, so the next decision retrains as if there were no model; a new label
  keeps the cold start (and the old model active) until it has `min_per_class` labels.
  Annotations with a removed label are left out of training, an unfinished version
  that predicts a removed label is abandoned, and while no new model can train (a new
  label's cold start) the active version is republished without it (`removed_labels.py`),
  so no prediction Label Studio serves carries it.
- the text field renamed (`$text` -> `$review`): the poll only re-reads tasks whose
  `updated_at` moved, so that cycle re-reads every task's text, then retrains. The new
  config is stored only once a retraining is under way (or not possible yet): a crash
  before that repeats the re-read instead of forgetting it.
"""

from __future__ import annotations

from typing import Any

import structlog

from aldaemon.labelstudio.served_config import read_served_schema
from aldaemon.loop.backend_schema import read_backend_schema
from aldaemon.loop.context import CycleContext
from aldaemon.records import LabelingSchema, ProjectInfo
from aldaemon.store import VersionRow
from aldaemon.sync.versions import (
    SchemaChange,
    label_counts,
    outdated_version_reason,
    schema_change,
    schema_change_notices,
    schema_to_json,
)


class LabelingConfigWatch:
    """One cycle's view of the labeling config: read it, announce changes, store it late."""

    def __init__(self, ctx: CycleContext, *, logger: structlog.typing.FilteringBoundLogger) -> None:
        self.ctx = ctx
        self.project_id = ctx.project.id
        self.log = logger
        self._schema_to_store: dict[str, Any] | None = None  # see `remember`
        self.project: ProjectInfo | None = None  # as `read` found it

    async def read(self) -> tuple[LabelingSchema, SchemaChange | None]:
        """Read the labeling config, and log once what changed in it and what happens now."""
        store = self.ctx.store
        info = await self.ctx.gateway.get_project(self.project_id)
        self.project = info
        if self.ctx.project.uses_ml_backend:
            schema = read_backend_schema(info.label_config)
        else:
            schema = read_served_schema(info.label_config, controls=self.ctx.project.controls)
        previous = store.get_meta(self.project_id).schema
        change = schema_change(previous, schema)
        if change is not None:
            notices = schema_change_notices(
                change,
                min_per_class=self.ctx.project.retrain.min_per_class,
                label_counts=label_counts(
                    store.annotated_tasks(self.project_id), self.ctx.project.labels.policy
                ),
            )
            for what, action in notices:
                self.log.warning("project.labeling_config_changed", change=what, action=action)
        stored = schema_to_json(schema, previous=previous, change=change)
        if previous is None:
            store.set_meta(self.project_id, schema=stored)
        elif stored != previous:
            self._schema_to_store = stored
        return schema, change

    def remember(self) -> None:
        """Store the new labeling config once what it asks for is done or under way.

        Until then the next cycle sees the change again, re-logs it and redoes the full
        re-read, rather than forgetting that the texts or the model are stale.
        """
        if self._schema_to_store is not None:
            self.ctx.store.set_meta(self.project_id, schema=self._schema_to_store)
            self._schema_to_store = None

    def abandon_if_outdated(
        self, version: VersionRow, schema: LabelingSchema, *, text_field_changed: bool
    ) -> VersionRow | None:
        """Give up an unfinished version the labeling config change made wrong.

        A fresh training follows in the same cycle; prune removes what of it reached
        Label Studio.
        """
        reason = outdated_version_reason(
            version, schema_labels=schema.labels, text_field_changed=text_field_changed
        )
        if reason is None:
            return version
        self.ctx.store.mark_failed(self.project_id, version.name, error=reason)
        self.log.info("version.abandoned", version=version.name, state=version.state, reason=reason)
        return None
