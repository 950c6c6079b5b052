"""The default text classifier: TF-IDF over words and word pairs + logistic regression.

Chosen because it is strong on the few hundred labels an active-learning loop starts
with, trains in seconds on a CPU, gives usable probabilities without calibration, and
its TF-IDF vectors double as the features for k-means task clusters.

C = 2.0: on modeldata's fine-foods reviews (2 classes, 1,000 held-out reviews),
accuracy and macro-F1 were flat from C = 1 to C = 3 at 200 and 1,000 labels (C = 1 best)
and rose slightly with C at 4,000 labels (C = 10 best); 2 sits in the flat part for the
label counts a loop spends most of its life at.
"""

from __future__ import annotations

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

MAX_FEATURES = 200_000  # caps memory at ~100k tasks of long text; vocab beyond adds little


def make_text_classifier() -> Pipeline:
    """A fresh, unfitted pipeline; the reference is aldaemon.model.default:make_text_classifier."""
    return Pipeline(
        [
            (
                "tfidf",
                TfidfVectorizer(
                    sublinear_tf=True,  # a word said ten times is not ten times the evidence
                    ngram_range=(1, 2),  # "not good" must not read as "good"
                    min_df=1,  # with few labels, a rare word may be the signal
                    max_features=MAX_FEATURES,
                    strip_accents="unicode",
                ),
            ),
            (
                "classifier",
                LogisticRegression(
                    class_weight="balanced",  # active learning skews class shares on purpose
                    max_iter=1000,
                    C=2.0,
                ),
            ),
        ]
    )
