"""Several `<Choices>` on one task (sentiment AND topic) against a real Label Studio.

One model per control, each with its own cold start; the task's score is the minimum of
its controls' scores; the prediction carries one result per control.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import numpy as np
import pytest

from aldaemon.config import Config, load_config
from aldaemon.loop.poll import WATERMARK_OVERLAP_SECONDS
from aldaemon.model.artifacts import load_artifact
from aldaemon.store import Store
from aldaemon.sync.shape_scoring import single_choice_scores
from tests.conftest import MakeProject
from tests.helpers import one_cycle, write_config
from tests.lsserver import LabelStudioClient, LabelStudioServer

pytestmark = pytest.mark.labelstudio

TWO_CONTROLS = """<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text"><Choice value="pos"/><Choice value="neg"/></Choices>
  <Choices name="topic" toName="text"><Choice value="food"/><Choice value="travel"/></Choices>
</View>"""
WORDS = {
    "pos": ["great", "lovely", "wonderful", "superb"],
    "neg": ["awful", "terrible", "horrid", "dreadful"],
    "food": ["pizza", "soup", "bread", "cheese"],
    "travel": ["train", "hotel", "flight", "beach"],
}


def text(rng: random.Random, sentiment: str, topic: str) -> str:
    words = rng.sample(WORDS[sentiment], 3) + rng.sample(WORDS[topic], 3) + ["the", "a"]
    rng.shuffle(words)
    return " ".join(words)


def annotate(client: LabelStudioClient, task_id: int, answers: dict[str, str]) -> None:
    result = [
        {"from_name": name, "to_name": "text", "type": "choices", "value": {"choices": [label]}}
        for name, label in answers.items()
    ]
    client.call("POST", f"/api/tasks/{task_id}/annotations/", {"result": result})


def with_controls(config: Config, controls: str) -> Config:
    """The same config with `controls = ...` in its [[projects]] table."""
    path = Path(config.path)
    text = path.read_text().replace(
        "[projects.retrain]", f"controls = {controls}\n[projects.retrain]"
    )
    path.write_text(text)
    return load_config(path, env={})


def make(
    rng: random.Random, make_project: MakeProject, client: LabelStudioClient
) -> tuple[int, list[int], list[tuple[str, str]], list[str]]:
    kinds = [(s, t) for s in ("pos", "neg") for t in ("food", "travel")] * 4
    texts = [text(rng, s, t) for s, t in kinds]
    project_id = make_project([{"text": t} for t in texts], label_config=TWO_CONTROLS)
    return project_id, client.task_ids(project_id), kinds, texts


async def test_each_control_is_predicted_and_the_score_is_their_minimum(
    tmp_path: Path,
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
    make_project: MakeProject,
) -> None:
    project_id, task_ids, kinds, texts = make(random.Random(5), make_project, ls_client)
    for task_id, (sentiment, topic) in list(zip(task_ids, kinds, strict=True))[:10]:
        annotate(ls_client, task_id, {"sentiment": sentiment, "topic": topic})
    config = write_config(tmp_path, label_studio, project_id, predictions="queue_depth = 100")

    report = await one_cycle(config)
    assert report.outcome == "ok", report.error

    store = Store.open(config.state.dir, lock=False)
    version = store.list_versions(project_id)[-1]
    store.close()
    assert version.class_counts is not None
    assert {"sentiment:pos", "sentiment:neg", "topic:food", "topic:travel"} == set(
        version.class_counts
    )
    assert version.artifact_path is not None
    bundle = load_artifact(version.artifact_path).model
    predictions = {p["task"]: p for p in ls_client.predictions(project_id)}
    pool = task_ids[10:]
    assert set(pool) == set(predictions)
    pool_texts = [texts[task_ids.index(t)] for t in pool]
    per_control = [
        single_choice_scores(
            bundle.models[name].predict_proba(pool_texts), strategy="least_confidence"
        )
        for name in ("sentiment", "topic")
    ]
    expected_scores = np.minimum(*per_control)
    for task_id, expected in zip(pool, expected_scores, strict=True):
        prediction = predictions[task_id]
        sentiment, topic = kinds[task_ids.index(task_id)]
        chosen = {r["from_name"]: r["value"]["choices"] for r in prediction["result"]}
        assert {"sentiment": [sentiment], "topic": [topic]} == chosen
        assert prediction["score"] == pytest.approx(float(expected), abs=1e-6)


async def test_each_control_has_its_own_cold_start(
    tmp_path: Path,
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
    make_project: MakeProject,
) -> None:
    """Topic answered on every task but always "food": its cold start holds training back."""
    project_id, task_ids, kinds, _ = make(random.Random(6), make_project, ls_client)
    for task_id, (sentiment, _topic) in list(zip(task_ids, kinds, strict=True))[:8]:
        annotate(ls_client, task_id, {"sentiment": sentiment, "topic": "food"})
    config = write_config(tmp_path, label_studio, project_id)

    report = await one_cycle(config)

    assert ("idle", "cold start: 'topic:travel' has 0 of 2 labels") == (
        report.outcome,
        report.decision,
    )


async def test_controls_key_names_the_controls_to_learn(
    tmp_path: Path,
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
    make_project: MakeProject,
) -> None:
    project_id, task_ids, kinds, _ = make(random.Random(7), make_project, ls_client)
    for task_id, (sentiment, _topic) in list(zip(task_ids, kinds, strict=True))[:8]:
        annotate(ls_client, task_id, {"sentiment": sentiment})
    config = with_controls(write_config(tmp_path, label_studio, project_id), '["sentiment"]')
    report = await one_cycle(config)
    assert report.outcome == "ok", report.error
    results = [p["result"] for p in ls_client.predictions(project_id)]
    assert results and all([r["from_name"] for r in result] == ["sentiment"] for result in results)

    unknown = with_controls(write_config(tmp_path, label_studio, project_id), '["mood"]')
    report = await one_cycle(unknown)
    assert "failed" == report.outcome
    assert "[[projects]] controls: control 'mood' is not in the labeling config" in str(
        report.error
    )


ONE_CONTROL = """<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text"><Choice value="pos"/><Choice value="neg"/></Choices>
</View>"""


async def test_adding_a_second_control_re_reads_the_stored_answers(
    tmp_path: Path,
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
    make_project: MakeProject,
) -> None:
    """Answers stored as plain labels become control codes: none is lost to the change."""
    rng = random.Random(8)
    kinds = [(s, t) for s in ("pos", "neg") for t in ("food", "travel")] * 4
    texts = [text(rng, s, t) for s, t in kinds]
    project_id = make_project([{"text": t} for t in texts], label_config=ONE_CONTROL)
    task_ids = ls_client.task_ids(project_id)
    for task_id, (sentiment, _topic) in list(zip(task_ids, kinds, strict=True))[:6]:
        annotate(ls_client, task_id, {"sentiment": sentiment})
    config = write_config(tmp_path, label_studio, project_id)
    assert "ok" == (await one_cycle(config)).outcome
    # past the poll's overlap window: the first 6 are not re-read as "recently changed"
    await asyncio.sleep(WATERMARK_OVERLAP_SECONDS + 1)

    ls_client.call("PATCH", f"/api/projects/{project_id}/", {"label_config": TWO_CONTROLS})
    for task_id, (sentiment, topic) in list(zip(task_ids, kinds, strict=True))[6:12]:
        annotate(ls_client, task_id, {"sentiment": sentiment, "topic": topic})
    report = await one_cycle(config)

    assert report.outcome == "ok", report.error
    store = Store.open(config.state.dir, lock=False)
    version = store.list_versions(project_id)[-1]
    store.close()
    assert version.class_counts is not None
    sentiment_answers = (
        version.class_counts["sentiment:pos"] + version.class_counts["sentiment:neg"]
    )
    assert 12 == sentiment_answers  # the 6 answered before the change count too
    assert 6 == version.class_counts["topic:food"] + version.class_counts["topic:travel"]
