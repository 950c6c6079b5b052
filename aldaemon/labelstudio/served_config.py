"""The labeling config as the loop reads it: served, or refused with a clear word.

The whole config is classified by `sync.config_shapes.classify_config`; the loop trains
its `<Choices>` over text (`<Text>`, `<HyperText>` with its tags stripped,
`<Paragraphs>` as "speaker: line" lines, see sync/text_of_task.py). A config with
nothing a text classifier can learn (images, audio, video, rectangles, `<Taxonomy>`,
`<Rating>`, `<TextArea>`, per-region choices, `<Labels>` over `<HyperText>`, ...) is
refused with one sentence per control, naming the control, its tag, the object it
points at and what is served instead (the ML backend route for media). The refusal is
an `UnsupportedLabelingConfig`, a permanent error: `once` exits non-zero, `status`
shows it, `run` logs `project.failed` once and goes on with the other projects.

Named entities: a config whose only learnable controls are `<Labels>` over a `<Text>` is
served through its first `<Labels>` (a CRF, model/spans.py). A config with both a
`<Choices>` and a `<Labels>` trains its `<Choices>`. Several `<Choices>` over one text
are learned together, one model each (sync/control_answers.py); the project's `controls`
key names the controls to learn (default: every `<Choices>` over the text object the
first `<Choices>` labels).
"""

from __future__ import annotations

from collections.abc import Sequence

from aldaemon.errors import UnsupportedLabelingConfig
from aldaemon.records import LabelingSchema
from aldaemon.sync.config_shapes import (
    MultiChoice,
    ServedControl,
    SingleChoice,
    Spans,
    UnknownControl,
    UnservableConfig,
    classify_config,
    select_controls,
)
from aldaemon.sync.control_answers import control_codes


def read_served_schema(xml: str, *, controls: Sequence[str] | None = None) -> LabelingSchema:
    """The schema the loop trains, or UnsupportedLabelingConfig saying why there is none.

    `controls` is the project's `controls` config key: the names of the controls to
    learn (None: every `<Choices>` over the text object the first `<Choices>` labels,
    else the first `<Labels>` over a `<Text>`).
    """
    try:
        shape = classify_config(xml)
        chosen = select_controls(shape, controls) if controls is not None else None
    except UnservableConfig as exc:
        raise UnsupportedLabelingConfig(str(exc)) from None
    except UnknownControl as exc:
        raise UnsupportedLabelingConfig(f"[[projects]] controls: {exc}") from None
    if chosen is None:
        choices = [c for c in shape.served if isinstance(c, SingleChoice | MultiChoice)]
        spans = [c for c in shape.served if isinstance(c, Spans)]
        if not choices and not spans:
            raise UnsupportedLabelingConfig(
                "labeling config has nothing aldaemon serves: "
                + "; ".join(r.message for r in shape.refused)
            )
        # by default every <Choices> over the object the first one labels
        same_object = [c for c in choices if c.to_name == choices[0].to_name]
        chosen = tuple(same_object) if choices else (spans[0],)
    for control in chosen:
        _refuse_url(control)
    if len(chosen) > 1:
        return _several_controls(chosen)
    control = chosen[0]
    return LabelingSchema(
        text_field=control.source.field,
        from_name=control.name,
        to_name=control.to_name,
        labels=control.labels,
        multiple=isinstance(control, MultiChoice),
        spans=isinstance(control, Spans),
        source=control.source,
    )


def _several_controls(chosen: Sequence[ServedControl]) -> LabelingSchema:
    """Several <Choices> over one text object: one model each, codes for labels."""
    spans = [c.name for c in chosen if isinstance(c, Spans)]
    if spans:
        raise UnsupportedLabelingConfig(
            f"[[projects]] controls: <Labels> {', '.join(map(repr, spans))} cannot be learned "
            "together with other controls yet; name it alone, or only <Choices> controls"
        )
    objects = sorted({c.to_name for c in chosen})
    if len(objects) > 1:
        raise UnsupportedLabelingConfig(
            f"controls {', '.join(repr(c.name) for c in chosen)} label different objects "
            f"({', '.join(map(repr, objects))}); aldaemon learns several controls over one "
            "text object only: name the controls of one object in [[projects]] controls"
        )
    first = chosen[0]
    return LabelingSchema(
        text_field=first.source.field,
        from_name=first.name,
        to_name=first.to_name,
        labels=control_codes(chosen),
        source=first.source,
        controls=tuple(chosen),
    )


def _refuse_url(control: ServedControl) -> None:
    if control.source.value_type == "url":
        raise UnsupportedLabelingConfig(
            f'<{control.source.reading} name={control.to_name!r}> has valueType="url": '
            f"its task field {control.source.field!r} holds a link to the text, and "
            "aldaemon does not fetch it (it would learn the links themselves); put the "
            "text itself in the task data"
        )
