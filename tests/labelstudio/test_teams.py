"""Labeling teams against a real Label Studio: label policies with several annotators,
ground truth, suspected label errors, the stop signal, and aldaemon's two team views."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog

from aldaemon.config import Config
from aldaemon.store import Store
from aldaemon.sync.team_views import CONFLICTS_VIEW_TITLE, SUSPECTS_VIEW_TITLE
from aldaemon.views.status import collect
from tests.conftest import MakeProject
from tests.helpers import make_tasks, make_users, one_cycle, write_config
from tests.lsserver import LabelStudioClient, LabelStudioServer

pytestmark = pytest.mark.labelstudio

POS = ["great", "lovely", "superb", "tasty", "fresh", "delicious", "perfect", "wonderful"]
NEG = ["awful", "stale", "broken", "rotten", "bland", "terrible", "soggy", "horrible"]
TEAM_RETRAIN = "min_new_annotations = 4\nmin_interval = 0\nmin_per_class = 2"


def separable_text(i: int, label: str) -> str:
    words = POS if label == "pos" else NEG
    return " ".join(words[(i + k) % len(words)] for k in range(4)) + f" item{i}"


MULTI_CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="topic" toName="text" choice="multiple">
    <Choice value="sports"/>
    <Choice value="politics"/>
    <Choice value="tech"/>
  </Choices>
</View>"""
TOPIC_WORDS = {
    "sports": ["goal", "match", "team", "coach", "league", "score"],
    "politics": ["vote", "senate", "party", "minister", "ballot", "law"],
    "tech": ["laptop", "software", "chip", "cloud", "server", "code"],
}


def topics_result(*topics: str) -> list[dict[str, object]]:
    if not topics:
        return []
    return [
        {
            "from_name": "topic",
            "to_name": "text",
            "type": "choices",
            "value": {"choices": list(topics)},
        }
    ]


def result(label: str) -> list[dict[str, object]]:
    return [
        {
            "from_name": "sentiment",
            "to_name": "text",
            "type": "choices",
            "value": {"choices": [label]},
        }
    ]


def import_annotated(
    client: LabelStudioClient,
    project_id: int,
    tasks: Sequence[tuple[str, Sequence[tuple[int, str]]]],
) -> list[int]:
    """Import (text, [(annotator, label), ...]) tasks; return their ids in order."""
    before = set(client.task_ids(project_id))
    body = [
        {
            "data": {"text": text},
            "annotations": [
                {"result": result(label), "completed_by": user, "ground_truth": False}
                for user, label in votes
            ],
        }
        for text, votes in tasks
    ]
    client.call("POST", f"/api/projects/{project_id}/import", body)
    return sorted(set(client.task_ids(project_id)) - before)


def team_config(tmp_path: Path, server: LabelStudioServer, project_id: int, *, team: str) -> Config:
    return write_config(tmp_path, server, project_id, retrain=TEAM_RETRAIN, predictions=team)


def views_titled(client: LabelStudioClient, project_id: int, title: str) -> list[dict[str, Any]]:
    views = client.call("GET", f"/api/dm/views/?project={project_id}")
    return [v for v in views if (v.get("data") or {}).get("title") == title]


def tasks_in_view(client: LabelStudioClient, project_id: int, title: str) -> list[int]:
    (view,) = views_titled(client, project_id, title)  # exactly one: never duplicated
    answer = client.call(
        "GET", f"/api/tasks/?project={project_id}&view={view['id']}&page_size=1000"
    )
    return sorted(int(task["id"]) for task in answer["tasks"])


def status_of(config: Config) -> dict[str, Any]:
    status: dict[str, Any] = collect(config)["projects"][0]
    return status


class TestLabelPolicies:
    def test_majority_withholds_ties_lists_them_and_ground_truth_settles_one(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        a, b, c = make_users(ls_client, 3)
        project_id = make_project([{"text": separable_text(100 + i, "pos")} for i in range(5)])
        agreed = [
            (separable_text(i, label), [(a, label), (b, label), (c, label)])
            for i, label in enumerate(["pos", "neg"] * 5)
        ]
        two_to_one = [(separable_text(20, "pos"), [(a, "pos"), (b, "pos"), (c, "neg")])]
        ties = [
            (separable_text(30, "pos"), [(a, "pos"), (b, "neg")]),
            (separable_text(31, "neg"), [(b, "pos"), (c, "neg")]),
        ]
        ids = import_annotated(ls_client, project_id, agreed + two_to_one + ties)
        tie_ids = ids[-2:]
        config = team_config(
            tmp_path, label_studio, project_id, team='[projects.labels]\npolicy = "majority"'
        )
        time.sleep(1.5)

        asyncio.run(one_cycle(config))
        status = status_of(config)
        assert status["withheld"] == {"tie": 2, "no_majority": 0, "not_unanimous": 0}
        assert status["labels"] == 11  # 10 agreed + the 2-to-1 task; ties do not train
        assert tasks_in_view(ls_client, project_id, CONFLICTS_VIEW_TITLE) == tie_ids

        # The lead settles one tie by marking an answer ground truth: it trains, the view
        # is rewritten (not duplicated) and lists only the other.
        settled = ls_client.get_task(tie_ids[0])["annotations"][0]["id"]
        ls_client.call("PATCH", f"/api/annotations/{settled}/", {"ground_truth": True})
        time.sleep(1.5)
        asyncio.run(one_cycle(config))
        asyncio.run(one_cycle(config))
        status = status_of(config)
        assert status["withheld"]["tie"] == 1
        assert status["labels"] == 12
        assert tasks_in_view(ls_client, project_id, CONFLICTS_VIEW_TITLE) == tie_ids[1:]

    def test_unanimous_withholds_any_disagreement(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        a, b, c = make_users(ls_client, 3)
        project_id = make_project()
        agreed = [
            (separable_text(i, label), [(a, label), (b, label)])
            for i, label in enumerate(["pos", "neg"] * 4)
        ]
        split = [(separable_text(40, "pos"), [(a, "pos"), (b, "pos"), (c, "neg")])]
        ids = import_annotated(ls_client, project_id, agreed + split)
        config = team_config(
            tmp_path, label_studio, project_id, team='[projects.labels]\npolicy = "unanimous"'
        )
        time.sleep(1.5)
        asyncio.run(one_cycle(config))
        status = status_of(config)
        assert status["withheld"] == {"tie": 0, "no_majority": 0, "not_unanimous": 1}
        assert status["labels"] == 8
        assert tasks_in_view(ls_client, project_id, CONFLICTS_VIEW_TITLE) == ids[-1:]

    def test_majority_votes_multilabel_answers_label_by_label(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        a, b, c = make_users(ls_client, 3)
        project_id = make_project(label_config=MULTI_CONFIG)
        answers = [("sports",), ("politics",), ("tech",), ("sports", "tech"), ()] * 3

        def text(i: int, topics: tuple[str, ...]) -> str:
            words = [TOPIC_WORDS[t][(i + k) % 6] for t in topics for k in range(3)]
            return " ".join([*words, "news", f"item{i}"])

        body: list[dict[str, object]] = [
            {
                "data": {"text": text(i, topics)},
                "annotations": [
                    {"result": topics_result(*topics), "completed_by": u, "ground_truth": False}
                    for u in (a, b, c)
                ],
            }
            for i, topics in enumerate(answers)
        ]
        # per label: sports 3/3, tech 2/3 -> (sports, tech); then a tie on politics (1 of 2)
        body.append(
            {
                "data": {"text": text(50, ("sports", "tech"))},
                "annotations": [
                    {"result": topics_result(*t), "completed_by": u, "ground_truth": False}
                    for u, t in ((a, ("sports", "tech")), (b, ("sports",)), (c, ("tech", "sports")))
                ],
            }
        )
        body.append(
            {
                "data": {"text": text(51, ("sports",))},
                "annotations": [
                    {"result": topics_result(*t), "completed_by": u, "ground_truth": False}
                    for u, t in ((a, ("sports",)), (b, ("sports", "politics")))
                ],
            }
        )
        ls_client.call("POST", f"/api/projects/{project_id}/import", body)
        ids = ls_client.task_ids(project_id)
        config = team_config(
            tmp_path, label_studio, project_id, team='[projects.labels]\npolicy = "majority"'
        )
        time.sleep(1.5)
        report = asyncio.run(one_cycle(config))
        assert report.version is not None and report.outcome == "ok"  # it trained
        status = status_of(config)
        assert status["withheld"]["tie"] == 1
        assert status["labels_per_class"]["tech"] == 3 + 3 + 1  # the 2-of-3 task counts
        assert tasks_in_view(ls_client, project_id, CONFLICTS_VIEW_TITLE) == ids[-1:]


class TestSuspectedLabelErrors:
    def test_a_flipped_label_shows_up_in_the_suspect_view(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        (a,) = make_users(ls_client, 1)
        project_id = make_project([{"text": separable_text(200 + i, "neg")} for i in range(10)])
        texts, labels = make_tasks(60)
        flipped = 6  # a "pos" review labeled "neg"
        tasks = [
            (
                str(task["text"]),
                [(a, ("neg" if label == "pos" else "pos") if i == flipped else label)],
            )
            for i, (task, label) in enumerate(zip(texts, labels, strict=True))
        ]
        ids = import_annotated(ls_client, project_id, tasks)
        config = team_config(tmp_path, label_studio, project_id, team="")
        time.sleep(1.5)
        with structlog.testing.capture_logs() as logs:
            report = asyncio.run(one_cycle(config))
        assert report.counts.get("suspected_label_errors", 0) >= 1, logs
        suspects = tasks_in_view(ls_client, project_id, SUSPECTS_VIEW_TITLE)
        assert ids[flipped] in suspects
        status = status_of(config)
        assert status["suspected_label_errors"] == len(suspects)
        assert status["suspected_label_error_task_ids"][0] == ids[flipped]
        assert any(e["event"] == "labels.suspected_errors" for e in logs)
        asyncio.run(one_cycle(config))  # nothing changed: the view stays one view
        assert ids[flipped] in tasks_in_view(ls_client, project_id, SUSPECTS_VIEW_TITLE)


class TestStopSignal:
    def test_fires_on_a_separable_set_holds_training_and_reopens_after_a_burst(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        labels = ["pos", "neg"] * 60
        project_id = make_project([{"text": separable_text(i, y)} for i, y in enumerate(labels)])
        ids = ls_client.task_ids(project_id)
        config = team_config(
            tmp_path,
            label_studio,
            project_id,
            team="[projects.stop]\nversions = 2\nstop_when_stable = true\nstop_set_size = 50\n"
            "reopen_fraction = 1.0",  # a burst: as many changes as the labels it trained on
        )
        annotations: dict[int, int] = {}
        stable_logs = []
        done = 0
        for _ in range(8):
            for i in range(done, done + 6):
                annotations[i] = ls_client.annotate(ids[i], labels[i])
            done += 6
            time.sleep(1.1)
            with structlog.testing.capture_logs() as logs:
                asyncio.run(one_cycle(config))
            stable_logs += [e for e in logs if e["event"] == "project.stable"]
            if status_of(config)["stable_since"]:
                break
        since = status_of(config)["stable_since"]
        assert since is not None
        assert len(stable_logs) == 1 and stable_logs[0]["stable_since"] == since

        # Stable and stop_when_stable: a few new labels do not retrain.
        for i in range(done, done + 4):
            annotations[i] = ls_client.annotate(ids[i], labels[i])
        time.sleep(1.1)
        held = asyncio.run(one_cycle(config))
        assert held.outcome == "idle", (held, status_of(config))
        assert held.decision and "stable since" in held.decision

        # A burst of changed labels (every label flipped) reopens it; the model changes
        # its mind on the stop set, so the project is no longer stable.
        for i, annotation_id in annotations.items():
            flipped = "neg" if labels[i] == "pos" else "pos"
            ls_client.call(
                "PATCH", f"/api/annotations/{annotation_id}/", {"result": result(flipped)}
            )
        time.sleep(1.1)
        with structlog.testing.capture_logs() as logs:
            reopened = asyncio.run(one_cycle(config))
        assert reopened.outcome == "ok" and "activated" in reopened.counts
        assert any(e["event"] == "project.reopened" for e in logs)
        assert status_of(config)["stable_since"] is None
        with Store.open(config.state.dir, lock=False) as store:
            assert store.stable_since(project_id) is None


class TestTeamViews:
    def test_a_deleted_team_view_comes_back_once_and_is_never_duplicated(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """A team view a person deleted is recreated on the next resync, or on the next
        cycle that rewrites its list, with one `view.recreated` warning each time."""
        a, b, c = make_users(ls_client, 3)
        project_id = make_project()
        agreed = [
            (separable_text(i, label), [(a, label), (b, label), (c, label)])
            for i, label in enumerate(["pos", "neg"] * 5)
        ]
        tie = [(separable_text(30, "pos"), [(a, "pos"), (b, "neg")])]
        ids = import_annotated(ls_client, project_id, agreed + tie)
        config = team_config(
            tmp_path, label_studio, project_id, team='[projects.labels]\npolicy = "majority"'
        )
        time.sleep(1.5)
        with structlog.testing.capture_logs() as logs:
            first = asyncio.run(one_cycle(config))
        assert first.outcome == "ok", logs
        titles = (CONFLICTS_VIEW_TITLE, SUSPECTS_VIEW_TITLE)
        first_ids = {t: views_titled(ls_client, project_id, t)[0]["id"] for t in titles}

        def delete(title: str) -> None:
            (view,) = views_titled(ls_client, project_id, title)
            ls_client.call("DELETE", f"/api/dm/views/{view['id']}/?project={project_id}")
            assert views_titled(ls_client, project_id, title) == []

        for title in titles:
            delete(title)
        with structlog.testing.capture_logs() as logs:
            asyncio.run(one_cycle(config, force_resync=True))  # nothing changed but a resync
        recreated = [e for e in logs if e["event"] == "view.recreated"]
        assert sorted(e["title"] for e in recreated) == sorted(titles)
        assert tasks_in_view(ls_client, project_id, CONFLICTS_VIEW_TITLE) == ids[-1:]
        for title in titles:
            assert views_titled(ls_client, project_id, title)[0]["id"] != first_ids[title]

        with structlog.testing.capture_logs() as logs:
            asyncio.run(one_cycle(config, force_resync=True))
        assert [e for e in logs if e["event"] == "view.recreated"] == []
        for title in titles:
            assert len(views_titled(ls_client, project_id, title)) == 1

        # Deleted again, and its list changes (a second tie) before any resync: the
        # rewrite finds it gone and creates it once more.
        delete(CONFLICTS_VIEW_TITLE)
        second_tie = import_annotated(
            ls_client, project_id, [(separable_text(31, "neg"), [(b, "pos"), (c, "neg")])]
        )
        time.sleep(1.5)
        with structlog.testing.capture_logs() as logs:
            asyncio.run(one_cycle(config))
        recreated = [e for e in logs if e["event"] == "view.recreated"]
        assert [e["title"] for e in recreated] == [CONFLICTS_VIEW_TITLE]
        assert tasks_in_view(ls_client, project_id, CONFLICTS_VIEW_TITLE) == ids[-1:] + second_tie
