"""Named entities: tokens with offsets, BIO tags, the CRF and the spans it predicts."""

from __future__ import annotations

import random

import numpy as np
import pytest

from aldaemon.model.spans import (
    Span,
    SpanModel,
    Token,
    bio_tags,
    spans_from_results,
    spans_from_tags,
    tokenize,
)

PEOPLE = [
    "Alice Martin",
    "Bruno Keller",
    "Chloé Dubois",
    "Dmitri Petrov",
    "Eva Nováková",
    "Farid Haddad",
    "Grace Lee",
    "Hugo Álvarez",
]
CITIES = ["Paris", "Berlin", "Zürich", "Kraków", "Lisbon", "Osaka", "São Paulo", "Montréal"]
TEMPLATES = [
    "{person} moved to {city} last year.",
    "Yesterday {person} flew from {city} to meet friends.",
    "In {city}, {person} opened a small bakery.",
    "The mayor of {city} thanked {person} for the gift.",
    "{person} said the weather in {city} was lovely.",
    "We met {person} at the station in {city}.",
]
NO_ENTITY = ["the train was late again today.", "nobody knows what happens next."]


def sentence(rng: random.Random) -> tuple[str, list[Span]]:
    """One generated sentence and its PER/LOC spans, offsets found by position."""
    template = rng.choice(TEMPLATES)
    person, city = rng.choice(PEOPLE), rng.choice(CITIES)
    text = template.format(person=person, city=city)
    spans = []
    for label, name in (("PER", person), ("LOC", city)):
        start = text.index(name)
        spans.append(Span(start, start + len(name), label, name))
    return text, spans


def corpus(n: int, seed: int) -> tuple[list[str], list[list[Span]]]:
    rng = random.Random(seed)
    pairs = [sentence(rng) for _ in range(n)]
    texts = [text for text, _ in pairs] + NO_ENTITY
    return texts, [spans for _, spans in pairs] + [[] for _ in NO_ENTITY]


@pytest.fixture(scope="module")
def model() -> SpanModel:
    texts, spans = corpus(60, seed=1)
    return SpanModel().fit(texts, spans)


class TestTokenize:
    def test_words_and_symbols_with_offsets(self) -> None:
        """Words are \\w runs, punctuation is one token each, offsets index the text."""
        expected = [Token("Hi", 0, 2), Token(",", 2, 3), Token("Zoë", 4, 7), Token("!", 7, 8)]
        assert expected == tokenize("Hi, Zoë!")

    def test_offsets_are_code_points_around_emoji(self) -> None:
        """An emoji is one token of one code point; later offsets count code points."""
        text = "🐱 Warning: This is a test text"
        token = next(t for t in tokenize(text) if t.text == "test")
        assert (21, 25) == (token.start, token.end)

    def test_cjk_run_is_one_token(self) -> None:
        """Unspaced CJK is one \\w run, its offsets right."""
        assert [Token("東京都", 0, 3), Token("。", 3, 4)] == tokenize("東京都。")


class TestBio:
    def test_spans_become_bio_tags(self) -> None:
        """The first token of a span is B-, the rest I-, others O."""
        text = "Grace Lee lives in São Paulo ."
        spans = [Span(0, 9, "PER", "Grace Lee"), Span(19, 28, "LOC", "São Paulo")]
        expected = ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "O"]
        assert expected == bio_tags(tokenize(text), spans)

    def test_a_span_cutting_a_token_labels_the_whole_token(self) -> None:
        """A span ending inside a word still tags that word."""
        assert ["B-LOC", "O"] == bio_tags(tokenize("Berlinish x"), [Span(0, 6, "LOC", "Berlin")])

    def test_overlapping_spans_keep_the_first(self) -> None:
        """Tokens already tagged by an earlier span are not re-tagged."""
        spans = [Span(0, 9, "PER", ""), Span(6, 9, "LOC", "")]
        assert ["B-PER", "I-PER"] == bio_tags(tokenize("Grace Lee"), spans)

    def test_tags_merge_back_into_spans(self) -> None:
        """B-X I-X runs become one span from the first token's start to the last's end."""
        text = "Grace Lee met Hugo in Paris"
        tags = ["B-PER", "I-PER", "O", "B-PER", "O", "B-LOC"]
        expected = [
            Span(0, 9, "PER", "Grace Lee"),
            Span(14, 18, "PER", "Hugo"),
            Span(22, 27, "LOC", "Paris"),
        ]
        assert expected == spans_from_tags(text, tokenize(text), tags)

    def test_a_stray_inside_tag_starts_a_span(self) -> None:
        """An I-X after O, or after another label, opens a new span."""
        text = "a b c"
        assert [Span(2, 5, "LOC", "b c")] == spans_from_tags(
            text, tokenize(text), ["O", "I-LOC", "I-LOC"]
        )


class TestSpansFromResults:
    def test_reads_labels_results_of_the_control(self) -> None:
        """Only "labels" results of the named control are read, sorted by start."""
        results = [
            {
                "from_name": "ner",
                "to_name": "text",
                "type": "labels",
                "value": {"start": 10, "end": 15, "text": "Paris", "labels": ["LOC"]},
            },
            {
                "from_name": "ner",
                "to_name": "text",
                "type": "labels",
                "value": {"start": 0, "end": 5, "text": "Alice", "labels": ["PER", "X"]},
            },
            {
                "from_name": "sentiment",
                "to_name": "text",
                "type": "choices",
                "value": {"choices": ["pos"]},
            },
        ]
        expected = [Span(0, 5, "PER", "Alice"), Span(10, 15, "LOC", "Paris")]
        assert expected == spans_from_results(results, from_name="ner")

    def test_text_is_taken_from_the_task_when_given(self) -> None:
        """With the task text, a span's text is sliced from it."""
        results = [
            {"from_name": "ner", "type": "labels", "value": {"start": 2, "end": 4, "labels": ["X"]}}
        ]
        assert [Span(2, 4, "X", "cd")] == spans_from_results(
            results, from_name="ner", text="abcdef"
        )


class TestSpanModel:
    def test_entity_recall_on_new_sentences(self, model: SpanModel) -> None:
        """Trained on 60 sentences, it finds at least 90% of the entities of 30 new ones."""
        texts, gold = corpus(30, seed=2)
        found = 0
        for prediction, spans in zip(model.predict(texts), gold, strict=True):
            predicted = {(s.start, s.end, s.label) for s in prediction.spans}
            found += sum((s.start, s.end, s.label) in predicted for s in spans)
        total = sum(len(spans) for spans in gold)
        assert True is (found / total >= 0.9), f"recall {found}/{total}"

    def test_predicted_offsets_point_at_the_entity_in_unicode_text(self, model: SpanModel) -> None:
        """Offsets slice the entities out of a text with emoji and accents before them."""
        text = "🐱🎉 Yesterday Hugo Álvarez flew from Zürich to meet friends."
        prediction = model.predict([text])[0]
        assert [("Hugo Álvarez", "PER"), ("Zürich", "LOC")] == [
            (text[s.start : s.end], s.label) for s in prediction.spans
        ]

    def test_marginals_are_tokens_by_tags_and_sum_to_one(self, model: SpanModel) -> None:
        """Each token has one probability per tag, summing to 1."""
        prediction = model.predict(["Grace Lee moved to Paris."])[0]
        assert ((6, len(model.tags_)), True) == (
            prediction.marginals.shape,
            bool(np.allclose(prediction.marginals.sum(axis=1), 1.0)),
        )

    def test_span_score_is_a_probability(self, model: SpanModel) -> None:
        """Each predicted span carries its lowest token marginal, in (0, 1]."""
        spans = model.predict(["Grace Lee moved to Paris."])[0].spans
        assert True is all(s.score is not None and 0 < s.score <= 1 for s in spans)

    def test_empty_text_predicts_nothing(self, model: SpanModel) -> None:
        """A text without tokens gives no span and an empty marginal matrix."""
        prediction = model.predict(["   "])[0]
        assert ((), (0, len(model.tags_))) == (prediction.spans, prediction.marginals.shape)

    def test_texts_without_any_span_train_an_all_outside_model(self) -> None:
        """Only unlabelled texts: the model fits and predicts no entity."""
        model = SpanModel().fit(["no names here", "none at all"], [[], []])
        assert ((), ("O",)) == (model.predict(["Grace Lee"])[0].spans, model.tags_)

    def test_unfitted_model_refuses(self) -> None:
        """predict before fit is a ValueError."""
        with pytest.raises(ValueError, match="not fitted"):
            SpanModel().predict(["x"])

    def test_model_survives_pickling(self, model: SpanModel) -> None:
        """A fitted model pickles and predicts the same spans (artifacts are pickled)."""
        import pickle

        copy = pickle.loads(pickle.dumps(model))
        text = "Grace Lee moved to Paris."
        assert model.predict([text])[0].spans == copy.predict([text])[0].spans
