"""parse_labeling_config: the shapes the daemon serves and the exact reasons it refuses others."""

from __future__ import annotations

import pytest

from aldaemon.errors import UnsupportedLabelingConfig
from aldaemon.labelstudio import parse_labeling_config
from aldaemon.records import LabelingSchema


def refusal(xml: str) -> str:
    with pytest.raises(UnsupportedLabelingConfig) as caught:
        parse_labeling_config(xml)
    return str(caught.value)


class TestAcceptedShapes:
    def test_text_with_choices(self) -> None:
        """A Text field classified by a Choices control gives field, names and labels."""
        xml = """<View>
          <Text name="text" value="$review"/>
          <Choices name="sentiment" toName="text">
            <Choice value="pos"/><Choice value="neg"/>
          </Choices>
        </View>"""

        expected = LabelingSchema(
            text_field="review", from_name="sentiment", to_name="text", labels=("pos", "neg")
        )
        assert expected == parse_labeling_config(xml)

    def test_hypertext_is_served_like_text(self) -> None:
        """A HyperText object is accepted as the classified text."""
        xml = """<View><HyperText name="page" value="$html"/>
          <Choices name="topic" toName="page"><Choice value="a"/><Choice value="b"/></Choices>
        </View>"""

        assert "html" == parse_labeling_config(xml).text_field

    def test_alias_replaces_value(self) -> None:
        """A Choice's alias is the label, because Label Studio stores the alias in results."""
        xml = """<View><Text name="t" value="$text"/>
          <Choices name="c" toName="t">
            <Choice value="Positive" alias="pos"/><Choice value="neg"/>
          </Choices>
        </View>"""

        assert ("pos", "neg") == parse_labeling_config(xml).labels

    def test_first_usable_choices_wins(self) -> None:
        """When an image Choices comes first, the later text Choices is the one used."""
        xml = """<View><Image name="img" value="$image"/><Text name="t" value="$text"/>
          <Choices name="kind" toName="img"><Choice value="cat"/></Choices>
          <Choices name="mood" toName="t"><Choice value="happy"/><Choice value="sad"/></Choices>
        </View>"""

        assert "mood" == parse_labeling_config(xml).from_name

    def test_nested_views_are_searched(self) -> None:
        """Controls and objects inside nested <View>s are found."""
        xml = """<View><View><Text name="t" value="$text"/></View>
          <View><Choices name="c" toName="t"><View><Choice value="x"/></View></Choices></View>
        </View>"""

        assert ("x",) == parse_labeling_config(xml).labels

    def test_duplicate_choices_are_listed_once(self) -> None:
        """A label that appears twice is listed once, in first-seen order."""
        xml = """<View><Text name="t" value="$text"/>
          <Choices name="c" toName="t">
            <Choice value="a"/><Choice value="b"/><Choice value="a"/>
          </Choices>
        </View>"""

        assert ("a", "b") == parse_labeling_config(xml).labels


class TestRefusals:
    def test_no_choices_control(self) -> None:
        """A config without <Choices> is refused and says so."""
        xml = """<View><Text name="t" value="$text"/><Labels name="l" toName="t"/></View>"""

        assert "labeling config has no <Choices> control" == refusal(xml)

    def test_choices_pointing_to_an_image(self) -> None:
        """Choices on an Image are refused, naming the control, the target and its tag."""
        xml = """<View><Image name="img" value="$image"/>
          <Choices name="x" toName="img"><Choice value="cat"/></Choices></View>"""

        expected = (
            "<Choices name='x'> points to 'img' which is an <Image>, only <Text> is supported"
        )
        assert expected == refusal(xml)

    def test_text_value_must_be_a_field(self) -> None:
        """A Text whose value is a literal instead of '$field' is refused."""
        xml = """<View><Text name="t" value="hello"/>
          <Choices name="c" toName="t"><Choice value="a"/></Choices></View>"""

        assert "<Text name='t'> value must be '$field', not 'hello'" == refusal(xml)

    def test_target_that_does_not_exist(self) -> None:
        """Choices whose toName names no object is refused, naming the missing object."""
        xml = """<View><Text name="t" value="$text"/>
          <Choices name="c" toName="body"><Choice value="a"/></Choices></View>"""

        assert "<Choices name='c'> points to 'body' which does not exist" == refusal(xml)

    def test_choices_without_to_name(self) -> None:
        """Choices without toName is refused."""
        xml = """<View><Text name="t" value="$text"/>
          <Choices name="c"><Choice value="a"/></Choices></View>"""

        assert "<Choices name='c'> has no toName attribute" == refusal(xml)

    def test_choices_without_static_choices(self) -> None:
        """Choices with no <Choice> children (e.g. dynamic options) is refused."""
        xml = """<View><Text name="t" value="$text"/>
          <Choices name="c" toName="t" value="$options"/></View>"""

        assert "<Choices name='c'> has no <Choice value=...> children" == refusal(xml)

    def test_every_rejected_control_is_explained(self) -> None:
        """When no Choices qualifies, the message lists the reason for each one."""
        xml = """<View><Image name="img" value="$image"/>
          <Choices name="a" toName="img"><Choice value="x"/></Choices>
          <Choices name="b" toName="nowhere"><Choice value="y"/></Choices></View>"""

        expected = (
            "<Choices name='a'> points to 'img' which is an <Image>, only <Text> is supported; "
            "<Choices name='b'> points to 'nowhere' which does not exist"
        )
        assert expected == refusal(xml)

    def test_malformed_xml(self) -> None:
        """XML that does not parse is refused as not well-formed."""
        assert refusal("<View><Text></View>").startswith("labeling config is not well-formed XML: ")

    def test_dtd_and_entities_are_refused(self) -> None:
        """A DTD declaring entities is refused before the parser could expand them."""
        xml = """<?xml version="1.0"?><!DOCTYPE v [<!ENTITY a "aaaaaaaaaa">]>
          <View><Text name="t" value="$text"/>
          <Choices name="c" toName="t"><Choice value="&a;"/></Choices></View>"""

        assert "labeling config must not contain a DTD or entities" == refusal(xml)
