"""LabelStudioGateway against the real Label Studio, plus its pure helpers.

Label Studio behaviour is tested against the server the suite starts (tests/conftest.py).
A tiny aiohttp server stands in only for what the real one cannot do on demand: answer 503.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qs

import httpx
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from aldaemon.errors import (
    LabelStudioAuthError,
    LabelStudioRefused,
    LabelStudioUnreachable,
    ProjectNotFound,
)
from aldaemon.labelstudio import LabelStudioGateway, parse_labeling_config
from aldaemon.labelstudio.auth import TokenKind, access_lifetime, token_kind
from aldaemon.labelstudio.failures import MEMORY_EFFICIENT_IMPORT_FLAG, to_labelstudio_error
from aldaemon.labelstudio.http import RequestTally, count_requests
from aldaemon.labelstudio.payloads import (
    choices_result,
    prediction_payloads,
    server_message,
    task_query,
)
from aldaemon.labelstudio.retry import HttpStatusError, Replay, backoff_seconds, is_retryable
from aldaemon.records import PredictionRecord
from aldaemon.secret import Secret
from aldaemon.sync.timestamps import format_ls_datetime, parse_ls_datetime
from demo.labelstudio import DemoGateway
from tests.conftest import MakeProject
from tests.faultproxy import FaultProxy
from tests.helpers import changed_tasks
from tests.lsserver import (
    DEFAULT_LABEL_CONFIG,
    ExternalLabelStudioServer,
    LabelStudioClient,
    LabelStudioServer,
    free_port,
)

SCHEMA = parse_labeling_config(DEFAULT_LABEL_CONFIG)


QUEUE_VIEW = {
    "title": "Active learning queue",
    "filters": {"conjunction": "and", "items": []},
    "ordering": ["tasks:predictions_score"],
    "hiddenColumns": {"explore": [], "labeling": []},
}

labelstudio = pytest.mark.labelstudio


def _b64(claims: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()


def forged_pat() -> str:
    """A refresh JWT with the right shape and a signature Label Studio will reject."""
    now = int(time.time())
    claims = {"token_type": "refresh", "exp": now + 86400, "iat": now, "jti": "0" * 32}
    return f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64(claims)}.c2lnbmF0dXJl"


def gateway(server: LabelStudioServer, token: str) -> LabelStudioGateway:
    return LabelStudioGateway(url=server.url, token=Secret(token))


def predictions_for(task_ids: list[int], label: str = "pos") -> list[PredictionRecord]:
    return [PredictionRecord(task_id=t, label=label, score=0.5) for t in task_ids]


def texts(count: int) -> list[dict[str, object]]:
    return [{"text": f"text number {number}"} for number in range(count)]


# ---- authentication -------------------------------------------------------------------


@labelstudio
class TestAuthentication:
    async def test_personal_access_token_works(self, label_studio: LabelStudioServer) -> None:
        """A personal access token is exchanged for an access token and accepted."""
        async with gateway(label_studio, label_studio.pat) as gw:
            await gw.check_auth()

            assert 2 == gw.request_count  # the refresh, then the call

    async def test_legacy_token_works(self, label_studio: LabelStudioServer) -> None:
        """A legacy token is sent as is and accepted with a single request."""
        async with gateway(label_studio, label_studio.legacy_token) as gw:
            await gw.check_auth()

            assert 1 == gw.request_count

    async def test_access_token_is_reused_between_calls(
        self, label_studio: LabelStudioServer
    ) -> None:
        """A PAT is exchanged once, not before every request."""
        async with gateway(label_studio, label_studio.pat) as gw:
            for _ in range(5):
                await gw.check_auth()

            assert 6 == gw.request_count

    async def test_wrong_legacy_token_fails_at_once(self, label_studio: LabelStudioServer) -> None:
        """A wrong legacy token is an auth error after exactly one request, no retries."""
        async with gateway(label_studio, "wrong-token-0123456789") as gw:
            with pytest.raises(LabelStudioAuthError):
                await gw.check_auth()

            assert 1 == gw.request_count

    async def test_wrong_personal_access_token_fails_at_once(
        self, label_studio: LabelStudioServer
    ) -> None:
        """A PAT Label Studio did not sign fails at the refresh, after exactly one request."""
        async with gateway(label_studio, forged_pat()) as gw:
            with pytest.raises(LabelStudioAuthError):
                await gw.check_auth()

            assert 1 == gw.request_count

    async def test_auth_error_explains_what_to_check(self, label_studio: LabelStudioServer) -> None:
        """The auth error tells the operator to check the token file and the token kind."""
        async with gateway(label_studio, forged_pat()) as gw:
            with pytest.raises(LabelStudioAuthError) as caught:
                await gw.check_auth()

        assert "check the token file" in str(caught.value)

    @pytest.mark.parametrize("kind", ["legacy", "pat"])
    async def test_token_never_appears_in_errors(
        self, label_studio: LabelStudioServer, kind: str
    ) -> None:
        """Neither str() nor repr() of the raised error, nor its cause, shows the token."""
        token = "wrong-legacy-token-abcdef" if kind == "legacy" else forged_pat()
        async with gateway(label_studio, token) as gw:
            with pytest.raises(LabelStudioAuthError) as caught:
                await gw.get_project(1)

        shown = " ".join(
            [str(caught.value), repr(caught.value), repr(caught.value.__cause__), repr(gw)]
        )
        assert token not in shown

    async def test_missing_project_is_project_not_found(
        self, label_studio: LabelStudioServer
    ) -> None:
        """A project id Label Studio does not know raises ProjectNotFound."""
        async with gateway(label_studio, label_studio.pat) as gw:
            with pytest.raises(ProjectNotFound):
                await gw.get_project(987654)


# ---- counting requests per block of work ---------------------------------------------------


async def checks_counted(gw: LabelStudioGateway, times: int) -> RequestTally:
    """`times` single-request calls inside their own counting block."""
    with count_requests() as tally:
        for _ in range(times):
            await gw.check_auth()
    return tally


@labelstudio
class TestCountRequests:
    async def test_concurrent_blocks_count_only_their_own_requests(
        self, label_studio: LabelStudioServer
    ) -> None:
        """Two blocks running at once on one gateway each count their own requests."""
        async with gateway(label_studio, label_studio.legacy_token) as gw:
            two, three = await asyncio.gather(checks_counted(gw, 2), checks_counted(gw, 3))

            assert (2, 3, 5) == (two.requests, three.requests, gw.request_count)

    async def test_nested_blocks_both_count(self, label_studio: LabelStudioServer) -> None:
        """A request inside a nested block counts in the inner and the outer block."""
        async with gateway(label_studio, label_studio.legacy_token) as gw:
            with count_requests() as outer:
                await gw.check_auth()
                inner = await checks_counted(gw, 2)

            assert (3, 2) == (outer.requests, inner.requests)

    async def test_task_outliving_its_block_stops_counting(
        self, label_studio: LabelStudioServer
    ) -> None:
        """A task started inside a block that sends after the block ended is not counted."""
        async with gateway(label_studio, label_studio.legacy_token) as gw:
            block_ended = asyncio.Event()

            async def check_later() -> None:
                await block_ended.wait()
                await gw.check_auth()

            with count_requests() as tally:
                late = asyncio.create_task(check_later())
            block_ended.set()
            await late

            assert (0, 1) == (tally.requests, gw.request_count)


# ---- reading tasks and annotations ------------------------------------------------------


@labelstudio
class TestFetchChangedTasks:
    async def test_annotations_carry_their_label(
        self,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """An annotation choosing 'neg' is read back with label 'neg' on its task."""
        project_id = make_project(texts(2))
        task_id = ls_client.task_ids(project_id)[0]
        annotation_id = ls_client.annotate(task_id, "neg")

        async with gateway(label_studio, label_studio.pat) as gw:
            tasks = await changed_tasks(gw, project_id, schema=SCHEMA, updated_after=None)

        annotations = {a.id: (a.task_id, a.label) for t in tasks for a in t.annotations}
        assert {annotation_id: (task_id, "neg")} == annotations

    async def test_task_text_comes_from_the_configured_field(
        self, label_studio: LabelStudioServer, make_project: MakeProject
    ) -> None:
        """Each task's text is its data[text_field]."""
        project_id = make_project([{"text": "first"}, {"text": "second"}])

        async with gateway(label_studio, label_studio.pat) as gw:
            tasks = await changed_tasks(gw, project_id, schema=SCHEMA, updated_after=None)

        assert ["first", "second"] == [task.text for task in tasks]

    async def test_skip_is_cancelled_without_label(
        self,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """A skipped task's annotation is was_cancelled with label None."""
        project_id = make_project(texts(1))
        task_id = ls_client.task_ids(project_id)[0]
        ls_client.annotate(task_id, "pos", was_cancelled=True)

        async with gateway(label_studio, label_studio.pat) as gw:
            tasks = await changed_tasks(gw, project_id, schema=SCHEMA, updated_after=None)

        assert [(True, None)] == [(a.was_cancelled, a.label) for a in tasks[0].annotations]

    async def test_updated_after_returns_only_later_changes(
        self,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """Only tasks changed after the watermark are returned."""
        project_id = make_project(texts(3))
        first, second, _ = ls_client.task_ids(project_id)
        ls_client.annotate(first, "pos")
        watermark = ls_client.get_task(first)["updated_at"]
        ls_client.annotate(second, "neg")

        async with gateway(label_studio, label_studio.pat) as gw:
            tasks = await changed_tasks(gw, project_id, schema=SCHEMA, updated_after=watermark)

        assert [second] == [task.id for task in tasks]

    async def test_watermark_without_fraction_is_accepted(
        self, label_studio: LabelStudioServer, make_project: MakeProject
    ) -> None:
        """A watermark spelled without microseconds (as LS itself may write it) works."""
        project_id = make_project(texts(2))

        async with gateway(label_studio, label_studio.pat) as gw:
            tasks = await changed_tasks(
                gw, project_id, schema=SCHEMA, updated_after="2000-01-01T00:00:00Z"
            )

        assert 2 == len(tasks)

    async def test_paging_returns_every_task_exactly_once(
        self,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """With a small page size, paging by id returns each task once, in id order."""
        project_id = make_project(texts(7))

        async with gateway(label_studio, label_studio.pat) as gw:
            tasks = await changed_tasks(
                gw, project_id, schema=SCHEMA, updated_after=None, page_size=2
            )

        assert ls_client.task_ids(project_id) == [task.id for task in tasks]

    async def test_paging_sends_one_request_per_page(
        self, label_studio: LabelStudioServer, make_project: MakeProject
    ) -> None:
        """Seven tasks at two per page cost four pages, not a fifth empty one, and one
        request for the highest id (where a read of the whole project ends), asked after
        the first page."""
        project_id = make_project(texts(7))

        async with gateway(label_studio, label_studio.legacy_token) as gw:
            await changed_tasks(gw, project_id, schema=SCHEMA, updated_after=None, page_size=2)

            assert 1 + 4 == gw.request_count

    async def test_idle_poll_costs_one_request(
        self,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """Polling with the newest updated_at as watermark finds nothing in one request."""
        project_id = make_project(texts(3))
        ls_client.annotate(ls_client.task_ids(project_id)[1], "pos")

        async with gateway(label_studio, label_studio.legacy_token) as gw:
            tasks = await changed_tasks(gw, project_id, schema=SCHEMA, updated_after=None)
            newest = max(task.updated_at for task in tasks)
            before = gw.request_count
            idle = await changed_tasks(gw, project_id, schema=SCHEMA, updated_after=newest)

            assert ([], 1) == (idle, gw.request_count - before)

    async def test_deleted_annotation_is_gone_from_its_task(
        self,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """After an annotation is deleted, its task is re-read without it."""
        project_id = make_project(texts(1))
        task_id = ls_client.task_ids(project_id)[0]
        annotation_id = ls_client.annotate(task_id, "pos")
        watermark = ls_client.get_task(task_id)["updated_at"]
        ls_client.delete_annotation(annotation_id)

        async with gateway(label_studio, label_studio.pat) as gw:
            tasks = await changed_tasks(gw, project_id, schema=SCHEMA, updated_after=watermark)

        assert [(task_id, ())] == [(task.id, task.annotations) for task in tasks]


@labelstudio
class TestListTaskIds:
    async def test_lists_every_id_across_pages(
        self,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """All task ids come back, ascending, with a page size smaller than the project."""
        project_id = make_project(texts(5))

        async with gateway(label_studio, label_studio.pat) as gw:
            ids = list(await gw.list_task_ids(project_id, page_size=2))

        assert ls_client.task_ids(project_id) == ids

    async def test_a_whole_project_is_read_in_bounded_id_windows(
        self,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """Ids are global, so a project's tasks may be far apart: two projects imported in
        turns, 3 tasks at a time, interleave their ids. Both the id listing and the first
        read still return every task once, and every page after the first asks for an id
        window (an upper bound as well as a lower one), which is what keeps Label Studio's
        per-page totals to one window instead of the rest of the project."""
        ours, other = make_project(texts(0)), make_project(texts(0))
        for _ in range(5):
            ls_client.import_tasks(ours, texts(3))
            ls_client.import_tasks(other, texts(3))
        expected = ls_client.task_ids(ours)

        with FaultProxy(label_studio.url) as proxy:
            server = ExternalLabelStudioServer(
                url=proxy.url, legacy_token=label_studio.legacy_token, pat=label_studio.pat
            )
            async with gateway(server, label_studio.legacy_token) as gw:
                listed = list(await gw.list_task_ids(ours, page_size=2))
                read = await changed_tasks(gw, ours, schema=SCHEMA, updated_after=None, page_size=2)
            queries = [json.loads(parse_qs(seen.query)["query"][0]) for seen in proxy.requests()]

        assert (expected, expected) == (listed, [task.id for task in read])
        bounded = [
            any(item["operator"] == "less_or_equal" for item in q["filters"]["items"])
            for q in queries
        ]
        half = len(queries) // 2
        for scan in (bounded[:half], bounded[half:]):
            # the first page, then the highest id: by id alone; every window after them
            assert [False, False] == scan[:2]
            assert all(scan[2:]) and len(scan) > 3

    async def test_deleted_task_is_not_listed(
        self,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """A task deleted in Label Studio no longer appears in the id listing."""
        project_id = make_project(texts(3))
        first, second, third = ls_client.task_ids(project_id)

        ls_client.call("DELETE", f"/api/tasks/{second}/")
        async with gateway(label_studio, label_studio.pat) as gw:
            ids = list(await gw.list_task_ids(project_id))

        assert [first, third] == ids


@labelstudio
class TestTasksHoldingVersion:
    async def test_lists_the_tasks_of_one_version_across_pages(
        self,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """Paged by id, exactly the tasks holding a prediction of the version come back,
        not those of a version whose name merely contains it ("v1" inside "v10")."""
        project_id = make_project(texts(7))
        ids = ls_client.task_ids(project_id)

        async with gateway(label_studio, label_studio.pat) as gw:
            for version, chosen in (("aldaemon-v1", ids[:4]), ("aldaemon-v10", ids[2:6])):
                await gw.import_predictions(
                    project_id,
                    model_version=version,
                    schema=SCHEMA,
                    predictions=[
                        PredictionRecord(task_id=t, label="pos", score=0.5) for t in chosen
                    ],
                )
            holding = await gw.tasks_holding_version(project_id, "aldaemon-v1", page_size=2)

        assert set(ids[:4]) == holding


# ---- tasks Label Studio cannot serve ------------------------------------------------------

UNSERVABLE_TEXT = "broken \ud800 text"  # valid JSON ("\ud800"), not encodable as UTF-8
POISONED = (3, 15)  # positions of the unservable tasks among TWENTY
TWENTY = 20


def poisoned_texts() -> list[dict[str, object]]:
    return [
        {"text": UNSERVABLE_TEXT if number in POISONED else f"text number {number}"}
        for number in range(TWENTY)
    ]


def searching_gateway(server: LabelStudioServer) -> LabelStudioGateway:
    """Legacy token (no refresh in the request counts), two attempts, short waits."""
    return LabelStudioGateway(
        url=server.url, token=Secret(server.legacy_token), max_attempts=2, max_backoff=0.05
    )


@labelstudio
class TestUnreadableTasks:
    """One task whose text holds a lone surrogate makes Label Studio 1.23.2 answer 500 to
    every listing with data that includes it; the poll reads around it."""

    async def test_other_tasks_come_back_with_their_annotations(
        self,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """Of twenty tasks with two unservable, the eighteen others are read, annotated."""
        project_id = make_project(poisoned_texts())
        ids = ls_client.task_ids(project_id)
        ls_client.annotate(ids[2], "neg")
        ls_client.annotate(ids[16], "pos")
        ls_client.annotate(ids[POISONED[0]], "pos")

        async with searching_gateway(label_studio) as gw:
            tasks = await changed_tasks(gw, project_id, schema=SCHEMA, updated_after=None)

        labels = {ids[2]: ["neg"], ids[16]: ["pos"]}
        expected = {
            task_id: labels.get(task_id, [])
            for number, task_id in enumerate(ids)
            if number not in POISONED
        }
        assert expected == {task.id: [a.label for a in task.annotations] for task in tasks}

    async def test_each_unreadable_task_is_logged_once_with_what_to_do(
        self,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """Each skipped task is one error line naming it and the fix; nothing else errs."""
        project_id = make_project(poisoned_texts())
        ids = ls_client.task_ids(project_id)

        async with searching_gateway(label_studio) as gw:
            with capture_logs() as logs:
                await changed_tasks(gw, project_id, schema=SCHEMA, updated_after=None)

        expected = [
            (
                "labelstudio.task_unreadable",
                project_id,
                ids[number],
                f"fix or delete task {ids[number]} in Label Studio; aldaemon skips it until then",
            )
            for number in POISONED
        ]
        errors = [
            (entry["event"], entry.get("project_id"), entry.get("task_id"), entry.get("action"))
            for entry in logs
            if entry["log_level"] == "error"
        ]
        assert expected == errors

    async def test_search_costs_a_bounded_number_of_requests(
        self, label_studio: LabelStudioServer, make_project: MakeProject
    ) -> None:
        """Finding k unservable tasks among n costs at most 2k(log2 n + 1) extra requests."""
        project_id = make_project(poisoned_texts())

        async with searching_gateway(label_studio) as gw:
            await changed_tasks(gw, project_id, schema=SCHEMA, updated_after=None)

        # Measured 18: the page twice (retried), the ids listing, 15 to search.
        failed_page_and_id_listing = gw.max_attempts + 1
        bound = failed_page_and_id_listing + 2 * len(POISONED) * (math.ceil(math.log2(TWENTY)) + 1)
        assert gw.request_count <= bound

    async def test_search_gives_up_past_its_budget(
        self, label_studio: LabelStudioServer, make_project: MakeProject
    ) -> None:
        """With its extra requests spent, the poll fails as Label Studio failing (HTTP 500)."""
        project_id = make_project(poisoned_texts())

        async with searching_gateway(label_studio) as gw:
            gw.MAX_ISOLATION_REQUESTS = 4
            with pytest.raises(LabelStudioUnreachable) as caught:
                await changed_tasks(gw, project_id, schema=SCHEMA, updated_after=None)

            expected = (500, gw.max_attempts + 1 + 4)
            assert expected == (caught.value.status_code, gw.request_count)

    async def test_passing_500s_skip_no_task(
        self, label_studio: LabelStudioServer, make_project: MakeProject
    ) -> None:
        """A page failing with 500 that the server then serves loses no task to the search."""
        project_id = make_project(texts(TWENTY))

        with FaultProxy(label_studio.url) as proxy, capture_logs() as logs:
            proxy.fail_next(n=2, status=500, method="GET", path_contains="/api/tasks/")
            async with LabelStudioGateway(
                url=proxy.url,
                token=Secret(label_studio.legacy_token),
                max_attempts=2,
                max_backoff=0.05,
            ) as gw:
                tasks = await changed_tasks(gw, project_id, schema=SCHEMA, updated_after=None)

        skipped = [entry for entry in logs if entry["event"] == "labelstudio.task_unreadable"]
        assert (TWENTY, []) == (len(tasks), skipped)

    async def test_fixed_task_is_read_by_a_later_poll(
        self,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """A task fixed after being skipped comes back, with what was annotated meanwhile."""
        project_id = make_project([{"text": "fine"}, {"text": UNSERVABLE_TEXT}])
        _, broken = ls_client.task_ids(project_id)

        async with searching_gateway(label_studio) as gw:
            first = await changed_tasks(gw, project_id, schema=SCHEMA, updated_after=None)
            watermark = max(task.updated_at for task in first)
            ls_client.annotate(broken, "neg")
            ls_client.call("PATCH", f"/api/tasks/{broken}/", {"data": {"text": "fixed"}})
            later = await changed_tasks(gw, project_id, schema=SCHEMA, updated_after=watermark)

        assert [(broken, "fixed", ["neg"])] == [
            (task.id, task.text, [a.label for a in task.annotations]) for task in later
        ]


# ---- predictions and model versions -----------------------------------------------------


@labelstudio
class TestImportPredictions:
    async def test_created_equals_sent_and_is_counted(
        self,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """Every prediction sent is created and counted under its model version."""
        project_id = make_project(texts(4))
        task_ids = ls_client.task_ids(project_id)

        async with gateway(label_studio, label_studio.pat) as gw:
            created = await gw.import_predictions(
                project_id,
                model_version="aldaemon-v1",
                schema=SCHEMA,
                predictions=predictions_for(task_ids),
            )
            counts = await gw.model_version_counts(project_id)

        assert (4, {"aldaemon-v1": 4}) == (created, counts)

    async def test_score_and_label_are_stored(
        self,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """Each prediction's score arrives on its task under the given version."""
        project_id = make_project(texts(2))
        first, second = ls_client.task_ids(project_id)
        predictions = [
            PredictionRecord(task_id=first, label="pos", score=0.25),
            PredictionRecord(task_id=second, label="neg", score=0.75, cluster=3),
        ]

        async with gateway(label_studio, label_studio.pat) as gw:
            await gw.import_predictions(
                project_id, model_version="v1", schema=SCHEMA, predictions=predictions
            )
        stored = [
            (p["task"], p["model_version"], p["score"]) for p in ls_client.predictions(project_id)
        ]

        assert [(first, "v1", 0.25), (second, "v1", 0.75)] == sorted(stored)

    async def test_foreign_label_is_refused_before_sending(
        self,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """A label outside the config raises ValueError naming the task; nothing is sent."""
        project_id = make_project(texts(2))
        first, second = ls_client.task_ids(project_id)
        predictions = [
            PredictionRecord(task_id=first, label="pos", score=0.1),
            PredictionRecord(task_id=second, label="maybe", score=0.2),
        ]

        async with gateway(label_studio, label_studio.pat) as gw:
            with pytest.raises(ValueError, match=f"task {second}"):
                await gw.import_predictions(
                    project_id, model_version="v1", schema=SCHEMA, predictions=predictions
                )

            assert 0 == gw.request_count

    async def test_bulk_upload_does_not_touch_updated_at(
        self,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """Our own bulk upload does not make tasks look changed to the next poll."""
        project_id = make_project(texts(3))
        task_ids = ls_client.task_ids(project_id)

        async with gateway(label_studio, label_studio.pat) as gw:
            tasks = await changed_tasks(gw, project_id, schema=SCHEMA, updated_after=None)
            newest = max(task.updated_at for task in tasks)
            await gw.import_predictions(
                project_id, model_version="v1", schema=SCHEMA, predictions=predictions_for(task_ids)
            )
            changed = await changed_tasks(gw, project_id, schema=SCHEMA, updated_after=newest)

        assert [] == changed

    async def test_batch_with_unknown_task_is_refused_whole(
        self,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """One unknown task makes Label Studio refuse the whole upload (400), creating none."""
        project_id = make_project(texts(1))
        known = ls_client.task_ids(project_id)[0]

        async with gateway(label_studio, label_studio.pat) as gw:
            with pytest.raises(LabelStudioRefused) as caught:
                await gw.import_predictions(
                    project_id,
                    model_version="v1",
                    schema=SCHEMA,
                    predictions=predictions_for([known, 99_999_999]),
                )
            counts = await gw.model_version_counts(project_id)

        assert (400, {}) == (caught.value.status_code, counts)


@labelstudio
class TestDeleteModelVersion:
    async def test_removes_only_that_version(
        self,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """Deleting v1 returns its count and leaves v2 untouched."""
        project_id = make_project(texts(3))
        task_ids = ls_client.task_ids(project_id)

        async with gateway(label_studio, label_studio.pat) as gw:
            for version in ("v1", "v2"):
                await gw.import_predictions(
                    project_id,
                    model_version=version,
                    schema=SCHEMA,
                    predictions=predictions_for(task_ids),
                )
            deleted = await gw.delete_model_version(project_id, "v1")
            counts = await gw.model_version_counts(project_id)

        assert (3, {"v2": 3}) == (deleted, counts)


# ---- project settings, views, webhooks, next task -----------------------------------------


@labelstudio
class TestUpdateProject:
    async def test_sets_model_version_and_sampling(
        self,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """The uploaded version becomes active together with uncertainty sampling."""
        project_id = make_project(texts(2))
        task_ids = ls_client.task_ids(project_id)

        async with gateway(label_studio, label_studio.pat) as gw:
            await gw.import_predictions(
                project_id, model_version="v7", schema=SCHEMA, predictions=predictions_for(task_ids)
            )
            await gw.update_project(project_id, model_version="v7", sampling="Uncertainty sampling")
            project = await gw.get_project(project_id)

        assert ("v7", "Uncertainty sampling") == (project.model_version, project.sampling)

    async def test_only_given_fields_change(
        self,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """Changing sampling alone keeps the active model version."""
        project_id = make_project(texts(1))
        task_ids = ls_client.task_ids(project_id)

        async with gateway(label_studio, label_studio.pat) as gw:
            await gw.import_predictions(
                project_id, model_version="v1", schema=SCHEMA, predictions=predictions_for(task_ids)
            )
            await gw.update_project(project_id, model_version="v1")
            project = await gw.update_project(project_id, sampling="Uniform sampling")

        assert ("v1", "Uniform sampling") == (project.model_version, project.sampling)

    async def test_none_clears_the_model_version(
        self,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """model_version=None leaves the project without an active version."""
        project_id = make_project(texts(1))
        task_ids = ls_client.task_ids(project_id)

        async with gateway(label_studio, label_studio.pat) as gw:
            await gw.import_predictions(
                project_id, model_version="v1", schema=SCHEMA, predictions=predictions_for(task_ids)
            )
            await gw.update_project(project_id, model_version="v1")
            project = await gw.update_project(project_id, model_version=None)

        assert project.model_version is None

    async def test_version_without_predictions_is_refused(
        self, label_studio: LabelStudioServer, make_project: MakeProject
    ) -> None:
        """Activating a version that has no predictions yet is refused with LS's reason."""
        project_id = make_project(texts(1))

        async with gateway(label_studio, label_studio.pat) as gw:
            with pytest.raises(LabelStudioRefused, match="Model version doesn't exist"):
                await gw.update_project(project_id, model_version="never-uploaded")


@labelstudio
class TestViews:
    async def test_created_view_is_listed(
        self, label_studio: LabelStudioServer, make_project: MakeProject
    ) -> None:
        """A created view is listed with its title and data."""
        project_id = make_project(texts(1))

        async with gateway(label_studio, label_studio.pat) as gw:
            created = await gw.create_view(project_id, data=QUEUE_VIEW)
            views = await gw.list_views(project_id)

        assert [(created.id, "Active learning queue", QUEUE_VIEW)] == [
            (view.id, view.title, view.data) for view in views
        ]

    async def test_replace_swaps_the_whole_data(
        self, label_studio: LabelStudioServer, make_project: MakeProject
    ) -> None:
        """Replacing a view stores the new title and ordering."""
        project_id = make_project(texts(1))
        reordered = {**QUEUE_VIEW, "title": "Queue v2", "ordering": ["-tasks:predictions_score"]}

        async with gateway(label_studio, label_studio.pat) as gw:
            created = await gw.create_view(project_id, data=QUEUE_VIEW)
            await gw.replace_view(created.id, project_id=project_id, data=reordered)
            views = await gw.list_views(project_id)

        assert [reordered] == [view.data for view in views]


@labelstudio
class TestNextTask:
    async def test_uncertainty_sampling_serves_lowest_score_first(
        self,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """With uncertainty sampling on, /next serves the task with the lowest score."""
        project_id = make_project(texts(3))
        first, second, third = ls_client.task_ids(project_id)
        scores = {first: 0.6, second: 0.1, third: 0.9}
        predictions = [PredictionRecord(task_id=t, label="pos", score=s) for t, s in scores.items()]

        async with DemoGateway(url=label_studio.url, token=Secret(label_studio.pat)) as gw:
            await gw.import_predictions(
                project_id, model_version="v1", schema=SCHEMA, predictions=predictions
            )
            await gw.update_project(project_id, model_version="v1", sampling="Uncertainty sampling")
            served = await gw.next_task(project_id)

        assert served is not None and second == served["id"]

    async def test_empty_queue_is_none(
        self, label_studio: LabelStudioServer, make_project: MakeProject
    ) -> None:
        """A project with nothing left to label serves None."""
        project_id = make_project([])

        async with DemoGateway(url=label_studio.url, token=Secret(label_studio.pat)) as gw:
            assert await gw.next_task(project_id) is None


@labelstudio
class TestWebhooksAndAnnotations:
    async def test_webhook_to_localhost_is_created(
        self, label_studio: LabelStudioServer, make_project: MakeProject
    ) -> None:
        """A webhook to 127.0.0.1 is registered (the test server runs without SSRF guard)."""
        project_id = make_project(texts(1))

        async with gateway(label_studio, label_studio.pat) as gw:
            webhook_id = await gw.create_webhook(
                project_id,
                url="http://127.0.0.1:9/hook",
                secret=Secret("hook-secret"),
                actions=["ANNOTATION_CREATED", "ANNOTATIONS_DELETED"],
            )

        assert webhook_id > 0

    async def test_annotation_helpers_round_trip(
        self,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """An annotation created as 'pos' and updated to 'neg' reads back as 'neg'."""
        project_id = make_project(texts(1))

        async with DemoGateway(url=label_studio.url, token=Secret(label_studio.pat)) as gw:
            task_id = (await gw.list_task_ids(project_id))[0]
            annotation_id = await gw.create_annotation(task_id, schema=SCHEMA, label="pos")
            neg = choices_result(SCHEMA, "neg")
            ls_client.call("PATCH", f"/api/annotations/{annotation_id}/", {"result": neg})
            tasks = await changed_tasks(gw, project_id, schema=SCHEMA, updated_after=None)

        assert ["neg"] == [a.label for a in tasks[0].annotations]


# ---- failures Label Studio cannot be made to produce on demand -------------------------


@contextlib.asynccontextmanager
async def answering(statuses: list[int], body: object) -> AsyncIterator[str]:
    """A stand-in server answering the given statuses in turn, then 200 with `body`."""

    async def handle(request: web.Request) -> web.Response:
        status = statuses.pop(0) if statuses else 200
        if status >= 400:
            return web.json_response({"detail": "busy"}, status=status)
        return web.json_response(body)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def stand_in_gateway(url: str) -> LabelStudioGateway:
    return LabelStudioGateway(
        url=url, token=Secret("legacy-token"), max_attempts=4, max_backoff=0.01
    )


class TestRetries:
    async def test_read_is_retried_through_503(self) -> None:
        """A read that meets two 503s succeeds on the third request."""
        async with answering([503, 503], {"v1": 3}) as url, stand_in_gateway(url) as gw:
            counts = await gw.model_version_counts(1)

            assert ({"v1": 3}, 3) == (counts, gw.request_count)

    async def test_read_gives_up_after_max_attempts(self) -> None:
        """A read that only meets 503s raises LabelStudioUnreachable after max_attempts."""
        async with answering([503] * 10, {}) as url, stand_in_gateway(url) as gw:
            with pytest.raises(LabelStudioUnreachable):
                await gw.model_version_counts(1)

            assert 4 == gw.request_count

    async def test_prediction_import_is_not_replayed_after_503(self) -> None:
        """An import answered 503 is not sent again: the server may have committed it."""
        async with answering([503], {"created": 1}) as url, stand_in_gateway(url) as gw:
            with pytest.raises(LabelStudioUnreachable):
                await gw.import_predictions(
                    1, model_version="v1", schema=SCHEMA, predictions=predictions_for([1])
                )

            assert 1 == gw.request_count

    async def test_prediction_import_is_retried_when_never_sent(self) -> None:
        """An import whose connection was refused is retried up to max_attempts."""
        async with stand_in_gateway(f"http://127.0.0.1:{free_port()}") as gw:
            with pytest.raises(LabelStudioUnreachable):
                await gw.import_predictions(
                    1, model_version="v1", schema=SCHEMA, predictions=predictions_for([1])
                )

            assert 4 == gw.request_count

    async def test_client_error_is_not_retried(self) -> None:
        """A 400 is refused at once, with one request."""
        async with answering([400], {}) as url, stand_in_gateway(url) as gw:
            with pytest.raises(LabelStudioRefused):
                await gw.model_version_counts(1)

            assert 1 == gw.request_count


class TestReachabilityLog:
    async def test_outage_is_logged_on_transitions_only(self) -> None:
        """Two failed calls log one 'unreachable'; the next success logs one 'recovered'."""
        async with answering([503] * 8, {"v1": 1}) as url, stand_in_gateway(url) as gw:
            with capture_logs() as logs:
                for _ in range(2):
                    with pytest.raises(LabelStudioUnreachable):
                        await gw.model_version_counts(1)
                await gw.model_version_counts(1)

        transitions = [
            entry["event"]
            for entry in logs
            if entry["event"] in ("labelstudio.unreachable", "labelstudio.recovered")
        ]
        assert ["labelstudio.unreachable", "labelstudio.recovered"] == transitions


class TestNoSearchWhileLabelStudioFails:
    """Reading around unservable tasks needs a server that answers; an outage is not one."""

    async def test_503_is_not_searched(self) -> None:
        """Task listings answered 503 fail after max_attempts, with no ids listing."""
        async with answering([503] * 10, {}) as url, stand_in_gateway(url) as gw:
            with pytest.raises(LabelStudioUnreachable):
                await changed_tasks(gw, 1, schema=SCHEMA, updated_after=None)

            assert 4 == gw.request_count

    async def test_500_on_the_ids_listing_too_is_not_searched(self) -> None:
        """When the ids listing also answers 500, the poll fails without bisecting."""
        async with answering([500] * 10, {}) as url, stand_in_gateway(url) as gw:
            with pytest.raises(LabelStudioUnreachable):
                await changed_tasks(gw, 1, schema=SCHEMA, updated_after=None)

            assert 4 + 4 == gw.request_count


def mapped(status: int, body: object, *, project_id: int | None = None) -> Exception:
    return to_labelstudio_error(
        HttpStatusError(status, headers={}, body=body),
        operation="op",
        url="http://ls",
        token_kind=TokenKind.LEGACY,
        project_id=project_id,
        secrets=["s3cret-token"],
    )


class TestErrorMapping:
    def test_404_on_a_project_call_is_project_not_found(self) -> None:
        """A 404 while working on a project means the project is gone."""
        assert ProjectNotFound is type(mapped(404, {"detail": "Not found."}, project_id=3))

    def test_404_elsewhere_is_refused_with_its_status(self) -> None:
        """A 404 on a view or annotation is a refusal that keeps status 404."""
        error = mapped(404, {"detail": "Not found."})

        assert (LabelStudioRefused, 404) == (type(error), getattr(error, "status_code", None))

    def test_ssrf_block_is_not_an_auth_error(self) -> None:
        """A 403 for a blocked webhook URL is a refusal naming SSRF_PROTECTION_ENABLED."""
        detail = "The provided URL was not allowed. URLs must use http:// or https://"
        error = mapped(403, {"detail": detail})

        assert (LabelStudioRefused, True) == (
            type(error),
            "SSRF_PROTECTION_ENABLED=false" in str(error),
        )

    def test_sqlite_variable_wall_is_permanent_and_names_the_remedy(self) -> None:
        """Label Studio's 500 "too many SQL variables" (the body its exception handler
        writes) is a refusal naming the import flag and PostgreSQL, not an outage."""
        body = {"id": "x", "status_code": 500, "detail": "too many SQL variables"}
        error = mapped(500, body, project_id=3)

        assert (LabelStudioRefused, 500) == (type(error), getattr(error, "status_code", None))
        assert f"{MEMORY_EFFICIENT_IMPORT_FLAG}=true" in str(error)
        assert "PostgreSQL" in str(error)

    def test_another_500_stays_temporary(self) -> None:
        """Any other 500 from Label Studio is still "unreachable", retried next poll."""
        error = mapped(500, {"detail": "database is locked"}, project_id=3)

        assert LabelStudioUnreachable is type(error)

    def test_echoed_secret_is_redacted(self) -> None:
        """A credential echoed back in the server's message is replaced by ***."""
        error = mapped(400, {"detail": "bad header Token s3cret-token"})

        assert "op: Label Studio refused (HTTP 400: bad header Token ***)" == str(error)


class TestRetryDecision:
    def test_connect_error_is_retried_even_for_posts(self) -> None:
        """A refused connection never reached the server, so even a POST is retried."""
        assert is_retryable(httpx.ConnectError("refused"), Replay.IF_NOT_SENT)

    def test_read_timeout_is_not_retried_for_posts(self) -> None:
        """A read timeout may follow a commit, so a non-idempotent POST is not replayed."""
        assert not is_retryable(httpx.ReadTimeout("slow"), Replay.IF_NOT_SENT)

    def test_read_timeout_is_retried_for_reads(self) -> None:
        """A read timeout on an idempotent call is retried."""
        assert is_retryable(httpx.ReadTimeout("slow"), Replay.IDEMPOTENT)

    @pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
    def test_temporary_statuses_are_retried(self, status: int) -> None:
        """408, 429 and 5xx are retried for idempotent calls."""
        assert is_retryable(HttpStatusError(status, headers={}, body=None), Replay.IDEMPOTENT)

    @pytest.mark.parametrize("status", [400, 401, 403, 404, 409])
    def test_client_errors_are_final(self, status: int) -> None:
        """Other 4xx answers are final."""
        assert not is_retryable(HttpStatusError(status, headers={}, body=None), Replay.IDEMPOTENT)


class TestBackoff:
    def test_grows_exponentially(self) -> None:
        """Without jitter the waits double from 0.5 s."""
        waits = [backoff_seconds(attempt=n, max_backoff=30.0, rng=lambda: 1.0) for n in range(1, 5)]

        assert [0.5, 1.0, 2.0, 4.0] == waits

    def test_is_capped(self) -> None:
        """No wait exceeds max_backoff."""
        assert 30.0 == backoff_seconds(attempt=20, max_backoff=30.0, rng=lambda: 1.0)

    def test_retry_after_is_honoured(self) -> None:
        """A Retry-After in seconds replaces the computed wait."""
        assert 7.0 == backoff_seconds(attempt=1, max_backoff=30.0, retry_after=7.0)

    def test_retry_after_is_capped(self) -> None:
        """A Retry-After longer than max_backoff is cut to max_backoff."""
        assert 30.0 == backoff_seconds(attempt=1, max_backoff=30.0, retry_after=600.0)


# ---- pure helpers --------------------------------------------------------------------------


class TestFilterDatetime:
    def test_fraction_is_added_when_missing(self) -> None:
        """A timestamp without microseconds gets the '.000000Z' Label Studio requires."""
        assert "2026-01-02T03:04:05.000000Z" == format_ls_datetime(
            parse_ls_datetime("2026-01-02T03:04:05Z")
        )

    def test_offset_is_converted_to_utc(self) -> None:
        """A +02:00 timestamp is converted to UTC."""
        expected = "2026-01-02T01:04:05.123456Z"
        assert expected == format_ls_datetime(parse_ls_datetime("2026-01-02T03:04:05.123456+02:00"))

    def test_label_studio_spelling_is_kept(self) -> None:
        """Label Studio's own spelling passes unchanged."""
        value = "2026-11-27T21:11:36.815556Z"
        assert value == format_ls_datetime(parse_ls_datetime(value))


class TestTaskQuery:
    def test_filters_by_watermark_and_last_id(self) -> None:
        """The query ANDs updated_at > watermark with id > last id, ordered by id."""
        query = json.loads(task_query(updated_after="2026-01-02T03:04:05Z", after_id=41))

        expected = {
            "filters": {
                "conjunction": "and",
                "items": [
                    {
                        "filter": "filter:tasks:updated_at",
                        "operator": "greater",
                        "type": "Datetime",
                        "value": "2026-01-02T03:04:05.000000Z",
                    },
                    {
                        "filter": "filter:tasks:id",
                        "operator": "greater",
                        "type": "Number",
                        "value": 41,
                    },
                ],
            },
            "ordering": ["tasks:id"],
        }
        assert expected == query

    def test_upper_id_bound_closes_the_range(self) -> None:
        """An upper bound adds id <= up_to_id, so a page can be read in id ranges."""
        query = json.loads(task_query(updated_after=None, after_id=10, up_to_id=20))

        expected = [
            {"filter": "filter:tasks:id", "operator": "greater", "type": "Number", "value": 10},
            {
                "filter": "filter:tasks:id",
                "operator": "less_or_equal",
                "type": "Number",
                "value": 20,
            },
        ]
        assert expected == query["filters"]["items"]


class TestPredictionPayloads:
    def test_shape_for_a_choices_control(self) -> None:
        """A prediction becomes task, version, score, cluster and a Choices result."""
        record = PredictionRecord(task_id=5, label="neg", score=0.25, cluster=2)

        expected = [
            {
                "task": 5,
                "model_version": "v1",
                "score": 0.25,
                "result": [
                    {
                        "from_name": "sentiment",
                        "to_name": "text",
                        "type": "choices",
                        "value": {"choices": ["neg"]},
                    }
                ],
                "cluster": 2,
            }
        ]
        assert expected == prediction_payloads([record], model_version="v1", schema=SCHEMA)

    def test_score_outside_unit_interval_is_refused(self) -> None:
        """A NaN score is refused, naming the task."""
        record = PredictionRecord(task_id=8, label="pos", score=float("nan"))

        with pytest.raises(ValueError, match="task 8"):
            prediction_payloads([record], model_version="v1", schema=SCHEMA)

    def test_two_predictions_for_one_task_are_refused(self) -> None:
        """Two predictions for the same task in one upload are refused."""
        records = [PredictionRecord(task_id=3, label="pos", score=0.1)] * 2

        with pytest.raises(ValueError, match="task 3"):
            prediction_payloads(records, model_version="v1", schema=SCHEMA)


class TestServerMessage:
    def test_validation_errors_are_spelled_out(self) -> None:
        """A DRF validation body becomes 'detail; field: reasons'."""
        body = {"detail": "Validation error", "validation_errors": {"model_version": ["nope"]}}

        assert "Validation error; model_version: nope" == server_message(body)

    def test_html_page_is_not_dumped(self) -> None:
        """An HTML error page is summarised, not copied into the message."""
        assert "(an HTML page)" == server_message("\n<!doctype html><html>...</html>")


class TestTokenKind:
    def test_refresh_jwt_is_a_personal_access_token(self) -> None:
        """A JWT with token_type 'refresh' is a PAT."""
        assert TokenKind.PERSONAL_ACCESS == token_kind(forged_pat())

    def test_plain_key_is_a_legacy_token(self) -> None:
        """A key that is not a JWT is a legacy token."""
        assert TokenKind.LEGACY == token_kind("0123456789abcdef0123456789abcdef01234567")

    def test_access_lifetime_comes_from_the_claims(self) -> None:
        """An access token's lifetime is exp - iat, independent of the local clock."""
        token = f"x.{_b64({'token_type': 'access', 'iat': 1000, 'exp': 1300})}.sig"

        assert 300.0 == access_lifetime(token)


@labelstudio
@pytest.mark.slow
class TestOutage:
    async def test_same_gateway_recovers_after_restart(
        self, label_studio: LabelStudioServer, make_project: MakeProject
    ) -> None:
        """While Label Studio is down a call is Unreachable; after a restart it works again."""
        if not label_studio.managed:
            pytest.skip("needs a Label Studio the test session started itself")
        project_id = make_project(texts(1))
        async with LabelStudioGateway(
            url=label_studio.url, token=Secret(label_studio.pat), max_attempts=2, max_backoff=0.01
        ) as gw:
            await gw.check_auth()
            label_studio.stop()
            try:
                with pytest.raises(LabelStudioUnreachable):
                    await gw.check_auth()
            finally:
                label_studio.start()
            counts = await gw.model_version_counts(project_id)

        assert {} == counts
