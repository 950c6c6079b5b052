"""Named entities: a token-level CRF trained on Label Studio spans, predicting spans.

Why a CRF (sklearn-crfsuite, over python-crfsuite's C++ CRFsuite) and not e.g. spaCy or a
transformer:
- per-token marginals: `predict_marginals` gives P(tag) for every token, which is what an
  active-learning score needs (see sync/shape_scoring.py); spaCy's NER is a transition
  parser without calibrated per-token probabilities;
- it trains in seconds on a CPU from the few dozen sentences a loop starts with, needs no
  GPU, no pretrained vectors and no model download (these machines cannot reach one);
- it is a small, well-kept wrapper with sklearn's fit/predict names, and it pickles.

Pipeline:

    text --tokenize--> tokens with character offsets (\\w+ | one non-space symbol)
         --features--> lowercase, prefix/suffixes, shape, title/upper/digit, neighbours
         --CRF-------> BIO tags (Viterbi) + per-token marginals
         --merge-----> spans: a B-X and the I-X that follow it, start of the first token
                       to end of the last

Offsets are Python string indices, i.e. Unicode code points. Label Studio's `<Text>`
results count code points too: its editor converts the browser's UTF-16 offsets to code
points (label-studio web/libs/editor tests/.../ner/emoji: in "🐱 Warning: This is a test
text", "test" is saved as start 21, end 25, the code-point offsets; UTF-16 would give 22).
So no conversion is needed for `<Text>`; `<HyperText>` spans (XPath plus UTF-16
`startOffset`) are not served. Tokens are `\\w` runs, which is Unicode-aware: accented
words are one token; a CJK run without spaces is one token too (offsets stay right, but
entities inside such a run cannot be split out).

An annotated span that cuts a token labels the whole token; overlapping spans keep the
first (by start) on the tokens they share; a span with several labels uses its first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import numpy.typing as npt

TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")
OUTSIDE = "O"

FeatureValue = str | bool | float
Features = dict[str, FeatureValue]


@dataclass(frozen=True)
class Token:
    """A token and its [start, end) code-point offsets in the text."""

    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Span:
    """An entity: [start, end) code-point offsets, its label, its text, and a confidence.

    `score` is the lowest marginal of the predicted tag over the span's tokens (None for
    annotated spans).
    """

    start: int
    end: int
    label: str
    text: str
    score: float | None = None


@dataclass(frozen=True)
class SpanPrediction:
    """One text's predicted spans, its tokens and their marginals (tokens x tags)."""

    spans: tuple[Span, ...]
    tokens: tuple[Token, ...]
    tags: tuple[str, ...]  # column order of marginals
    marginals: npt.NDArray[np.float64]


def tokenize(text: str) -> list[Token]:
    """Words (Unicode \\w runs) and single non-space symbols, with their offsets."""
    return [Token(m.group(), m.start(), m.end()) for m in TOKEN_PATTERN.finditer(text)]


def spans_from_results(
    results: Sequence[Mapping[str, Any]], *, from_name: str, text: str | None = None
) -> list[Span]:
    """The spans of one control in an annotation's result list, sorted by start.

    Results of other controls, or not of type "labels", are skipped. With `text`, a
    span's text is read from it (Label Studio omits `value.text` for valueType="url").
    """
    spans: list[Span] = []
    for result in results:
        if result.get("from_name") != from_name or result.get("type") != "labels":
            continue
        value = result.get("value") or {}
        labels = value.get("labels") or []
        start, end = value.get("start"), value.get("end")
        if not labels or not isinstance(start, int) or not isinstance(end, int) or start >= end:
            continue
        span_text = text[start:end] if text is not None else str(value.get("text", ""))
        spans.append(Span(start=start, end=end, label=str(labels[0]), text=span_text))
    return sorted(spans, key=lambda span: (span.start, span.end))


def bio_tags(tokens: Sequence[Token], spans: Sequence[Span]) -> list[str]:
    """B-/I-label for tokens overlapping a span, O elsewhere; the first span wins overlaps."""
    tags = [OUTSIDE] * len(tokens)
    for span in sorted(spans, key=lambda s: (s.start, s.end)):
        inside = [
            i
            for i, token in enumerate(tokens)
            if token.start < span.end and token.end > span.start and tags[i] == OUTSIDE
        ]
        for position, i in enumerate(inside):
            tags[i] = ("B-" if position == 0 else "I-") + span.label
    return tags


def spans_from_tags(
    text: str,
    tokens: Sequence[Token],
    tags: Sequence[str],
    confidences: Sequence[float] | None = None,
) -> list[Span]:
    """Merge B-X I-X ... runs into spans; an I-X without its B-X starts a span too."""
    spans: list[Span] = []
    run: list[int] = []
    run_label: str | None = None

    def close() -> None:
        if run and run_label is not None:
            start, end = tokens[run[0]].start, tokens[run[-1]].end
            score = min(confidences[i] for i in run) if confidences is not None else None
            spans.append(Span(start, end, run_label, text[start:end], score))

    for i, tag in enumerate(tags):
        prefix, _, label = tag.partition("-")
        if tag == OUTSIDE or not label:
            close()
            run, run_label = [], None
        elif prefix == "I" and label == run_label:
            run.append(i)
        else:
            close()
            run, run_label = [i], label
    close()
    return spans


def token_features(tokens: Sequence[Token]) -> list[Features]:
    """Per token: its own form and the form of its neighbours (two on each side)."""
    own = [_own_features(token.text) for token in tokens]
    features: list[Features] = []
    for i, token_features_ in enumerate(own):
        row: Features = {"bias": 1.0, **token_features_}
        for offset in (-2, -1, 1, 2):
            j = i + offset
            if 0 <= j < len(tokens):
                neighbour = own[j]
                row[f"{offset}:lower"] = neighbour["lower"]
                row[f"{offset}:shape"] = neighbour["shape"]
                row[f"{offset}:is_title"] = neighbour["is_title"]
            elif abs(offset) == 1:
                row["BOS" if offset < 0 else "EOS"] = True
        features.append(row)
    return features


def _own_features(word: str) -> Features:
    return {
        "lower": word.lower(),
        "suffix3": word[-3:].lower(),
        "suffix2": word[-2:].lower(),
        "prefix2": word[:2].lower(),
        "shape": _shape(word),
        "is_title": word.istitle(),
        "is_upper": word.isupper(),
        "is_digit": word.isdigit(),
        "is_symbol": not word[:1].isalnum() and word[:1] != "_",
    }


def _shape(word: str) -> str:
    """Xxxx -> Xx, 2024 -> d, McDonald -> XxXx: letter case and digits, runs collapsed."""
    classes = [
        "X" if c.isupper() else "x" if c.islower() else "d" if c.isdigit() else c for c in word
    ]
    collapsed = [c for i, c in enumerate(classes) if i == 0 or c != classes[i - 1]]
    return "".join(collapsed)


class SpanModel:
    """fit(texts, span_sets) and predict(texts) -> SpanPrediction per text.

    c1/c2 are CRFsuite's L1/L2 penalties; 0.1 each is sklearn-crfsuite's tutorial setting
    and suits small training sets (L1 drops the many one-off features).
    """

    def __init__(self, *, c1: float = 0.1, c2: float = 0.1, max_iterations: int = 100) -> None:
        self.c1 = c1
        self.c2 = c2
        self.max_iterations = max_iterations
        self.tags_: tuple[str, ...] = ()
        self._crf: Any = None

    def fit(self, texts: Sequence[str], span_sets: Sequence[Sequence[Span]]) -> Self:
        """Train on texts and their annotated spans; a text without spans teaches "no entity"."""
        if len(texts) != len(span_sets):
            raise ValueError(f"need one span list per text, got {len(texts)} and {len(span_sets)}")
        features: list[list[Features]] = []
        targets: list[list[str]] = []
        for text, spans in zip(texts, span_sets, strict=True):
            tokens = tokenize(text)
            if tokens:  # an empty sequence carries nothing and CRFsuite rejects it
                features.append(token_features(tokens))
                targets.append(bio_tags(tokens, spans))
        if not features:
            raise ValueError("cannot fit on texts without a single token")
        import sklearn_crfsuite  # lazy: importing this module stays cheap and I/O-free

        crf = sklearn_crfsuite.CRF(
            algorithm="lbfgs",
            c1=self.c1,
            c2=self.c2,
            max_iterations=self.max_iterations,
            all_possible_transitions=True,  # lets "I-X after O" be learned as unlikely
        )
        crf.fit(features, targets)
        self._crf = crf
        self.tags_ = tuple(crf.classes_)
        return self

    def predict(self, texts: Sequence[str]) -> list[SpanPrediction]:
        """Spans (Viterbi tags merged) and per-token marginals for each text."""
        if self._crf is None:
            raise ValueError("the model is not fitted")
        predictions: list[SpanPrediction] = []
        for text in texts:
            tokens = tokenize(text)
            if not tokens:
                empty = np.zeros((0, len(self.tags_)), dtype=np.float64)
                predictions.append(SpanPrediction((), (), self.tags_, empty))
                continue
            features = token_features(tokens)
            tags = self._crf.predict_single(features)
            marginal_rows = self._crf.predict_marginals_single(features)
            marginals = np.array(
                [[row.get(tag, 0.0) for tag in self.tags_] for row in marginal_rows],
                dtype=np.float64,
            )
            confidences = [float(row[tag]) for row, tag in zip(marginal_rows, tags, strict=True)]
            spans = spans_from_tags(text, tokens, tags, confidences)
            predictions.append(SpanPrediction(tuple(spans), tuple(tokens), self.tags_, marginals))
        return predictions


def make_span_model() -> SpanModel:
    """A fresh, unfitted model: aldaemon.model.spans:make_span_model."""
    return SpanModel()
