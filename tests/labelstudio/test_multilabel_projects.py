"""Multi-label projects and dialogue/HTML text objects against a real Label Studio.

Before issue 12 such a project was accepted and trained on the FIRST selected label of
each annotation only: a label that was always selected second was never learned, and an
annotation that selected nothing was dropped instead of teaching "none of these".
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from aldaemon.config import Config, load_config
from aldaemon.loop.context import CycleReport
from aldaemon.service.runtime import Runtime
from aldaemon.store import Store
from tests.conftest import MakeProject
from tests.lsserver import LabelStudioClient, LabelStudioServer

pytestmark = pytest.mark.labelstudio

MULTI_CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="topic" toName="text" choice="multiple">
    <Choice value="sports"/>
    <Choice value="politics"/>
    <Choice value="tech"/>
  </Choices>
</View>"""

WORDS = {
    "sports": ["goal", "match", "team", "coach", "league", "score", "striker", "referee"],
    "politics": ["vote", "senate", "party", "minister", "ballot", "law", "election", "mayor"],
    "tech": ["laptop", "software", "chip", "cloud", "server", "code", "robot", "app"],
}
FILLER = ["the", "today", "news", "people", "city", "week", "morning", "report"]


def write_config(
    tmp_path: Path, server: LabelStudioServer, project_id: int, *, predictions: str = ""
) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[labelstudio]\nurl = "{server.url}"\ntoken = "{server.legacy_token}"\n'
        f'max_attempts = 2\n[state]\ndir = "{tmp_path / "state"}"\n[daemon]\nlisten = ""\n'
        f"[[projects]]\nid = {project_id}\n[projects.retrain]\nmin_new_annotations = 4\n"
        f"min_interval = 0\nmin_per_class = 2\n[projects.predictions]\n{predictions}\n"
    )
    return load_config(path, env={})


def one_cycle(config: Config) -> CycleReport:
    async def run() -> CycleReport:
        async with Runtime(config) as runtime:
            report = await runtime.run_cycle(config.projects[0])
            await runtime.wait_for_prunes()
            return report

    return asyncio.run(run())


def text_about(rng: random.Random, topics: tuple[str, ...]) -> str:
    words = [w for topic in topics for w in rng.sample(WORDS[topic], 4)]
    words += rng.sample(FILLER, 3)
    rng.shuffle(words)
    return " ".join(words)


def annotate_choices(
    client: LabelStudioClient, task_id: int, labels: list[str], *, was_cancelled: bool = False
) -> int:
    result = (
        [
            {
                "from_name": "topic",
                "to_name": "text",
                "type": "choices",
                "value": {"choices": labels},
            }
        ]
        if labels
        else []
    )
    answer = client.call(
        "POST",
        f"/api/tasks/{task_id}/annotations/",
        {"result": result, "was_cancelled": was_cancelled},
    )
    return int(answer["id"])


# Each kind: the topics its text is about, and how many of them are annotated / left in the pool.
KINDS: list[tuple[tuple[str, ...], int, int]] = [
    (("sports",), 6, 3),
    (("sports", "politics"), 6, 3),  # "politics" is always the SECOND selected label
    (("tech",), 6, 3),
    ((), 4, 3),  # nothing selected: "none of these"
]


def test_every_selected_label_trains_and_none_trains_negatives(
    tmp_path: Path,
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
    make_project: MakeProject,
) -> None:
    rng = random.Random(7)
    plan: list[tuple[tuple[str, ...], bool]] = []
    for topics, annotated, pooled in KINDS:
        plan += [(topics, True)] * annotated + [(topics, False)] * pooled
    project_id = make_project(
        [{"text": text_about(rng, topics)} for topics, _ in plan], label_config=MULTI_CONFIG
    )
    task_ids = ls_client.task_ids(project_id)
    pool_topics: dict[int, tuple[str, ...]] = {}
    for task_id, (topics, annotated) in zip(task_ids, plan, strict=True):
        if annotated:
            annotate_choices(ls_client, task_id, list(topics))
        else:
            pool_topics[task_id] = topics
    skipped = next(iter(pool_topics))  # a skip is never a negative: the task stays in the pool
    annotate_choices(ls_client, skipped, [], was_cancelled=True)
    config = write_config(tmp_path, label_studio, project_id, predictions="queue_depth = 100")

    report = one_cycle(config)
    assert report.outcome == "ok", report.error

    store = Store.open(config.state.dir, lock=False)
    version = store.list_versions(project_id)[-1]
    store.close()
    # Positives per label: a two-label annotation counts for both; the 4 empty ones count
    # as examples (negatives of every label), the skip does not.
    assert {"sports": 12, "politics": 6, "tech": 6} == version.class_counts
    assert 22 == version.n_labels

    predictions = {p["task"]: p for p in ls_client.predictions(project_id)}
    assert set(pool_topics) == set(predictions)
    chosen: dict[int, set[str]] = {}
    for task_id, prediction in predictions.items():
        assert 0.0 <= prediction["score"] <= 1.0
        labels: set[str] = set()
        for result in prediction["result"]:
            assert (result["from_name"], result["type"]) == ("topic", "choices")
            labels |= set(result["value"]["choices"])
        chosen[task_id] = labels
    both = [task_id for task_id, topics in pool_topics.items() if len(topics) == 2]
    assert all(chosen[task_id] == {"sports", "politics"} for task_id in both), chosen
    nothing = [task_id for task_id, topics in pool_topics.items() if not topics]
    assert all(chosen[task_id] == set() for task_id in nothing), chosen


DIALOGUE_CONFIG = """<View>
  <Paragraphs name="chat" value="$dialogue" layout="dialogue"/>
  <Choices name="intent" toName="chat"><Choice value="refund"/><Choice value="praise"/></Choices>
</View>"""
HTML_CONFIG = """<View>
  <HyperText name="page" value="$html"/>
  <Choices name="intent" toName="page"><Choice value="refund"/><Choice value="praise"/></Choices>
</View>"""


@pytest.mark.parametrize("shape", ["dialogue", "html"])
def test_the_model_reads_what_the_annotator_reads(
    shape: str,
    tmp_path: Path,
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
    make_project: MakeProject,
) -> None:
    """Dialogues train on "speaker: line" lines; HTML on its visible text, tags stripped."""
    lines = {"refund": "I want my money back", "praise": "thank you, it works great"}

    def task(intent: str, n: int) -> dict[str, object]:
        if shape == "dialogue":
            turns = [
                {"author": "agent", "text": f"ticket {n}"},
                {"author": "customer", "text": lines[intent]},
            ]
            return {"dialogue": turns}
        return {"html": f"<div class='x'><p>ticket {n}</p><b>{lines[intent]}</b></div>"}

    intents = ["refund", "praise"] * 5
    project_id = make_project(
        [task(intent, n) for n, intent in enumerate(intents)],
        label_config=DIALOGUE_CONFIG if shape == "dialogue" else HTML_CONFIG,
    )
    task_ids = ls_client.task_ids(project_id)
    to_name = "chat" if shape == "dialogue" else "page"
    for task_id, intent in list(zip(task_ids, intents, strict=True))[:6]:
        ls_client.annotate(task_id, intent, from_name="intent", to_name=to_name)
    config = write_config(tmp_path, label_studio, project_id)

    report = one_cycle(config)

    assert report.outcome == "ok", report.error
    store = Store.open(config.state.dir, lock=False)
    texts = {task.task_id: task.text for task in store.annotated_tasks(project_id)}
    store.close()
    expected = (
        "agent: ticket 0\ncustomer: I want my money back"
        if shape == "dialogue"
        else "ticket 0 I want my money back"
    )
    assert expected == texts[task_ids[0]]
    predicted = {
        p["task"]: p["result"][0]["value"]["choices"] for p in ls_client.predictions(project_id)
    }
    expected_labels = {t: [i] for t, i in zip(task_ids[6:], intents[6:], strict=True)}
    assert expected_labels == predicted
