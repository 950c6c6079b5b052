"""The ML backend route: checking /predict answers, picking and training a backend.

Unit tests cover the pure parts of `aldaemon.model.ml_backend` and `pick_backend`; the
`labelstudio` tests run the example backend (examples/ml_backend) as a real process,
connect it through Label Studio's own API and drive it as the daemon will.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sklearn.datasets import load_digits

from aldaemon.labelstudio import ml_backends
from aldaemon.labelstudio.ml_backends import MLBackend, MLBackendState
from aldaemon.model import ml_backend
from examples.ml_backend.images import DIGITS_LABEL_CONFIG, digit_to_data_url
from examples.ml_backend.process import BackendProcess
from tests.conftest import MakeProject
from tests.lsserver import LabelStudioClient, LabelStudioServer, free_port

labelstudio = pytest.mark.labelstudio

CHOICES_CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text"><Choice value="pos"/><Choice value="neg"/></Choices>
</View>"""
SPANS_CONFIG = """<View>
  <Labels name="ner" toName="text"><Label value="PER"/><Label value="ORG"/></Labels>
  <Text name="text" value="$text"/>
</View>"""
DIGITS_CONFIG = DIGITS_LABEL_CONFIG


def choice(label: str, score: float | None = None) -> dict[str, Any]:
    region: dict[str, Any] = {
        "from_name": "sentiment",
        "to_name": "text",
        "type": "choices",
        "value": {"choices": [label]},
    }
    if score is not None:
        region["score"] = score
    return region


def tasks(count: int) -> list[dict[str, Any]]:
    return [{"id": 100 + n, "data": {"text": f"task {n}"}} for n in range(count)]


class TestTaskScore:
    def test_the_prediction_score_is_the_task_score(self) -> None:
        """A top-level score wins over the regions' scores."""
        assert 0.3 == ml_backend.task_score({"score": 0.3, "result": [choice("pos", 0.9)]})

    def test_span_regions_without_a_top_level_score_give_their_minimum(self) -> None:
        """The least confident region decides a prediction that has no score of its own."""
        regions = [{"score": 0.8}, {"score": 0.2}, {"score": 0.5}]
        assert 0.2 == ml_backend.task_score({"result": regions})

    def test_no_score_anywhere_is_refused_saying_the_queue_cannot_be_sorted(self) -> None:
        """Neither the prediction nor a region scored: NoScore, naming the consequence."""
        with pytest.raises(ml_backend.NoScore, match="cannot sort the queue"):
            ml_backend.task_score({"result": [choice("pos")]})

    def test_a_non_numeric_score_counts_as_no_score(self) -> None:
        """A string, a boolean or NaN is not a score."""
        for bad in ("0.5", True, float("nan")):
            with pytest.raises(ml_backend.NoScore):
                ml_backend.task_score({"score": bad, "result": []})


class TestBatches:
    def test_tasks_are_cut_in_order_with_a_short_last_batch(self) -> None:
        """7 items in batches of 3 are 3 + 3 + 1, in order."""
        assert [[0, 1, 2], [3, 4, 5], [6]] == [list(b) for b in ml_backend.batches(range(7), 3)]

    def test_a_batch_size_below_one_is_refused(self) -> None:
        """A zero batch size would loop forever: it is a ValueError."""
        with pytest.raises(ValueError, match="batch_size"):
            list(ml_backend.batches([1], 0))


class TestPredictPayload:
    def test_the_payload_is_what_label_studio_sends(self) -> None:
        """tasks, "<id>.<epoch>" project, label_config and params, as ml/api_connector.py."""
        payload = ml_backend.predict_payload(
            tasks=tasks(1),
            project=ml_backend.project_uid(7, "2026-01-02T03:04:05.123456Z"),
            label_config=CHOICES_CONFIG,
        )
        assert {
            "tasks": tasks(1),
            "project": "7.1767323045",
            "label_config": CHOICES_CONFIG,
            "params": {"login": None, "password": None, "context": None},
        } == payload


class TestCheckAnswer:
    controls = ml_backend.config_controls(CHOICES_CONFIG)

    def check(self, results: list[Any], count: int) -> list[ml_backend.BackendPrediction]:
        return ml_backend.check_answer(
            {"results": results}, tasks=tasks(count), controls=self.controls
        )

    def test_one_result_per_task_gives_one_prediction_per_task_in_order(self) -> None:
        """Each prediction carries its task's id, result, score and version."""
        answer = [
            {"result": [choice("pos")], "score": 0.6, "model_version": "m1"},
            {"result": [choice("neg")], "score": 0.9, "model_version": "m1"},
        ]
        predictions = self.check(answer, 2)
        assert [(100, 0.6, "m1"), (101, 0.9, "m1")] == [
            (p.task_id, p.score, p.model_version) for p in predictions
        ]

    def test_fewer_results_than_tasks_is_a_short_answer(self) -> None:
        """Two results for three tasks: ShortAnswer, saying both counts."""
        answer = [{"result": [choice("pos")], "score": 0.5}] * 2
        with pytest.raises(ml_backend.ShortAnswer, match=r"2 result.* for 3 task"):
            self.check(answer, 3)

    def test_a_label_not_in_the_config_is_a_foreign_result(self) -> None:
        """Label Studio would drop "meh" silently; the check refuses it by name."""
        with pytest.raises(ml_backend.ForeignResult, match="'meh'"):
            self.check([{"result": [choice("meh")], "score": 0.5}], 1)

    def test_a_control_not_in_the_config_is_a_foreign_result(self) -> None:
        """A result for another config's control names the config's own controls."""
        region = {**choice("pos"), "from_name": "topic"}
        with pytest.raises(ml_backend.ForeignResult, match=r"'topic'.*sentiment"):
            self.check([{"result": [region], "score": 0.5}], 1)

    def test_a_result_for_another_object_is_a_foreign_result(self) -> None:
        """from_name right but to_name wrong is still another config."""
        region = {**choice("pos"), "to_name": "image"}
        with pytest.raises(ml_backend.ForeignResult, match="'image'"):
            self.check([{"result": [region], "score": 0.5}], 1)

    def test_span_labels_are_checked_and_scored_by_their_least_confident_region(self) -> None:
        """Spans: labels from <Labels>, offsets are free values, score = minimum region."""
        controls = ml_backend.config_controls(SPANS_CONFIG)
        regions = [
            {"from_name": "ner", "to_name": "text", "type": "labels", "score": s,
             "value": {"start": 0, "end": 3, "text": "Ann", "labels": [label]}}
            for label, s in (("PER", 0.9), ("ORG", 0.4))
        ]  # fmt: skip
        [prediction] = ml_backend.check_answer(
            {"results": [{"result": regions}]}, tasks=tasks(1), controls=controls
        )
        assert 0.4 == prediction.score

    def test_an_answer_without_results_is_rejected(self) -> None:
        """A body without a "results" list is not an answer."""
        with pytest.raises(ml_backend.BackendAnswerRejected, match="results"):
            ml_backend.check_answer({"predictions": []}, tasks=tasks(1), controls=self.controls)


def backend(backend_id: int, title: str = "model") -> MLBackend:
    return MLBackend(
        id=backend_id,
        project=1,
        title=title,
        url=f"http://127.0.0.1:{9000 + backend_id}",
        state=MLBackendState.CONNECTED,
        error_message=None,
        model_version="v1",
    )


class TestPickBackend:
    def test_the_single_connected_backend_is_picked_without_an_id(self) -> None:
        """One backend and no ml_backend_id: that one."""
        assert 3 == ml_backends.pick_backend([backend(3)], ml_backend_id=None).id

    def test_several_backends_without_an_id_name_their_ids_and_titles(self) -> None:
        """The error lists each backend so the operator can set ml_backend_id."""
        with pytest.raises(ml_backends.MLBackendSelectionError) as caught:
            ml_backends.pick_backend([backend(3, "bert"), backend(4, "svm")], ml_backend_id=None)
        assert all(part in str(caught.value) for part in ("id 3", "'bert'", "id 4", "'svm'"))

    def test_no_backend_says_none_is_connected(self) -> None:
        """An empty list: a clear error saying how to connect one."""
        with pytest.raises(ml_backends.MLBackendSelectionError, match="no ML backend"):
            ml_backends.pick_backend([], ml_backend_id=None)

    def test_an_id_picks_that_backend_among_several(self) -> None:
        """ml_backend_id chooses."""
        assert 4 == ml_backends.pick_backend([backend(3), backend(4)], ml_backend_id=4).id

    def test_an_unknown_id_is_an_error_listing_the_connected_ones(self) -> None:
        """ml_backend_id = 9 with 3 connected names 3."""
        with pytest.raises(ml_backends.MLBackendSelectionError, match=r"9.*id 3"):
            ml_backends.pick_backend([backend(3)], ml_backend_id=9)


# ---- against a real Label Studio and the example backend as a process ------------------

StartBackend = Callable[..., str]


@pytest.fixture
def start_backend(label_studio: LabelStudioServer) -> Iterator[StartBackend]:
    """Factory: start the example backend with extra env flags; returns its URL."""
    backends: list[BackendProcess] = []

    def start(**flags: str) -> str:
        backend = BackendProcess(
            port=free_port(),
            label_studio_url=label_studio.url,
            api_key=label_studio.legacy_token,
            flags=flags,
        )
        backends.append(backend.start())
        return backend.url

    yield start
    for backend in backends:
        backend.stop()


@pytest_asyncio.fixture(loop_scope="function")  # the tests' own loop, not the session's
async def ls_http(label_studio: LabelStudioServer) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client prepared as the gateway will: base URL and auth header."""
    async with httpx.AsyncClient(
        base_url=label_studio.url,
        headers={"Authorization": f"Token {label_studio.legacy_token}"},
        timeout=150,
    ) as client:
        yield client


def digits_project(make_project: MakeProject, ls_client: LabelStudioClient, *, count: int,
                   annotated: int) -> tuple[int, list[int]]:  # fmt: skip
    """A digits project of `count` tasks, the first `annotated` labelled with the truth."""
    digits = load_digits()
    project_id = make_project(
        [{"image": digit_to_data_url(digits.data[n])} for n in range(count)],
        label_config=DIGITS_CONFIG,
    )
    task_ids = ls_client.task_ids(project_id)
    for n, task_id in enumerate(task_ids[:annotated]):
        label = str(digits.target[n])
        ls_client.annotate(task_id, label, from_name="digit", to_name="image")
    return project_id, task_ids


def connect(ls_client: LabelStudioClient, project_id: int, url: str, title: str) -> int:
    """Connect a backend with Label Studio's own API, as a user would."""
    answer = ls_client.call("POST", "/api/ml", {"url": url, "project": project_id, "title": title})
    return int(answer["id"])


def unlabeled_tasks(ls_client: LabelStudioClient, project_id: int) -> list[dict[str, Any]]:
    answer = ls_client.call("GET", f"/api/tasks/?project={project_id}&fields=all&page_size=1000")
    return [
        {"id": task["id"], "data": task["data"]}
        for task in answer["tasks"]
        if task["total_annotations"] == 0
    ]


async def score_directly(
    ls_http: httpx.AsyncClient, backend_url: str, project_id: int, pool: list[dict[str, Any]],
    *, batch_size: int, done: list[int] | None = None,
) -> list[ml_backend.BackendPrediction]:  # fmt: skip
    project = await ml_backends.project_for_backend(ls_http, project_id=project_id)

    async def record(number: int, predictions: list[ml_backend.BackendPrediction]) -> None:
        if done is not None:
            done.append(number)

    async with httpx.AsyncClient() as backend_http:
        return await ml_backend.predict_all(
            backend_http,
            url=backend_url,
            tasks=pool,
            project=ml_backend.project_uid(project.id, project.created_at),
            label_config=project.label_config,
            batch_size=batch_size,
            timeout=30,
            on_batch=record,
        )


@labelstudio
class TestExampleBackendThroughLabelStudio:
    async def test_training_through_label_studio_moves_the_version_and_scores_every_task(
        self,
        make_project: MakeProject,
        ls_client: LabelStudioClient,
        ls_http: httpx.AsyncClient,
        start_backend: StartBackend,
    ) -> None:
        """Connect, pick, train from annotations, then one scored prediction per task."""
        project_id, _ = digits_project(make_project, ls_client, count=40, annotated=20)
        backend_id = connect(ls_client, project_id, start_backend(), "digits")

        picked = await ml_backends.find_backend(ls_http, project_id=project_id)
        outcome = await ml_backends.train_backend(ls_http, backend_id=picked.id)
        pool = unlabeled_tasks(ls_client, project_id)
        done: list[int] = []
        predictions = await score_directly(
            ls_http, picked.url, project_id, pool, batch_size=7, done=done
        )

        assert backend_id == picked.id
        assert ("example-untrained", "example-1") == (outcome.version_before, outcome.version_after)
        assert MLBackendState.CONNECTED == outcome.backend.state
        assert [0, 1, 2] == done
        assert [task["id"] for task in pool] == [p.task_id for p in predictions]
        assert all(0.1 <= p.score <= 1 and p.model_version == "example-1" for p in predictions)

    async def test_a_failed_training_surfaces_the_backends_message(
        self,
        make_project: MakeProject,
        ls_client: LabelStudioClient,
        ls_http: httpx.AsyncClient,
        start_backend: StartBackend,
    ) -> None:
        """FAIL_TRAINING=1: Label Studio's ER state carries the backend's own words."""
        project_id, _ = digits_project(make_project, ls_client, count=6, annotated=4)
        backend_id = connect(ls_client, project_id, start_backend(FAIL_TRAINING="1"), "fails")

        with pytest.raises(ml_backends.MLBackendTrainingFailed) as caught:
            await ml_backends.train_backend(ls_http, backend_id=backend_id)

        assert "FAIL_TRAINING is set: this backend refuses to train" in str(caught.value)

    async def test_several_connected_backends_without_an_id_are_named(
        self,
        make_project: MakeProject,
        ls_client: LabelStudioClient,
        ls_http: httpx.AsyncClient,
        start_backend: StartBackend,
    ) -> None:
        """Two backends on one project: the error names both ids and titles."""
        project_id, _ = digits_project(make_project, ls_client, count=2, annotated=0)
        url = start_backend()
        first = connect(ls_client, project_id, url, "first")
        second = connect(ls_client, project_id, url, "second")

        with pytest.raises(ml_backends.MLBackendSelectionError) as caught:
            await ml_backends.find_backend(ls_http, project_id=project_id)

        assert f"id {first} 'first'" in str(caught.value)
        assert f"id {second} 'second'" in str(caught.value)

    async def test_a_short_answer_is_refused(
        self,
        make_project: MakeProject,
        ls_client: LabelStudioClient,
        ls_http: httpx.AsyncClient,
        start_backend: StartBackend,
    ) -> None:
        """SHORT_ANSWER=1: one result fewer than tasks is ShortAnswer, batch 0 not done."""
        project_id, _ = digits_project(make_project, ls_client, count=5, annotated=0)
        url = start_backend(SHORT_ANSWER="1")
        done: list[int] = []

        with pytest.raises(ml_backend.ShortAnswer, match=r"4 result.* for 5 task"):
            await score_directly(
                ls_http, url, project_id, unlabeled_tasks(ls_client, project_id),
                batch_size=10, done=done,
            )  # fmt: skip

        assert [] == done

    async def test_a_backend_without_scores_is_refused(
        self,
        make_project: MakeProject,
        ls_client: LabelStudioClient,
        ls_http: httpx.AsyncClient,
        start_backend: StartBackend,
    ) -> None:
        """NO_SCORE=1, before any training: NoScore, the queue cannot be sorted."""
        project_id, _ = digits_project(make_project, ls_client, count=3, annotated=0)
        url = start_backend(NO_SCORE="1")

        with pytest.raises(ml_backend.NoScore, match="cannot sort the queue"):
            await score_directly(
                ls_http, url, project_id, unlabeled_tasks(ls_client, project_id), batch_size=2
            )
