"""What the model jobs take: one frozen request per job, picklable across the process boundary.

The type of a request picks its job (`training.JOBS`), so the worker has one
`train(request)` instead of a method per job that repeats the job's parameters, and the
job reads its inputs from the request instead of a parameter list of its own. Like
results.py, this module never imports scikit-learn: the main process builds requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from aldaemon.errors import ModelError
from aldaemon.model.results import ScoredPool
from aldaemon.store.database import StoreAddress
from aldaemon.sync import scoring
from aldaemon.sync.config_shapes import ServedControl


@dataclass(frozen=True, kw_only=True)
class TrainingRequest:
    """What every training job gets: the example texts, where to save, and the seed that
    fixes the cross-validation folds and any `random_state` of the estimator."""

    texts: Sequence[str]
    artifact_path: str
    seed: int = 0

    def require_one_answer_per_text(self, answers: Sequence[object], what: str) -> None:
        if len(self.texts) != len(answers):
            raise ModelError(f"got {len(self.texts)} texts but {len(answers)} {what}")


@dataclass(frozen=True, kw_only=True)
class SingleLabelTraining(TrainingRequest):
    """One label per text, fitted with the configured `model` factory."""

    factory_ref: str
    labels: Sequence[str]


@dataclass(frozen=True, kw_only=True)
class CodedTraining(TrainingRequest):
    """Per text, a list of answer codes: label sets, span codes or control answers."""

    answers: Sequence[Sequence[str]]


@dataclass(frozen=True, kw_only=True)
class MultiLabelTraining(CodedTraining):
    """A set of the config's `labels` per text (`<Choices choice="multiple">`)."""

    labels: Sequence[str]


@dataclass(frozen=True, kw_only=True)
class SpanTraining(CodedTraining):
    """Span codes per text (sync/span_answers.py) over the config's entity `labels`."""

    labels: Sequence[str]


@dataclass(frozen=True, kw_only=True)
class ControlsTraining(CodedTraining):
    """Answer codes of several `<Choices>` per text (sync/control_answers.py), each
    single-choice control fitted with the configured `model` factory."""

    factory_ref: str
    controls: Sequence[ServedControl]


@dataclass(frozen=True, kw_only=True)
class ScoringRequest:
    """Score `texts` (one per task id) with the model saved at `artifact_path`.

    `random_fraction` of the tasks get a uniform random score instead, seeded by `seed`
    (vary it per version, or the same tasks get the random slots every time); `clusters`
    > 0 asks for cluster ids where the model has features to cluster on.
    """

    artifact_path: str
    task_ids: Sequence[int]
    texts: Sequence[str]
    strategy: str
    random_fraction: float = 0.0
    clusters: int = 0
    seed: int = 0
    # The model's first step applied to `texts` (a sparse row per text), when the pool job
    # has it cached (model/features.py): the rest of the pipeline starts from it.
    features: Any = None

    def pool(
        self,
        scores: npt.ArrayLike,
        *,
        labels: Sequence[str],
        label_sets: Sequence[Sequence[str]] | None = None,
        clusters: tuple[int, ...] | None = None,
    ) -> ScoredPool:
        """The answer to this request: the model's scores with the random share mixed in."""
        mixed = scoring.mix_random(
            scores, fraction=self.random_fraction, rng=np.random.default_rng(self.seed)
        )
        return ScoredPool(
            task_ids=tuple(int(task_id) for task_id in self.task_ids),
            labels=tuple(labels),
            scores=tuple(float(score) for score in mixed),
            clusters=clusters,
            label_sets=None if label_sets is None else tuple(tuple(s) for s in label_sets),
        )


@dataclass(frozen=True, kw_only=True)
class PoolScoringRequest:
    """Score project `project_id`'s whole unlabeled pool with the model at `artifact_path`.

    The job reads the pool itself from the store at `store`, `chunk_size` tasks at a time
    (model/pool_scoring.py), so the pool never travels through the daemon; only the
    `depth` most informative tasks come back (every task when None). `strategy`,
    `random_fraction`, `clusters` and `seed` mean what they mean in ScoringRequest, except
    that clusters group the chosen tasks only.
    """

    artifact_path: str
    store: StoreAddress
    project_id: int
    strategy: str
    depth: int | None
    random_fraction: float = 0.0
    clusters: int = 0
    seed: int = 0
    chunk_size: int = 4096
    # One shard of the pool: the tasks with after_task_id < id <= last_task_id (None: no end)
    after_task_id: int = 0
    last_task_id: int | None = None
