"""Setup for the million-task benchmark (bench/million.py): a private Label Studio on
PostgreSQL with the memory-efficient prediction import, and a synthetic pool imported into
it in timed batches.

Why synthetic texts: 1,000,000 distinct tasks are needed, and the fine-food corpus has
5,000. Each text is exactly 200 characters of words drawn from a fixed vocabulary, a
fifth of them from words that lean to the task's label, so the model learns something
and the pool's vocabulary (what TF-IDF tokenizes and the worker holds) grows with the
pool as real text does. Deterministic from the task's index.

Setup goes through `tests.lsserver` (plain urllib), not through the daemon's gateway.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aldaemon.labelstudio.failures import MEMORY_EFFICIENT_IMPORT_FLAG
from bench import common
from demo.data import LABEL_CONFIG
from tests.lsserver import (
    LabelStudioClient,
    LabelStudioServer,
    PostgresDatabase,
    PostgresSettings,
    http_json,
)

TEXT_LENGTH = 200
LABELS = ("great", "other")
VOCABULARY_SIZE = 20_000
LEANING_WORDS = 300  # per label: the words that give a task's label away
LEANING_SHARE = 0.2
IMPORT_BATCH = 5_000  # tasks per import request (~1.2 MB of JSON)


# ---- the synthetic pool -------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticPool:
    """Texts and labels of `size` tasks; task i's are `text(i)` and `label(i)`."""

    size: int
    seed: int = 14

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        letters = "abcdefghijklmnopqrstuvwxyz"
        words = {
            "".join(rng.choice(letters) for _ in range(rng.randint(3, 9)))
            for _ in range(VOCABULARY_SIZE * 2)
        }
        vocabulary = sorted(words)[:VOCABULARY_SIZE]
        rng.shuffle(vocabulary)
        object.__setattr__(self, "_vocabulary", vocabulary)

    def label(self, index: int) -> str:
        return LABELS[random.Random(self.seed * 1_000_003 + index).random() < 0.5]

    def text(self, index: int) -> str:
        """Exactly TEXT_LENGTH characters, words separated by single spaces."""
        rng = random.Random(self.seed * 1_000_003 + index)
        label_index = int(rng.random() < 0.5)
        vocabulary: list[str] = self._vocabulary  # type: ignore[attr-defined]
        leaning = vocabulary[label_index * LEANING_WORDS : (label_index + 1) * LEANING_WORDS]
        common_words = vocabulary[2 * LEANING_WORDS :]
        parts: list[str] = []
        length = -1
        while length < TEXT_LENGTH:
            source = leaning if rng.random() < LEANING_SHARE else common_words
            word = source[int(rng.random() ** 2 * len(source))]  # a few words are frequent
            parts.append(word)
            length += len(word) + 1
        return " ".join(parts)[:TEXT_LENGTH]

    def data(self, start: int, stop: int) -> list[dict[str, object]]:
        return [{"text": self.text(i), "pool_index": i} for i in range(start, stop)]


# ---- Label Studio on PostgreSQL -----------------------------------------------------------


@contextlib.contextmanager
def label_studio_on_postgres(
    work_dir: Path, *, database: str | None = None
) -> Iterator[LabelStudioServer]:
    """A private Label Studio on PostgreSQL, with the import flag on.

    Without `database`: a fresh database under `work_dir`, dropped at the end. With it:
    that database (created when missing) and `work_dir` are KEPT, so that a later run can
    reuse a project imported once (importing 1M tasks takes many minutes). PostgreSQL is
    where `tests/conftest.py` finds it (ALDAEMON_TEST_PG_HOST/_PORT/_USER/_PASSWORD,
    default 127.0.0.1:5432, trust auth).
    """
    settings = PostgresSettings.from_env(os.environ)
    name = database or f"aldaemon_bench_million_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    postgres = PostgresDatabase.connect(settings, name=name)
    if database is None or not (work_dir / "label-studio").exists():
        postgres.create()
    server = LabelStudioServer(
        data_dir=work_dir / "label-studio",
        extra_env={**postgres.label_studio_env(), MEMORY_EFFICIENT_IMPORT_FLAG: "true"},
        startup_timeout=900.0,
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()
        if database is None:
            postgres.drop()


@dataclass(frozen=True)
class ImportedProject:
    project_id: int
    task_ids: list[int]  # task_ids[i] holds pool index i
    seconds: float
    batch_seconds: list[float]


def reusable_project(
    client: LabelStudioClient, *, title: str, size: int, annotated: bool = False
) -> int | None:
    """A project called `title` holding `size` tasks (and no annotation yet, unless
    `annotated` allows them), if there is one."""
    answer = http_json(
        "GET",
        f"{client.url}/api/projects/?" + urllib.parse.urlencode({"title": title, "page_size": 100}),
        token=common._legacy_token(client),
    )
    for project in answer["results"] if isinstance(answer, dict) else answer:
        if (
            project["title"] == title
            and project.get("task_number") == size
            and (annotated or not project.get("total_annotations_number"))
        ):
            return int(project["id"])
    return None


def import_pool(
    client: LabelStudioClient, pool: SyntheticPool, *, title: str, log: bool = True
) -> ImportedProject:
    """Create a project and import the pool in batches of IMPORT_BATCH, timing each.

    A project left by an earlier `--import-only` run (same title and size, no annotation)
    is reused instead; its import time is then not known here (0, no batches).
    """
    reused = reusable_project(client, title=title, size=pool.size)
    if reused is not None:
        print(f"  reusing project {reused} ({pool.size:,} tasks, no annotations)", flush=True)
        return ImportedProject(
            project_id=reused,
            task_ids=task_ids_by_pool_index(client, reused, pool.size),
            seconds=0.0,
            batch_seconds=[],
        )
    project_id = client.create_project(title=title, label_config=LABEL_CONFIG)
    batch_seconds: list[float] = []
    started = time.perf_counter()
    for start in range(0, pool.size, IMPORT_BATCH):
        stop = min(pool.size, start + IMPORT_BATCH)
        data = pool.data(start, stop)
        began = time.perf_counter()
        http_json(
            "POST",
            f"{client.url}/api/projects/{project_id}/import",
            token=common._legacy_token(client),
            body=[{"data": d} for d in data],
            timeout=common.SLOW_CALL_TIMEOUT,
        )
        batch_seconds.append(time.perf_counter() - began)
        if log and (len(batch_seconds) % 20 == 0 or stop == pool.size):
            elapsed = time.perf_counter() - started
            print(
                f"  imported {stop:,} of {pool.size:,} tasks in {elapsed:.0f} s "
                f"(last batch {batch_seconds[-1]:.2f} s)",
                flush=True,
            )
    seconds = time.perf_counter() - started
    return ImportedProject(
        project_id=project_id,
        task_ids=task_ids_by_pool_index(client, project_id, pool.size),
        seconds=seconds,
        batch_seconds=batch_seconds,
    )


def task_ids_by_pool_index(client: LabelStudioClient, project_id: int, size: int) -> list[int]:
    """Task id of every pool index: contiguous ids when checks say so, else listed.

    Listing 1M tasks costs Label Studio ~6.5 s per 10,000 (11 minutes). An import into a
    fresh project on PostgreSQL gives ids in import order without gaps; that is checked
    (lowest and highest id, SAMPLED_CHECKS tasks' pool_index) before it is relied on.
    """
    contiguous = _contiguous_ids(client, project_id, size)
    return contiguous if contiguous is not None else _listed_ids(client, project_id, size)


SAMPLED_CHECKS = 50


def _contiguous_ids(client: LabelStudioClient, project_id: int, size: int) -> list[int] | None:
    def task_at(page: int) -> dict[str, Any]:
        answer = http_json(
            "GET",
            f"{client.url}/api/tasks/?project={project_id}&fields=all&include=id,data"
            f"&page_size=1&page={page}",
            token=common._legacy_token(client),
            timeout=common.SLOW_CALL_TIMEOUT,
        )
        task: dict[str, Any] = answer["tasks"][0]
        return task

    ends = sorted(int(task_at(page)["id"]) for page in (1, size))  # either ordering
    first_id = ends[0]
    if ends[1] - first_id != size - 1:
        return None
    rng = random.Random(size)
    for index in [0, size - 1, *rng.sample(range(size), min(size, SAMPLED_CHECKS))]:
        task = http_json(
            "GET", f"{client.url}/api/tasks/{first_id + index}/", token=common._legacy_token(client)
        )
        if task["data"]["pool_index"] != index:
            return None
    return list(range(first_id, first_id + size))


def _listed_ids(client: LabelStudioClient, project_id: int, size: int) -> list[int]:
    """Task id of every pool index, listed page by page (ids and data only)."""
    by_index: dict[int, int] = {}
    page = 1
    while len(by_index) < size:
        answer = http_json(
            "GET",
            f"{client.url}/api/tasks/?project={project_id}&fields=all&include=id,data"
            f"&page_size=10000&page={page}",
            token=common._legacy_token(client),
            timeout=common.SLOW_CALL_TIMEOUT,
        )
        tasks = answer["tasks"]
        if not tasks:
            break
        by_index.update({int(t["data"]["pool_index"]): int(t["id"]) for t in tasks})
        page += 1
    if len(by_index) != size:
        raise RuntimeError(f"project {project_id} holds {len(by_index)} of {size} tasks")
    return [by_index[i] for i in range(size)]


def annotate_pool_tasks(
    client: LabelStudioClient, pool: SyntheticPool, task_ids: Sequence[int], indices: Sequence[int]
) -> None:
    """One annotation with the true label on each pool index in `indices`."""
    for index in indices:
        common.annotate(client, task_ids[index], pool.label(index))
