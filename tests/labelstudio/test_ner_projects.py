"""Named-entity projects (`<Labels>` over `<Text>`) against a real Label Studio.

Label Studio counts `<Text>` span offsets in code points (model/spans.py): the predicted
spans are read back from the server and must cut the entity out of the task text with
Python's own indexing, accents and emoji before the entity included.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from aldaemon.store import Store
from tests.conftest import MakeProject
from tests.helpers import one_cycle, write_config
from tests.lsserver import LabelStudioClient, LabelStudioServer

pytestmark = pytest.mark.labelstudio

NER_CONFIG = """<View>
  <Labels name="ner" toName="text">
    <Label value="PER"/>
    <Label value="LOC"/>
  </Labels>
  <Text name="text" value="$text"/>
</View>"""

PEOPLE = ["José Núñez", "Zoë Brontë", "Renée Åberg", "Ola Nordmann", "Chloé Dupré"]
PLACES = ["Zürich", "Kraków", "Malmö", "Reykjavík", "Besançon"]
OPENERS = ["🎉 Yesterday", "Hier 🚀 soir,", "Today", "Ça va 😀! Then", "Last week"]


def sentence(rng: random.Random) -> tuple[str, list[tuple[int, int, str]]]:
    """A text and its gold spans (code-point offsets)."""
    opener, person, place = rng.choice(OPENERS), rng.choice(PEOPLE), rng.choice(PLACES)
    prefix = f"{opener} "
    middle = " flew to "
    text = f"{prefix}{person}{middle}{place} with friends ✈️."
    person_start = len(prefix)
    place_start = person_start + len(person) + len(middle)
    return text, [
        (person_start, person_start + len(person), "PER"),
        (place_start, place_start + len(place), "LOC"),
    ]


def annotate_spans(
    client: LabelStudioClient, task_id: int, text: str, spans: list[tuple[int, int, str]]
) -> None:
    result = [
        {
            "from_name": "ner",
            "to_name": "text",
            "type": "labels",
            "value": {"start": s, "end": e, "text": text[s:e], "labels": [label]},
        }
        for s, e, label in spans
    ]
    client.call("POST", f"/api/tasks/{task_id}/annotations/", {"result": result})


async def test_predicted_spans_appear_at_the_right_offsets_over_unicode_text(
    tmp_path: Path,
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
    make_project: MakeProject,
) -> None:
    rng = random.Random(12)
    examples = [sentence(rng) for _ in range(24)]
    examples.append(("Nothing happened here at all 🙂.", []))  # "no entity" trains too
    project_id = make_project([{"text": text} for text, _ in examples], label_config=NER_CONFIG)
    task_ids = ls_client.task_ids(project_id)
    annotated, pool = task_ids[:16], task_ids[16:]
    gold = dict(zip(task_ids, examples, strict=True))
    for task_id in annotated:
        annotate_spans(ls_client, task_id, *gold[task_id])
    annotate_spans(ls_client, task_ids[-1], *gold[task_ids[-1]])
    config = write_config(tmp_path, label_studio, project_id, predictions="queue_depth = 100")

    report = await one_cycle(config)
    assert report.outcome == "ok", report.error

    store = Store.open(config.state.dir, lock=False)
    version = store.list_versions(project_id)[-1]
    store.close()
    assert {"PER": 16, "LOC": 16} == version.class_counts
    assert 17 == version.n_labels

    predictions = {p["task"]: p for p in ls_client.predictions(project_id)}
    assert set(pool) - {task_ids[-1]} == set(predictions)
    for task_id, prediction in predictions.items():
        text, spans = gold[task_id]
        assert 0.0 <= prediction["score"] <= 1.0
        predicted = []
        for result in prediction["result"]:
            assert (result["from_name"], result["to_name"], result["type"]) == (
                "ner",
                "text",
                "labels",
            )
            value = result["value"]
            predicted.append((value["start"], value["end"], value["labels"][0]))
        assert sorted(spans) == sorted(predicted), (text, predicted)
        for start, end, _ in predicted:  # code points: Python's indexing cuts the entity out
            assert text[start:end] in PEOPLE + PLACES


async def test_cold_start_names_the_entity_label_short_of_spans(
    tmp_path: Path,
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
    make_project: MakeProject,
) -> None:
    """min_per_class counts annotated spans per entity label: LOC never annotated, no training."""
    rng = random.Random(3)
    examples = [sentence(rng) for _ in range(8)]
    project_id = make_project([{"text": text} for text, _ in examples], label_config=NER_CONFIG)
    annotated = ls_client.task_ids(project_id)[:6]
    for task_id, (text, spans) in zip(annotated, examples[:6], strict=True):
        annotate_spans(ls_client, task_id, text, [s for s in spans if s[2] == "PER"])
    config = write_config(tmp_path, label_studio, project_id)

    report = await one_cycle(config)

    assert ("idle", "cold start: 'LOC' has 0 of 2 labels") == (report.outcome, report.decision)
    assert not ls_client.predictions(project_id)
