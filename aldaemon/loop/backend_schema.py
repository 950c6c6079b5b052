"""The labeling config as a project served by an ML backend is read by the loop.

The backend, not aldaemon, reads the data (images, audio, text): aldaemon only needs the
control whose annotations it counts to decide when to train (`min_new_annotations`,
`min_per_class`), and the task field it hands the backend in `/predict`. That is the
first `<Choices>` of the config, over any object whose value is a task field. Configs
without a `<Choices>` (spans, rectangles only) are refused for now, saying so.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree

from aldaemon.errors import UnsupportedLabelingConfig
from aldaemon.model.ml_backend import config_controls
from aldaemon.records import LabelingSchema

_FIELD = re.compile(r"^\$([A-Za-z0-9_\-]+)$")


def read_backend_schema(xml: str) -> LabelingSchema:
    """The first `<Choices>` over an object reading a task field, as a LabelingSchema."""
    try:
        controls = config_controls(xml)  # refuses a DTD or entities first
        root = ElementTree.fromstring(xml)
    except (ValueError, ElementTree.ParseError) as exc:
        raise UnsupportedLabelingConfig(f"labeling config cannot be read: {exc}") from None
    fields = {
        element.attrib["name"]: match.group(1)
        for element in root.iter()
        if "name" in element.attrib
        and (match := _FIELD.match(element.attrib.get("value", ""))) is not None
    }
    for control in controls.values():
        if control.tag != "Choices" or not control.labels:
            continue
        field = fields.get(control.to_names[0])
        if field is None:
            continue
        choices = next(e for e in root.iter("Choices") if e.attrib.get("name") == control.name)
        labels = tuple(
            child.attrib.get("alias") or child.attrib["value"]
            for child in choices.iter("Choice")
            if "value" in child.attrib
        )
        return LabelingSchema(
            text_field=field,
            from_name=control.name,
            to_name=control.to_names[0],
            labels=labels,
            multiple=choices.attrib.get("choice") == "multiple",
        )
    raise UnsupportedLabelingConfig(
        'with model = "ml-backend", aldaemon counts the annotations of the config\'s first '
        "<Choices> to decide when to ask the backend to train; this labeling config has no "
        "<Choices> over an object reading a task field ($field)"
    )
