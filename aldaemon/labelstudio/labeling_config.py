"""Read what the daemon needs from a project's labeling config: text field, control, labels.

The daemon only serves one shape: a `<Choices>` control classifying a `<Text>` (or
`<HyperText>`) object whose value is a task field (`value="$text"`). Anything else is
refused with an `UnsupportedLabelingConfig` that names what is missing, so an operator can
fix the project instead of reading a stack trace.

The XML comes from Label Studio, which got it from whoever edits the project: a DTD or an
entity is refused before parsing (expat would expand internal entities).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree

from aldaemon.errors import UnsupportedLabelingConfig
from aldaemon.records import LabelingSchema
from aldaemon.sync.config_shapes import UnservableConfig, parse_config_xml

TEXT_OBJECT_TAGS = frozenset({"Text", "HyperText"})
_FIELD_REFERENCE = re.compile(r"^\$([A-Za-z0-9_][A-Za-z0-9_\-]*)$")


def parse_labeling_config(xml: str) -> LabelingSchema:
    """Return the schema of the first `<Choices>` that classifies a `<Text>` field.

    When no `<Choices>` qualifies, the error lists why each one was rejected.
    """
    root = _parse_xml(xml)
    objects = {
        element.attrib["name"]: element
        for element in root.iter()
        if "name" in element.attrib and "value" in element.attrib and element.tag != "Choices"
    }
    controls = list(root.iter("Choices"))
    if not controls:
        raise UnsupportedLabelingConfig("labeling config has no <Choices> control")
    problems: list[str] = []
    for control in controls:
        schema_or_problem = _schema_for(control, objects)
        if isinstance(schema_or_problem, LabelingSchema):
            return schema_or_problem
        problems.append(schema_or_problem)
    raise UnsupportedLabelingConfig("; ".join(problems))


def _parse_xml(xml: str) -> ElementTree.Element:
    try:
        return parse_config_xml(xml)
    except UnservableConfig as error:
        raise UnsupportedLabelingConfig(str(error)) from None


def _schema_for(
    control: ElementTree.Element, objects: dict[str, ElementTree.Element]
) -> LabelingSchema | str:
    """A schema when `control` is usable, else a sentence saying why not."""
    name = control.attrib.get("name")
    if not name:
        return "<Choices> has no name attribute"
    to_name = control.attrib.get("toName")
    if not to_name:
        return f"<Choices name='{name}'> has no toName attribute"
    # toName may list several objects ("text,title"); the daemon classifies the first one.
    target_name = to_name.split(",")[0].strip()
    target = objects.get(target_name)
    if target is None:
        return f"<Choices name='{name}'> points to '{target_name}' which does not exist"
    if target.tag not in TEXT_OBJECT_TAGS:
        return (
            f"<Choices name='{name}'> points to '{target_name}' which is an <{target.tag}>, "
            "only <Text> is supported"
        )
    field = _FIELD_REFERENCE.match(target.attrib["value"])
    if field is None:
        return (
            f"<{target.tag} name='{target_name}'> value must be '$field', "
            f"not {target.attrib['value']!r}"
        )
    labels = _choice_labels(control)
    if not labels:
        return f"<Choices name='{name}'> has no <Choice value=...> children"
    return LabelingSchema(
        text_field=field.group(1),
        from_name=name,
        to_name=target_name,
        labels=labels,
        multiple=control.attrib.get("choice") == "multiple",
    )


def _choice_labels(control: ElementTree.Element) -> tuple[str, ...]:
    """Labels as they appear in results: a Choice's `alias` replaces its `value` there."""
    labels: list[str] = []
    for choice in control.iter("Choice"):
        label = choice.attrib.get("alias") or choice.attrib.get("value")
        if label and label not in labels:
            labels.append(label)
    return tuple(labels)
