"""What a classifier can learn from a labeling config, and a clear word for the rest.

A Label Studio config is a tree of objects (what the annotator sees: `<Text>`,
`<Image>`, ...) and controls (what the annotator does: `<Choices>`, `<Labels>`, ...)
pointing at an object by `toName`. aldaemon learns from text, so it serves three
shapes of control, each over a text object whose value is a task field:

    <Choices>                     SingleChoice  one classifier, one label per task
    <Choices choice="multiple">   MultiChoice   one binary model per label
    <Labels>  over <Text>         Spans         a sequence model (named entities)

Every other control is listed as a `Refusal`: one sentence naming the control, its
tag, the object it points at and what aldaemon can serve instead. The whole config is
refused (`UnservableConfig`) only when nothing at all is left to serve, so a project
with sentiment + a bounding box still learns its sentiment and says why the box is not.

Why classify everything up front instead of failing on the first surprise: the same
config is re-read while the daemon runs, and an operator needs the full list of what
is and is not learned in one place (`status`, the log), not one problem per restart.

The XML comes from whoever edits the project: a DTD or an entity is refused before
parsing (expat would expand internal entities), as in labelstudio/labeling_config.py.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

_FIELD_REFERENCE = re.compile(r"^\$([A-Za-z0-9_][A-Za-z0-9_\-]*)$")
_DTD_OR_ENTITY = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)

ML_BACKEND_ROUTE = 'the ML backend route (model = "ml-backend") for images, audio and video'
MEDIA_OBJECT_TAGS = frozenset(
    {"Image", "Audio", "AudioPlus", "Video", "TimeSeries", "Pdf", "MultiImage"}
)
# Tags that carry a toName but only steer the interface: nothing to learn, nothing to refuse.
_INTERFACE_ONLY_TAGS = frozenset({"Filter", "Relations", "Relation", "Shortcut", "Style"})

# Why a control tag is not learned, and what is served instead, when it points at text.
_REFUSED_CONTROLS: dict[str, str] = {
    "Taxonomy": (
        'hierarchical labels are not learned; a flat <Choices choice="multiple"> '
        "over the same text is served"
    ),
    "Rating": "a rating is not learned; a <Choices> with one <Choice> per grade is served",
    "TextArea": "free text answers are not learned; a <Choices> over the same text is served",
    "Number": "numeric answers are not learned; a <Choices> over the same text is served",
    "DateTime": "date answers are not learned; a <Choices> over the same text is served",
    "Ranker": "rankings are not learned; a <Choices> over each text is served",
    "Pairwise": "pairwise comparisons are not learned; a <Choices> over each text is served",
    "HyperTextLabels": (
        "spans over HTML are not learned; <Labels> over a <Text> (named entities) is served"
    ),
    "ParagraphLabels": (
        "spans over dialogue lines are not learned; <Labels> over a <Text> "
        "(named entities) is served"
    ),
}


class TextReading(StrEnum):
    """How the text an annotator reads is made from the task field."""

    TEXT = "Text"  # the field as it is
    HYPERTEXT = "HyperText"  # HTML with its tags stripped
    PARAGRAPHS = "Paragraphs"  # a list of {speaker, text} joined as "speaker: text" lines


@dataclass(frozen=True)
class TextSource:
    """Where a control's text lives in a task and how to read it.

    `value_type` is "url" when the task field holds a link to the text (`valueType="url"`):
    the daemon must fetch it first, or refuse the task clearly; the link itself is never
    text to learn from. `name_key`/`text_key` are the `<Paragraphs>` keys for the speaker
    and the line (Label Studio's defaults: "author" and "text").
    """

    object_name: str
    reading: TextReading
    field: str
    value_type: str = "text"
    name_key: str = "author"
    text_key: str = "text"


@dataclass(frozen=True)
class ServedControl:
    """A control aldaemon learns: its name, the object it labels and its labels.

    `labels` are as results spell them: a `<Choice>`'s or `<Label>`'s `alias`
    replaces its `value` there.
    """

    name: str
    to_name: str
    source: TextSource
    labels: tuple[str, ...]


@dataclass(frozen=True)
class SingleChoice(ServedControl):
    """`<Choices>` (single or single-radio): one label per task, one multiclass model."""


@dataclass(frozen=True)
class MultiChoice(ServedControl):
    """`<Choices choice="multiple">`: any subset of labels, one binary model per label.

    A single-choice `<Choices>` with one lone `<Choice>` is served this way too: "ticked or
    not" is one binary label, and an annotation without it is its negative.
    """


@dataclass(frozen=True)
class Spans(ServedControl):
    """`<Labels>` over a `<Text>`: named entities, spans with character offsets."""


@dataclass(frozen=True)
class Refusal:
    """A control aldaemon does not learn; `message` names it and what is served instead."""

    control: str
    tag: str
    object_name: str | None
    object_tag: str | None
    message: str


_Refuse = Callable[[str], Refusal]  # builds the Refusal of the control being classified


@dataclass(frozen=True)
class ConfigShape:
    """Everything a config holds for a classifier: what is served and what is refused."""

    served: tuple[ServedControl, ...]
    refused: tuple[Refusal, ...]


class UnservableConfig(ValueError):
    """Nothing in the config can be served (or it is not XML we read); `refusals` says why."""

    def __init__(self, message: str, refusals: Sequence[Refusal] = ()) -> None:
        self.refusals = tuple(refusals)
        super().__init__(message)


class UnknownControl(ValueError):
    """A configured control name is not one the labeling config serves."""


def classify_config(xml: str) -> ConfigShape:
    """Split the config's controls into served ones and refusals, in document order.

    Raises UnservableConfig when the XML has a DTD or entity, is not well-formed, or
    when no control at all can be served (the message then lists every refusal).
    """
    root = parse_config_xml(xml)
    objects = {
        element.attrib["name"]: element
        for element in root.iter()
        if "name" in element.attrib and "value" in element.attrib and "toName" not in element.attrib
    }
    served: list[ServedControl] = []
    refused: list[Refusal] = []
    for element in root.iter():
        if "toName" not in element.attrib or element.tag in _INTERFACE_ONLY_TAGS:
            continue
        outcome = _classify_control(element, objects)
        if isinstance(outcome, Refusal):
            refused.append(outcome)
        else:
            served.append(outcome)
    if not served:
        if not refused:
            raise UnservableConfig("labeling config has no control (no tag with a toName)")
        raise UnservableConfig(
            "labeling config has nothing a text classifier can serve: "
            + "; ".join(refusal.message for refusal in refused),
            refused,
        )
    return ConfigShape(served=tuple(served), refused=tuple(refused))


def select_controls(
    shape: ConfigShape, names: Sequence[str] | None = None
) -> tuple[ServedControl, ...]:
    """The controls to learn: all served ones when `names` is None, else those named.

    A name that is not served raises UnknownControl, quoting the refusal when the config
    has that control but aldaemon does not learn it, so the operator sees why at once.
    """
    if names is None:
        return shape.served
    if not names:
        raise UnknownControl("the list of controls to learn is empty; omit it to learn all")
    by_name = {control.name: control for control in shape.served}
    refusals = {refusal.control: refusal for refusal in shape.refused}
    served_names = ", ".join(repr(name) for name in by_name) or "none"
    problems: list[str] = []
    for name in names:
        if name in by_name:
            continue
        if name in refusals:
            problems.append(f"control {name!r} is not learned: {refusals[name].message}")
        else:
            problems.append(f"control {name!r} is not in the labeling config")
    if problems:
        raise UnknownControl("; ".join(problems) + f" (served controls: {served_names})")
    wanted = set(names)
    return tuple(control for control in shape.served if control.name in wanted)


def parse_config_xml(xml: str) -> ElementTree.Element:
    """The labeling config as an element tree; a DTD or an entity is refused before
    parsing (expat would expand internal entities), like XML that is not well-formed."""
    if _DTD_OR_ENTITY.search(xml):
        raise UnservableConfig("labeling config must not contain a DTD or entities")
    try:
        return ElementTree.fromstring(xml)
    except ElementTree.ParseError as error:
        raise UnservableConfig(f"labeling config is not well-formed XML: {error}") from None


def _classify_control(
    control: ElementTree.Element, objects: dict[str, ElementTree.Element]
) -> ServedControl | Refusal:
    tag = control.tag
    name = control.attrib.get("name", "")
    # toName may list several objects ("text,title"); the first is the one labelled.
    to_name = control.attrib["toName"].split(",")[0].strip()
    target = objects.get(to_name)

    def refuse(why: str) -> Refusal:
        pointing = (
            f" pointing at <{target.tag} name={to_name!r}>"
            if target is not None
            else f" pointing at {to_name!r}"
        )
        return Refusal(
            control=name,
            tag=tag,
            object_name=to_name,
            object_tag=target.tag if target is not None else None,
            message=f"<{tag} name={name!r}>{pointing}: {why}",
        )

    if not name:
        return refuse("the control has no name attribute")
    if target is None:
        return refuse("no object of that name exists in the config")
    if target.tag in MEDIA_OBJECT_TAGS:
        return refuse(f"aldaemon learns from text only; use {ML_BACKEND_ROUTE}")
    if tag in _REFUSED_CONTROLS:
        return refuse(_REFUSED_CONTROLS[tag])
    if tag not in ("Choices", "Labels"):
        return refuse(
            "aldaemon does not learn this control; it serves <Choices> over text and "
            "<Labels> over a <Text>"
        )
    reading = _text_reading(target.tag)
    if reading is None:
        return refuse(
            "aldaemon reads only <Text>, <HyperText> and <Paragraphs>; "
            f"for other data use {ML_BACKEND_ROUTE}"
        )
    if "value" in control.attrib:
        return refuse(
            'labels read from task data (value="$...") change per task and are not '
            "learned; list them as children in the config"
        )
    field = _FIELD_REFERENCE.match(target.attrib["value"])
    if field is None:
        return refuse(
            f"the object's value must be a task field like '$text', not {target.attrib['value']!r}"
        )
    source = TextSource(
        object_name=to_name,
        reading=reading,
        field=field.group(1),
        value_type="url" if target.attrib.get("valueType") == "url" else "text",
        name_key=target.attrib.get("nameKey", "author"),
        text_key=target.attrib.get("textKey", "text"),
    )
    return _served(control, tag=tag, name=name, to_name=to_name, source=source, refuse=refuse)


def _text_reading(object_tag: str) -> TextReading | None:
    try:
        return TextReading(object_tag)
    except ValueError:
        return None


def _served(
    control: ElementTree.Element,
    *,
    tag: str,
    name: str,
    to_name: str,
    source: TextSource,
    refuse: _Refuse,
) -> ServedControl | Refusal:
    """A `<Choices>` or `<Labels>` over text we read: served, unless its shape is not learned."""
    spans = tag == "Labels"
    if spans and source.reading is not TextReading.TEXT:
        # HyperText spans are XPath ranges, Paragraphs spans are per line: other shapes.
        return refuse(
            "spans are learned over a <Text> only; <Labels> over a <Text> holding the "
            "same text is served"
        )
    if not spans and control.attrib.get("perRegion", "").lower() == "true":
        return refuse(
            "choices attached to regions (perRegion) are not learned; "
            "a per-task <Choices> over the same text is served"
        )
    child_tag = "Label" if spans else "Choice"
    labels = _child_labels(control, child_tag)
    if not labels:
        return refuse(f"the control has no <{child_tag} value=...> children")
    kind: type[ServedControl] = Spans if spans else SingleChoice
    if not spans and (control.attrib.get("choice") == "multiple" or len(labels) == 1):
        kind = MultiChoice
    return kind(name=name, to_name=to_name, source=source, labels=labels)


def _child_labels(control: ElementTree.Element, child_tag: str) -> tuple[str, ...]:
    """Labels as results spell them: `alias` replaces `value` there."""
    labels: list[str] = []
    for child in control.iter(child_tag):
        label = child.attrib.get("alias") or child.attrib.get("value")
        if label and label not in labels:
            labels.append(label)
    return tuple(labels)
