"""Withdrawing a label the labeling config no longer has from the active version.

The active version's stored predictions are republished under a new version with that
label taken out, scores unchanged; the cycle then uploads and activates it like any
version (why this mechanism: `aldaemon.sync.removed_labels`). Finding out costs nothing
while the active model's labels all fit the config (its `class_counts`, no request).
"""

from __future__ import annotations

import structlog

from aldaemon.loop.context import CycleContext
from aldaemon.loop.train import next_version_number
from aldaemon.records import LabelingSchema
from aldaemon.store import VersionRow
from aldaemon.sync.removed_labels import without_labels
from aldaemon.sync.versions import VersionState, removed_model_labels, version_name


async def republish_without_removed_labels(
    ctx: CycleContext, schema: LabelingSchema, *, logger: structlog.typing.FilteringBoundLogger
) -> VersionRow | None:
    """A new 'scored' version of the active model without the labels the config lost, or
    None when its predictions carry none (or a pin leaves activation to a person)."""
    store = ctx.store
    project_id = ctx.project.id
    if store.get_meta(project_id).pinned_version:
        return None
    versions = store.list_versions(project_id)
    active = next((v for v in versions if v.state == VersionState.ACTIVE), None)
    if active is None:
        return None
    removed = removed_model_labels(active, schema.labels)
    if not removed:
        return None
    predictions, changed = without_labels(store.load_predictions(project_id, active.name), schema)
    if not changed:
        return None
    number = await next_version_number(ctx)
    name = version_name(ctx.project.predictions.version_prefix, number)
    version = store.create_republished_version(
        project_id,
        name=name,
        number=number,
        source=active,
        class_counts={
            label: n for label, n in (active.class_counts or {}).items() if label not in removed
        },
        predictions=predictions,
        now=ctx.clock(),
    )
    logger.warning(
        "version.republished",
        version=name,
        republished=active.name,
        without_labels=removed,
        predictions_changed=changed,
        action=f"{active.name}'s predictions carry label(s) the labeling config no longer "
        f"has; {name} holds them without those labels (same scores, so the queue keeps its "
        "order) and becomes active now; a new model trains once every label has "
        "min_per_class annotations",
    )
    return version
