"""The labeling config as the loop reads it: served, or refused with a clear word.

The whole config is classified by `sync.config_shapes.classify_config`; the loop trains
its first `<Choices>` over text (`<Text>`, `<HyperText>` with its tags stripped,
`<Paragraphs>` as "speaker: line" lines, see sync/text_of_task.py). A config with
nothing a text classifier can learn (images, audio, video, rectangles, `<Taxonomy>`,
`<Rating>`, `<TextArea>`, per-region choices, `<Labels>` over `<HyperText>`, ...) is
refused with one sentence per control, naming the control, its tag, the object it
points at and what is served instead (the ML backend route for media). The refusal is
an `UnsupportedLabelingConfig`, a permanent error: `once` exits non-zero, `status`
shows it, `run` logs `project.failed` once and goes on with the other projects.

Named entities: a config whose only learnable controls are `<Labels>` over a `<Text>` is
served through its first `<Labels>` (a CRF, model/spans.py). A config with both a
`<Choices>` and a `<Labels>` trains its first `<Choices>`, as before.
"""

from __future__ import annotations

from aldaemon.errors import UnsupportedLabelingConfig
from aldaemon.records import LabelingSchema
from aldaemon.sync.config_shapes import (
    MultiChoice,
    SingleChoice,
    Spans,
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
    spans = [c for c in shape.served if isinstance(c, Spans)]
    if not choices and not spans:
        raise UnsupportedLabelingConfig(
            "labeling config has nothing aldaemon serves: "
            + "; ".join(r.message for r in shape.refused)
        )
    # the first <Choices> over text, in document order; else the first <Labels>
    control = choices[0] if choices else spans[0]
    if control.source.value_type == "url":
        raise UnsupportedLabelingConfig(
            f'<{control.source.reading} name={control.to_name!r}> has valueType="url": '
            f"its task field {control.source.field!r} holds a link to the text, and "
            "aldaemon does not fetch it (it would learn the links themselves); put the "
            "text itself in the task data"
        )
    return LabelingSchema(
        text_field=control.source.field,
        from_name=control.name,
        to_name=control.to_name,
        labels=control.labels,
        multiple=isinstance(control, MultiChoice),
        spans=isinstance(control, Spans),
        source=control.source,
    )
