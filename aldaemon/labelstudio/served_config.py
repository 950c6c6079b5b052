"""The labeling config as the loop reads it: served, or refused with a clear word.

`parse_labeling_config` finds the `<Choices>` the loop trains; before it runs, the
whole config is classified by `sync.config_shapes.classify_config`, so a config with
nothing a text classifier can learn (images, audio, video, rectangles, `<Taxonomy>`,
`<Rating>`, `<TextArea>`, per-region choices, `<Labels>` over `<HyperText>`, ...) is
refused with one sentence per control, naming the control, its tag, the object it
points at and what is served instead (the ML backend route for media). The refusal is
an `UnsupportedLabelingConfig`, a permanent error: `once` exits non-zero, `status`
shows it, `run` logs `project.failed` once and goes on with the other projects.

Shapes whose building blocks exist but that the loop does not serve yet (named
entities, several `<Choices>` at once) are said so, not silently ignored.
"""

from __future__ import annotations

import dataclasses

from aldaemon.errors import UnsupportedLabelingConfig
from aldaemon.labelstudio.labeling_config import parse_labeling_config
from aldaemon.records import LabelingSchema
from aldaemon.sync.config_shapes import (
    MultiChoice,
    SingleChoice,
    Spans,
    TextReading,
    UnservableConfig,
    classify_config,
)


def read_served_schema(xml: str) -> LabelingSchema:
    """The schema the loop trains, or UnsupportedLabelingConfig saying why there is none."""
    try:
        shape = classify_config(xml)
    except UnservableConfig as exc:
        raise UnsupportedLabelingConfig(str(exc)) from None
    choices = [c for c in shape.served if isinstance(c, SingleChoice | MultiChoice)]
    if not choices:
        spans = [c for c in shape.served if isinstance(c, Spans)]
        named = "; ".join(
            f"<Labels name={c.name!r}> over <Text name={c.to_name!r}>: named entities are "
            "not served yet (a <Choices> over the same text is)"
            for c in spans
        )
        raise UnsupportedLabelingConfig(
            "labeling config has nothing aldaemon serves yet: "
            + "; ".join([named, *(r.message for r in shape.refused)]).strip("; ")
        )
    if all(c.source.reading is TextReading.PARAGRAPHS for c in choices):
        raise UnsupportedLabelingConfig(
            f"<Choices name={choices[0].name!r}> over <Paragraphs name={choices[0].to_name!r}>:"
            " dialogues are not served yet; a <Text> holding the same text is"
        )
    schema = parse_labeling_config(xml)
    control = next((c for c in choices if c.name == schema.from_name), None)
    if control is None:  # parse_labeling_config chose a control classify_config refused
        refusal = next(r.message for r in shape.refused if r.control == schema.from_name)
        raise UnsupportedLabelingConfig(refusal)
    if control.source.value_type == "url":
        raise UnsupportedLabelingConfig(
            f'<{control.source.reading} name={control.to_name!r}> has valueType="url": '
            f"its task field {control.source.field!r} holds a link to the text, and "
            "aldaemon does not fetch it (it would learn the links themselves); put the "
            "text itself in the task data"
        )
    return dataclasses.replace(schema, multiple=isinstance(control, MultiChoice))
