"""A synthetic named-entity corpus for the NER benchmarks: sentences and their gold spans.

Why synthetic: the cycle-time benchmark measures the daemon's work on 10,000 tasks (CRF
prediction, per-token scoring, upload of span predictions), which depends on the size
and shape of the texts, not on what they say. Sentences mix people, places and
organisations (accents included, so offsets are code points) into varied templates;
seeded, so every run sees the same 10,000 texts. Nothing is downloaded.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NER_CONFIG = """<View>
  <Labels name="ner" toName="text">
    <Label value="PER"/><Label value="LOC"/><Label value="ORG"/>
  </Labels>
  <Text name="text" value="$text"/>
</View>"""

FIRST = [
    "José",
    "Zoë",
    "Renée",
    "Ola",
    "Chloé",
    "Anna",
    "Björn",
    "Marta",
    "Ivan",
    "Léa",
    "Tomás",
    "Noor",
    "Kenji",
    "Aisha",
    "Pavel",
    "Inès",
    "Omar",
    "Greta",
    "Luis",
    "Maëlle",
]
LAST = [
    "Núñez",
    "Brontë",
    "Åberg",
    "Nordmann",
    "Dupré",
    "Kowalski",
    "Larsen",
    "Rossi",
    "Müller",
    "Haddad",
    "Silva",
    "Novak",
    "Tanaka",
    "Okafor",
    "Dubois",
    "Fischer",
]
PLACES = [
    "Zürich",
    "Kraków",
    "Malmö",
    "Reykjavík",
    "Besançon",
    "Lisbon",
    "Oslo",
    "Porto",
    "Gdańsk",
    "Sevilla",
    "Tromsø",
    "Bruges",
    "Nantes",
    "Turku",
    "Graz",
    "Lyon",
]
ORGS = [
    "Acme Corp",
    "Nordic Rail",
    "Banco Sul",
    "Helios Labs",
    "Vértice",
    "Globex",
    "Blue Harbor",
    "Initech",
    "Umbrella Foods",
    "Société Générale",
]
TEMPLATES = [
    "{PER} flew to {LOC} on Monday to meet the team of {ORG}.",
    "Yesterday in {LOC}, {PER} said that {ORG} would open a new office.",
    "{ORG} hired {PER} last spring; she moved to {LOC} soon after.",
    "According to {PER}, the weather in {LOC} was lovely this week.",
    "The report by {ORG} mentions {LOC} twice and {PER} once.",
    "We had lunch with {PER} near the station, nothing else happened.",
    "Prices rose again this quarter, analysts at {ORG} noted.",
    "Nothing of note happened today, the meeting was moved to next week.",
]


@dataclass(frozen=True)
class NerText:
    text: str
    spans: tuple[tuple[int, int, str], ...]  # [start, end) code points, label


def ner_texts(count: int, *, seed: int = 0) -> list[NerText]:
    rng = random.Random(seed)
    return [_sentence(rng) for _ in range(count)]


def _sentence(rng: random.Random) -> NerText:
    template = rng.choice(TEMPLATES)
    fillers = {
        "PER": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
        "LOC": rng.choice(PLACES),
        "ORG": rng.choice(ORGS),
    }
    text, spans, rest = "", [], template
    while "{" in rest:
        before, _, after = rest.partition("{")
        label, _, rest = after.partition("}")
        text += before
        spans.append((len(text), len(text) + len(fillers[label]), label))
        text += fillers[label]
    return NerText(text=text + rest, spans=tuple(spans))


def span_result(item: NerText) -> list[dict[str, object]]:
    """The annotation result holding `item`'s gold spans."""
    return [
        {
            "from_name": "ner",
            "to_name": "text",
            "type": "labels",
            "value": {"start": s, "end": e, "text": item.text[s:e], "labels": [label]},
        }
        for s, e, label in item.spans
    ]
