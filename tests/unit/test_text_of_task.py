"""The text a model reads for a control: the text the annotator reads."""

from __future__ import annotations

import pytest

from aldaemon.sync.config_shapes import TextReading, TextSource
from aldaemon.sync.text_of_task import (
    TaskTextError,
    TextIsLink,
    html_to_text,
    read_text,
    text_of_task,
)

TEXT = TextSource(object_name="text", reading=TextReading.TEXT, field="text")
HYPERTEXT = TextSource(object_name="page", reading=TextReading.HYPERTEXT, field="html")
DIALOGUE = TextSource(object_name="chat", reading=TextReading.PARAGRAPHS, field="dialogue")


class TestPlainText:
    def test_text_is_read_as_is(self) -> None:
        """A <Text> field is the text, untouched."""
        assert "  Hello  world " == text_of_task({"text": "  Hello  world "}, TEXT)

    def test_missing_field_is_an_error(self) -> None:
        """A task without the field raises TaskTextError naming it."""
        with pytest.raises(TaskTextError, match="'text'"):
            text_of_task({"other": "x"}, TEXT)

    def test_non_string_is_an_error(self) -> None:
        """A number where text is expected raises TaskTextError."""
        with pytest.raises(TaskTextError, match="must be a string"):
            text_of_task({"text": 3}, TEXT)

    def test_url_value_type_raises_with_the_link(self) -> None:
        """valueType="url" means the field is a link: TextIsLink carries it."""
        source = TextSource(
            object_name="text", reading=TextReading.TEXT, field="text", value_type="url"
        )
        with pytest.raises(TextIsLink) as raised:
            text_of_task({"text": "https://example.org/a.txt"}, source)
        assert "https://example.org/a.txt" == raised.value.url

    @pytest.mark.parametrize("link", ["s3://bucket/a.txt", "gs://b/a.txt", "/data/upload/1/a.txt"])
    def test_storage_paths_are_links(self, link: str) -> None:
        """A cloud-storage or upload path is a file to fetch, not text."""
        with pytest.raises(TextIsLink):
            text_of_task({"text": link}, TEXT)

    def test_plain_http_url_without_url_value_type_is_text(self) -> None:
        """Without valueType="url" the annotator sees the URL itself, so the model does too."""
        assert "https://example.org" == text_of_task({"text": "https://example.org"}, TEXT)


class TestHyperText:
    def test_tags_are_stripped_and_whitespace_collapsed(self) -> None:
        """Markup goes, entities decode, words are separated by single spaces (&nbsp; too)."""
        html = "<div><p>Great   <b>product</b>,</p>\n<p>would buy&nbsp;again &amp; again</p></div>"
        assert "Great product, would buy again & again" == html_to_text(html)

    def test_script_and_style_are_dropped(self) -> None:
        """Code and CSS are not text the annotator reads."""
        html = "<style>p{color:red}</style><p>hi</p><script>var x = '<b>';</script>there"
        assert "hi there" == html_to_text(html)

    def test_block_tags_separate_words(self) -> None:
        """Two paragraphs or a <br/> never glue their words together."""
        assert "one two three" == html_to_text("<p>one</p><p>two</p>three<br/>")

    def test_hypertext_field_is_read_through_html(self) -> None:
        """A <HyperText> source gives its field's visible text."""
        assert "Title body" == text_of_task({"html": "<h1>Title</h1><p>body</p>"}, HYPERTEXT)


class TestParagraphs:
    def test_paragraphs_join_speaker_and_line(self) -> None:
        """Each paragraph is one "speaker: line" line."""
        dialogue = [
            {"author": "Alice", "text": "Hi, my order is late."},
            {"author": "Bot", "text": "Sorry to hear that."},
        ]
        expected = "Alice: Hi, my order is late.\nBot: Sorry to hear that."
        assert expected == text_of_task({"dialogue": dialogue}, DIALOGUE)

    def test_configured_keys_are_used(self) -> None:
        """nameKey and textKey choose which keys hold the speaker and the line."""
        source = TextSource(
            object_name="chat",
            reading=TextReading.PARAGRAPHS,
            field="d",
            name_key="who",
            text_key="said",
        )
        assert "Ann: yes" == text_of_task({"d": [{"who": "Ann", "said": "yes"}]}, source)

    def test_a_line_without_speaker_is_the_line(self) -> None:
        """A paragraph with no speaker contributes its text alone."""
        assert "hello" == read_text([{"text": "hello"}], DIALOGUE)

    def test_a_string_is_not_a_dialogue(self) -> None:
        """A <Paragraphs> field must be a list of objects."""
        with pytest.raises(TaskTextError, match="list of paragraphs"):
            read_text("hello", DIALOGUE)

    def test_a_paragraph_without_text_is_an_error(self) -> None:
        """A paragraph missing its text key is reported by index."""
        with pytest.raises(TaskTextError, match="paragraph 1"):
            read_text([{"text": "a"}, {"author": "b"}], DIALOGUE)
