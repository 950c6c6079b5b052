"""Labeling config changes decided without Label Studio: what changed, does the model fit.

The same changes against the real server are in tests/labelstudio/test_project_failures.py.
"""

from __future__ import annotations

from aldaemon.records import LabelingSchema
from aldaemon.sync.versions import (
    SchemaChange,
    model_misfit,
    schema_change,
    schema_change_notices,
)

SCHEMA = LabelingSchema(
    text_field="text", from_name="sentiment", to_name="text", labels=("pos", "neg")
)
STORED = {
    "text_field": "text",
    "from_name": "sentiment",
    "to_name": "text",
    "labels": ["pos", "neg"],
}


class TestSchemaChange:
    def test_nothing_stored_yet_is_no_change(self) -> None:
        """The first config the daemon sees is its baseline, not a change."""
        assert schema_change(None, SCHEMA) is None

    def test_reordered_labels_are_no_change(self) -> None:
        """The same labels in another order change nothing the daemon must redo."""
        assert schema_change({**STORED, "labels": ["neg", "pos"]}, SCHEMA) is None

    def test_added_and_removed_labels_are_named(self) -> None:
        """A label swap reports the added and the removed label."""
        assert SchemaChange(added_labels=("neg",), removed_labels=("meh",)) == schema_change(
            {**STORED, "labels": ["pos", "meh"]}, SCHEMA
        )

    def test_renamed_text_field_is_reported_with_both_names(self) -> None:
        """A new `$field` reports the old and the new name."""
        change = schema_change({**STORED, "text_field": "body"}, SCHEMA)
        assert ("body", "text", True) == (
            change.text_field_before if change else None,
            change.text_field_after if change else None,
            change.text_field_changed if change else None,
        )

    def test_removed_label_notice_counts_its_annotations(self) -> None:
        """The notice for a removed label says how many annotations are left out."""
        [(what, action)] = schema_change_notices(
            SchemaChange(removed_labels=("meh",)), min_per_class=2, label_counts={"meh": 3}
        )
        assert ("label 'meh' removed", True) == (
            what,
            action.startswith("its 3 annotation(s) are left out of training"),
        )


class TestModelMisfit:
    def test_a_model_with_the_config_labels_fits(self) -> None:
        """Same label set, any order: no reason to retrain."""
        assert model_misfit(model_labels={"neg": 3, "pos": 4}, schema_labels=("pos", "neg")) is None

    def test_no_model_is_no_misfit(self) -> None:
        """Without a model the ordinary first-model rules apply."""
        assert model_misfit(model_labels=None, schema_labels=("pos", "neg")) is None

    def test_added_and_removed_labels_are_both_reasons(self) -> None:
        """A model missing a config label and knowing a removed one names both."""
        assert "label 'neutral' added, label 'meh' removed" == model_misfit(
            model_labels={"pos": 1, "meh": 1}, schema_labels=("pos", "neutral")
        )
