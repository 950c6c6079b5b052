"""A label removed from the labeling config while the active version predicts it. Pure.

A label renamed (`neg` -> `negative`) or removed leaves the active version's predictions
carrying it, and the version stays active until a new model trains, which waits for the
cold start of any new label (`min_per_class`). Annotators must never see a label the
config no longer has, so the active version's stored predictions are republished at once
under a new version with that label taken out, and the new version is activated:

    active v1: pos 0.12, neg 0.08, pos 0.40 ...   config now pos / negative
    v2 (same model, same scores):  pos 0.12, (none) 0.08, pos 0.40 ...

Why this and not the alternatives:
- The scores are kept, so the queue keeps the order the model gave it. Renormalising the
  probabilities over the labels that remain would need the model's probabilities, which
  are not stored (re-scoring every shape with its model; impossible for an ML backend),
  and when one label is left, the usual rename of a two-label project, it gives every
  task the same score: no order at all. For a rename the old scores are the right ones
  anyway (the model's doubt between `pos` and `neg` is its doubt between `pos` and
  `negative`); a plain removal of a label with enough labels left retrains in the same
  cycle and never gets here.
- A prediction whose only label was removed keeps its score with an empty result (no
  pre-annotation, as a multi-label "none of these"), so its task stays in the queue.
- Deleting only the affected predictions costs one request per prediction (Label Studio
  has no bulk delete of chosen predictions of one version; its Data Manager action
  deletes every version's predictions on a task, other writers' too), takes those tasks
  out of uncertainty sampling, and breaks "the active version's predictions are
  complete". A republish is one bulk import, the same count check and activation as any
  version, and a crash resumes it like any upload.

The new version is not a training (`trained_at` stays empty): the retrain policy, the
report's quality plot and the stop signal go on counting from the model behind it. Its
`class_counts` are the model's minus the removed labels, so it never triggers this again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from aldaemon.records import LabelingSchema, PredictionRecord
from aldaemon.sync.span_answers import decode_spans, keep_config_spans


def without_labels(
    predictions: Sequence[PredictionRecord], schema: LabelingSchema
) -> tuple[list[PredictionRecord], int]:
    """The predictions with every label outside `schema` taken out, scores unchanged, and
    how many of them changed."""
    allowed = set(schema.labels)
    kept = [_without(prediction, allowed, schema) for prediction in predictions]
    changed = sum(1 for old, new in zip(predictions, kept, strict=True) if old != new)
    return kept, changed


def _without(
    prediction: PredictionRecord, allowed: set[str], schema: LabelingSchema
) -> PredictionRecord:
    if prediction.result is not None:  # an ML backend's own regions
        regions = tuple(
            region
            for region in (_region_without(r, allowed, schema.from_name) for r in prediction.result)
            if region is not None
        )
        if regions == prediction.result:
            return prediction
        return dataclasses.replace(prediction, result=regions)
    if prediction.labels is None:  # single choice: the label alone
        if prediction.label in allowed:
            return prediction
        return dataclasses.replace(prediction, label="", labels=())
    if schema.spans:
        codes = keep_config_spans(prediction.labels, allowed)
        first = decode_spans(codes[:1])[0].label if codes else ""
    else:  # several labels, or several controls' codes
        codes = tuple(label for label in prediction.labels if label in allowed)
        first = codes[0] if codes else ""
    if codes == prediction.labels:
        return prediction
    return dataclasses.replace(prediction, label=first, labels=codes)


def _region_without(
    region: dict[str, Any], allowed: set[str], from_name: str
) -> dict[str, Any] | None:
    """A backend region of the served control with removed labels taken out; None when
    none is left (regions of other controls are not the served config's to judge)."""
    if region.get("from_name") != from_name:
        return region
    value = region.get("value")
    if not isinstance(value, Mapping):
        return region
    for key in ("choices", "labels"):
        labels = value.get(key)
        if isinstance(labels, list) and any(label not in allowed for label in labels):
            left = [label for label in labels if label in allowed]
            if not left:
                return None
            return {**region, "value": {**value, key: left}}
    return region
