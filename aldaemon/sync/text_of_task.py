"""The text a model reads for one control: what the annotator reads, nothing else.

A model trained on raw HTML learns `<div>` and `class="..."`; one trained on the JSON of a
dialogue learns the keys. So each object tag is read the way Label Studio shows it:

    <Text>        the field as it is
    <HyperText>   tags stripped, <script>/<style> dropped, entities decoded, whitespace
                  collapsed (block tags such as <p> and <br> separate words)
    <Paragraphs>  one "speaker: line" per paragraph, joined by newlines

A field that is a link (`valueType="url"`, or a cloud-storage or Label Studio upload
path) is not text: `TextIsLink` carries the link so the caller can fetch it and pass the
fetched body to `read_text`, or refuse the task clearly. A plain http(s) URL in a `<Text>`
without `valueType="url"` is shown to the annotator as the URL itself, so it is read as is.

Pure: the stdlib's html.parser only, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from html.parser import HTMLParser

from aldaemon.sync.config_shapes import TextReading, TextSource

# Where Label Studio keeps files: a task field like this names a file, it is not the text.
_STORAGE_LINK = re.compile(
    r"^(s3|gs|azure-blob|azure-spi)://\S+$|^/data/(upload|local-files)/\S*$", re.IGNORECASE
)
_WHITESPACE = re.compile(r"\s+")
_DROPPED_TAGS = frozenset({"script", "style", "noscript", "template", "head"})
# Tags the browser renders as a break between words: "<p>a</p><p>b</p>" reads "a b".
_BLOCK_TAGS = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt",
        "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5",
        "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table",
        "tbody", "td", "tfoot", "th", "thead", "tr", "ul",
    }
)  # fmt: skip


class TaskTextError(ValueError):
    """A task's data has no text for the control (missing field, wrong type)."""


class TextIsLink(TaskTextError):
    """The field holds a link to the text, not the text; `url` is that link."""

    def __init__(self, message: str, url: str) -> None:
        self.url = url
        super().__init__(message)


def text_of_task(data: Mapping[str, object], source: TextSource) -> str:
    """The text an annotator reads for `source` in a task's `data`.

    Raises TextIsLink when the field is a link (see the module docstring), and
    TaskTextError when the field is missing or not the type its object tag reads.
    """
    if source.field not in data:
        raise TaskTextError(f"task data has no field {source.field!r}")
    value = data[source.field]
    if isinstance(value, str) and (
        source.value_type == "url" or _STORAGE_LINK.match(value.strip())
    ):
        raise TextIsLink(
            f"task field {source.field!r} is a link to the text ({value!r}), not the text",
            url=value,
        )
    return read_text(value, source)


def read_text(value: object, source: TextSource) -> str:
    """Apply `source`'s reading to a field value (or to the body fetched from its link)."""
    if source.reading is TextReading.PARAGRAPHS:
        return _paragraphs_text(value, source)
    if not isinstance(value, str):
        raise TaskTextError(
            f"task field {source.field!r} must be a string for <{source.reading}>, "
            f"got {type(value).__name__}"
        )
    if source.reading is TextReading.HYPERTEXT:
        return html_to_text(value)
    return value


def html_to_text(html: str) -> str:
    """The visible text of an HTML fragment, whitespace collapsed to single spaces."""
    parser = _VisibleText()
    parser.feed(html)
    parser.close()
    return _WHITESPACE.sub(" ", "".join(parser.parts)).strip()


def _paragraphs_text(value: object, source: TextSource) -> str:
    if not isinstance(value, list):
        raise TaskTextError(
            f"task field {source.field!r} must be a list of paragraphs for <Paragraphs>, "
            f"got {type(value).__name__}"
        )
    lines: list[str] = []
    for index, paragraph in enumerate(value):
        if not isinstance(paragraph, Mapping):
            raise TaskTextError(
                f"paragraph {index} of task field {source.field!r} is not an object"
            )
        text = paragraph.get(source.text_key)
        if text is None:
            raise TaskTextError(
                f"paragraph {index} of task field {source.field!r} has no {source.text_key!r} key"
            )
        speaker = paragraph.get(source.name_key)
        lines.append(f"{speaker}: {text}" if speaker not in (None, "") else str(text))
    return "\n".join(lines)


class _VisibleText(HTMLParser):
    """Collects text outside dropped tags; convert_charrefs decodes `&amp;` and friends."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._dropped_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROPPED_TAGS:
            self._dropped_depth += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS:  # <br/>, <hr/>: a self-closed tag opens no dropped region
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROPPED_TAGS:
            self._dropped_depth = max(0, self._dropped_depth - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if self._dropped_depth == 0:
            self.parts.append(data)
