"""A label renamed in the labeling config (`neg` -> `negative`) while the active version
predicts it: within the next cycle no prediction of the active version carries `neg`, and
the queue is still sorted (issue 11, item 7). The new label's cold start holds the next
training back, so without the republish the old version would stay active with `neg`."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from aldaemon.service.runtime import Runtime
from tests.helpers import (
    annotate_some,
    captured_events,
    choices_config,
    events,
    make_tasks,
    write_config,
)
from tests.lsserver import LabelStudioClient, LabelStudioServer

pytestmark = pytest.mark.labelstudio


@dataclass
class Renamed:
    project_id: int = 0
    labels_before: set[str] = field(default_factory=set)  # the active version's, before
    active_before: str = ""
    active_after: str = ""
    labels_after: list[str] = field(default_factory=list)  # one per prediction, "" = none
    scores_after: dict[int, float] = field(default_factory=dict)  # task id: score
    queue: list[int] = field(default_factory=list)  # the queue view's task ids, in order
    unlabeled: int = 0
    served_first: int | None = None  # the task Label Studio's /next serves
    logs: list[MutableMapping[str, Any]] = field(default_factory=list)


def active_predictions(client: LabelStudioClient, project_id: int) -> list[dict[str, Any]]:
    active = client.get_project(project_id)["model_version"]
    return [p for p in client.predictions(project_id) if p["model_version"] == active]


def chosen(prediction: dict[str, Any]) -> str:
    """The label a prediction shows, "" when it shows none."""
    result = prediction["result"]
    return str(result[0]["value"]["choices"][0]) if result else ""


@pytest.fixture(scope="class")
def renamed(
    tmp_path_factory: pytest.TempPathFactory,
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
) -> Renamed:
    tasks, labels = make_tasks(24, seed=11)
    seen = Renamed()
    seen.project_id = ls_client.create_project(
        title="label renamed", label_config=choices_config(["pos", "neg"])
    )
    task_ids = ls_client.import_tasks(seen.project_id, tasks)
    annotate_some(ls_client, task_ids, labels, 8)
    config = write_config(tmp_path_factory.mktemp("renamed"), label_studio, seen.project_id)

    async def run() -> None:
        async with Runtime(config) as runtime:
            (project,) = runtime.config.projects
            await runtime.run_cycle(project)
            seen.active_before = ls_client.get_project(seen.project_id)["model_version"]
            seen.labels_before = {chosen(p) for p in active_predictions(ls_client, seen.project_id)}
            ls_client.call(
                "PATCH",
                f"/api/projects/{seen.project_id}/",
                {"label_config": choices_config(["pos", "negative"])},
            )
            await runtime.run_cycle(project)
            await runtime.run_cycle(project)  # nothing more happens: logged once
            await runtime.wait_for_prunes()
            assert runtime.store is not None
            view_id = runtime.store.get_meta(seen.project_id).view_id
        seen.active_after = ls_client.get_project(seen.project_id)["model_version"]
        predictions = active_predictions(ls_client, seen.project_id)
        seen.labels_after = [chosen(p) for p in predictions]
        seen.scores_after = {int(p["task"]): float(p["score"]) for p in predictions}
        listing = ls_client.call(
            "GET", f"/api/tasks/?view={view_id}&fields=all&include=id&page_size=1000"
        )
        seen.queue = [int(task["id"]) for task in listing["tasks"]]
        seen.unlabeled = len(task_ids) - 8
        served = ls_client.call("GET", f"/api/projects/{seen.project_id}/next")
        seen.served_first = int(served["id"])

    with captured_events() as logs:
        asyncio.run(run())
    seen.logs = list(logs)
    return seen


class TestRenamedLabel:
    def test_the_active_version_predicted_the_old_name(self, renamed: Renamed) -> None:
        """Before the rename the active version predicts both labels, so the checks below
        can fail."""
        assert {"pos", "neg"} == renamed.labels_before

    def test_no_prediction_of_the_active_version_carries_the_removed_label(
        self, renamed: Renamed
    ) -> None:
        """After the next cycle the active version is a new one of aldaemon's, every
        unlabeled task has a prediction of it, and none says 'neg'."""
        assert {
            "active is a new aldaemon version": True,
            "predictions": renamed.unlabeled,
            "carrying neg": 0,
        } == {
            "active is a new aldaemon version": renamed.active_after.startswith("aldaemon-v")
            and renamed.active_after != renamed.active_before,
            "predictions": len(renamed.labels_after),
            "carrying neg": renamed.labels_after.count("neg"),
        }

    def test_what_the_model_still_may_say_is_kept(self, renamed: Renamed) -> None:
        """Predictions of 'pos' stay; those of 'neg' show no label (the model does not know
        'negative' yet)."""
        assert {"pos", ""} == set(renamed.labels_after)

    def test_the_queue_is_still_sorted_by_score(self, renamed: Renamed) -> None:
        """The queue view lists every unlabeled task, lowest score first, and Label
        Studio serves the lowest-scored task next."""
        scores = [renamed.scores_after[task_id] for task_id in renamed.queue]
        assert {"listed": renamed.unlabeled, "sorted": True, "served first": min(scores)} == {
            "listed": len(renamed.queue),
            "sorted": scores == sorted(scores),
            "served first": renamed.scores_after.get(renamed.served_first or -1),
        }

    def test_it_is_logged_once(self, renamed: Renamed) -> None:
        """One `version.republished` names the old version, the new one and the label."""
        found = [
            (e["republished"], e["version"], e["without_labels"])
            for e in events(renamed.logs, "version.republished")
        ]
        assert [(renamed.active_before, renamed.active_after, ["neg"])] == found
