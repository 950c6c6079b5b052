"""Which controls of a labeling config a classifier serves, and the refusals for the rest."""

from __future__ import annotations

import pytest

from aldaemon.sync.config_shapes import (
    ConfigShape,
    MultiChoice,
    SingleChoice,
    Spans,
    TextReading,
    TextSource,
    UnknownControl,
    UnservableConfig,
    classify_config,
    select_controls,
)

TEXT_SOURCE = TextSource(object_name="text", reading=TextReading.TEXT, field="text")


def view(*body: str) -> str:
    return "<View>" + "".join(body) + "</View>"


TEXT = '<Text name="text" value="$text"/>'
SENTIMENT = (
    '<Choices name="sentiment" toName="text"><Choice value="pos"/><Choice value="neg"/></Choices>'
)
TOPIC = (
    '<Choices name="topic" toName="text" choice="multiple">'
    '<Choice value="sport"/><Choice value="politics"/></Choices>'
)
NER = '<Labels name="ner" toName="text"><Label value="PER"/><Label value="LOC"/></Labels>'
IMAGE = '<Image name="img" value="$image"/>'
BOX = '<RectangleLabels name="box" toName="img"><Label value="car"/></RectangleLabels>'


class TestServedShapes:
    def test_choices_without_choice_attribute_is_single(self) -> None:
        """A plain <Choices> over a <Text> is one single-choice control with its labels."""
        expected = ConfigShape(
            served=(
                SingleChoice(
                    name="sentiment", to_name="text", source=TEXT_SOURCE, labels=("pos", "neg")
                ),
            ),
            refused=(),
        )
        assert expected == classify_config(view(TEXT, SENTIMENT))

    def test_single_radio_is_single(self) -> None:
        """choice="single-radio" is a single-choice control."""
        config = view(
            TEXT, SENTIMENT.replace('toName="text"', 'toName="text" choice="single-radio"')
        )
        assert SingleChoice is type(classify_config(config).served[0])

    def test_multiple_choice_is_multi(self) -> None:
        """choice="multiple" is a multi-label control."""
        expected = MultiChoice(
            name="topic", to_name="text", source=TEXT_SOURCE, labels=("sport", "politics")
        )
        assert (expected,) == classify_config(view(TEXT, TOPIC)).served

    def test_a_lone_choice_is_a_binary_multi_label(self) -> None:
        """A single-choice <Choices> with one <Choice> is served as one binary label."""
        config = view(TEXT, '<Choices name="flag" toName="text"><Choice value="spam"/></Choices>')
        assert MultiChoice is type(classify_config(config).served[0])

    def test_labels_over_text_are_spans(self) -> None:
        """<Labels> over a <Text> is a span (NER) control."""
        expected = Spans(name="ner", to_name="text", source=TEXT_SOURCE, labels=("PER", "LOC"))
        assert (expected,) == classify_config(view(TEXT, NER)).served

    def test_several_controls_are_all_served_in_document_order(self) -> None:
        """Sentiment, topic and entities on one text are three served controls."""
        shape = classify_config(view(TEXT, SENTIMENT, TOPIC, NER))
        assert ["sentiment", "topic", "ner"] == [control.name for control in shape.served]

    def test_alias_replaces_value(self) -> None:
        """A <Choice>'s alias is the label results carry, so it is the label served."""
        config = view(
            TEXT,
            '<Choices name="c" toName="text"><Choice value="Positive" alias="pos"/>'
            '<Choice value="Negative"/></Choices>',
        )
        assert ("pos", "Negative") == classify_config(config).served[0].labels

    def test_hypertext_is_read_with_tags_stripped(self) -> None:
        """A <Choices> over a <HyperText> reads its field as HTML."""
        config = view('<HyperText name="page" value="$html"/>', SENTIMENT.replace("text", "page"))
        expected = TextSource(object_name="page", reading=TextReading.HYPERTEXT, field="html")
        assert expected == classify_config(config).served[0].source

    def test_paragraphs_record_their_keys(self) -> None:
        """A <Paragraphs> source keeps its nameKey and textKey attributes."""
        config = view(
            '<Paragraphs name="chat" value="$dialogue" nameKey="speaker" textKey="line"/>',
            SENTIMENT.replace('toName="text"', 'toName="chat"'),
        )
        expected = TextSource(
            object_name="chat",
            reading=TextReading.PARAGRAPHS,
            field="dialogue",
            name_key="speaker",
            text_key="line",
        )
        assert expected == classify_config(config).served[0].source

    def test_paragraphs_keys_default_to_label_studio_defaults(self) -> None:
        """Without nameKey/textKey, a <Paragraphs> reads "author" and "text"."""
        config = view(
            '<Paragraphs name="chat" value="$dialogue"/>',
            SENTIMENT.replace('toName="text"', 'toName="chat"'),
        )
        source = classify_config(config).served[0].source
        assert ("author", "text") == (source.name_key, source.text_key)

    def test_text_from_a_url_is_served_but_marked(self) -> None:
        """A <Text valueType="url"> is served with value_type "url": the task holds a link."""
        config = view('<Text name="text" value="$link" valueType="url"/>', SENTIMENT)
        assert "url" == classify_config(config).served[0].source.value_type


class TestRefusals:
    def test_media_control_is_refused_with_the_ml_backend_route(self) -> None:
        """A box on an image is refused by name, tag and object, pointing at the ML backend."""
        shape = classify_config(view(TEXT, SENTIMENT, IMAGE, BOX))
        expected = (
            "<RectangleLabels name='box'> pointing at <Image name='img'>: aldaemon learns "
            'from text only; use the ML backend route (model = "ml-backend") for images, '
            "audio and video"
        )
        assert expected == shape.refused[0].message

    def test_refusal_names_control_tag_and_object(self) -> None:
        """A refusal carries the control, its tag and the object it points at."""
        refusal = classify_config(view(TEXT, SENTIMENT, IMAGE, BOX)).refused[0]
        assert ("box", "RectangleLabels", "img", "Image") == (
            refusal.control,
            refusal.tag,
            refusal.object_name,
            refusal.object_tag,
        )

    @pytest.mark.parametrize(
        ("control", "expected_words"),
        [
            ('<Taxonomy name="x" toName="text"><Choice value="a"/></Taxonomy>', "hierarchical"),
            ('<Rating name="x" toName="text"/>', "rating"),
            ('<TextArea name="x" toName="text"/>', "free text"),
            ('<Number name="x" toName="text"/>', "numeric"),
            ('<DateTime name="x" toName="text"/>', "date"),
            ('<Ranker name="x" toName="text"/>', "rankings"),
            ('<Pairwise name="x" toName="text"/>', "pairwise"),
            (
                '<Choices name="x" toName="text" perRegion="true"><Choice value="a"/></Choices>',
                "perRegion",
            ),
            ('<Choices name="x" toName="text" value="$options"/>', "change per task"),
        ],
    )
    def test_unlearned_controls_over_text_are_refused(
        self, control: str, expected_words: str
    ) -> None:
        """Each control aldaemon does not learn is refused with its reason, the rest served."""
        shape = classify_config(view(TEXT, SENTIMENT, control))
        assert (["sentiment"], True) == (
            [served.name for served in shape.served],
            expected_words in shape.refused[0].message,
        )

    @pytest.mark.parametrize("tag", ["Audio", "AudioPlus", "Video", "TimeSeries", "Image"])
    def test_choices_over_media_are_refused(self, tag: str) -> None:
        """A <Choices> pointing at a media object is refused with the ML backend route."""
        config = view(
            TEXT,
            SENTIMENT,
            f'<{tag} name="media" value="$media"/>',
            '<Choices name="m" toName="media"><Choice value="a"/><Choice value="b"/></Choices>',
        )
        assert "ml-backend" in classify_config(config).refused[0].message

    def test_labels_over_hypertext_are_refused(self) -> None:
        """Spans are learned over a <Text> only (HyperText spans are XPath ranges)."""
        config = view(
            TEXT,
            SENTIMENT,
            '<HyperText name="page" value="$html"/>',
            NER.replace('toName="text"', 'toName="page"'),
        )
        assert "over a <Text> only" in classify_config(config).refused[0].message

    def test_choices_over_a_non_text_object_are_refused(self) -> None:
        """A <Choices> over a <Table> is refused: aldaemon reads only text objects."""
        config = view(
            TEXT,
            SENTIMENT,
            '<Table name="t" value="$row"/>',
            '<Choices name="m" toName="t"><Choice value="a"/><Choice value="b"/></Choices>',
        )
        assert "reads only <Text>" in classify_config(config).refused[0].message

    def test_control_pointing_nowhere_is_refused(self) -> None:
        """A toName that names no object is refused, not a crash."""
        config = view(
            TEXT, SENTIMENT, SENTIMENT.replace('"sentiment" toName="text"', '"s2" toName="nope"')
        )
        assert "no object of that name" in classify_config(config).refused[0].message

    def test_filter_is_neither_served_nor_refused(self) -> None:
        """Interface helpers with a toName (a <Filter>) are ignored."""
        shape = classify_config(view(TEXT, SENTIMENT, '<Filter name="f" toName="sentiment"/>'))
        assert () == shape.refused

    def test_nothing_to_serve_raises_with_every_reason(self) -> None:
        """A config with only refused controls raises UnservableConfig listing them."""
        with pytest.raises(UnservableConfig) as raised:
            classify_config(view(IMAGE, BOX))
        assert (1, True) == (len(raised.value.refusals), "ml-backend" in str(raised.value))

    def test_a_config_without_controls_raises(self) -> None:
        """A config with objects but no control raises UnservableConfig."""
        with pytest.raises(UnservableConfig, match="no control"):
            classify_config(view(TEXT))

    def test_dtd_is_refused_before_parsing(self) -> None:
        """An entity declaration is refused, never expanded."""
        with pytest.raises(UnservableConfig, match="DTD or entities"):
            classify_config('<!DOCTYPE x [<!ENTITY a "b">]><View>&a;</View>')

    def test_malformed_xml_is_refused(self) -> None:
        """XML that does not parse raises UnservableConfig, a ValueError."""
        with pytest.raises(ValueError, match="not well-formed"):
            classify_config("<View>")


class TestSelectControls:
    SHAPE = classify_config(view(TEXT, SENTIMENT, TOPIC, NER, IMAGE, BOX))

    def test_no_list_selects_every_served_control(self) -> None:
        """Without a configured list, every served control is learned."""
        assert self.SHAPE.served == select_controls(self.SHAPE, None)

    def test_a_list_selects_the_named_controls_in_config_order(self) -> None:
        """Named controls are returned in the config's order."""
        chosen = select_controls(self.SHAPE, ["ner", "sentiment"])
        assert ["sentiment", "ner"] == [control.name for control in chosen]

    def test_an_unknown_name_is_a_clear_error(self) -> None:
        """A name not in the config raises UnknownControl listing what is served."""
        expected = (
            "control 'nope' is not in the labeling config "
            "(served controls: 'sentiment', 'topic', 'ner')"
        )
        with pytest.raises(UnknownControl) as raised:
            select_controls(self.SHAPE, ["nope"])
        assert expected == str(raised.value)

    def test_a_refused_name_quotes_its_refusal(self) -> None:
        """Naming a refused control says why it is not learned."""
        with pytest.raises(UnknownControl, match="not learned: <RectangleLabels"):
            select_controls(self.SHAPE, ["box"])

    def test_an_empty_list_is_an_error(self) -> None:
        """An empty list would learn nothing: it is refused."""
        with pytest.raises(UnknownControl, match="empty"):
            select_controls(self.SHAPE, [])
