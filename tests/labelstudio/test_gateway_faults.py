"""Faults between the daemon and the REAL Label Studio, injected by tests/faultproxy.py.

The proxy forwards to the server the suite starts and breaks chosen requests on the way:
5xx, 429 with Retry-After, connection resets, late answers, and the nasty one, an import
the server commits whose answer never arrives. The gateway must retry what is safe to
retry, wait as long as the server asks, give up after `max_attempts`, and never send a
non-idempotent import twice; the cycle must then finish that upload without duplicates.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from aldaemon.errors import (
    LabelStudioAuthError,
    LabelStudioUnreachable,
    ProjectNotFound,
)
from aldaemon.labelstudio import LabelStudioGateway, parse_labeling_config
from aldaemon.records import PredictionRecord
from aldaemon.secret import Secret
from tests.conftest import MakeProject
from tests.faultproxy import FaultKind, FaultProxy
from tests.helpers import IMPORT_PATH, QUICK_BACKOFF, changed_tasks, statuses
from tests.lsserver import (
    DEFAULT_LABEL_CONFIG,
    LabelStudioClient,
    LabelStudioServer,
    LabelStudioServerError,
)

pytestmark = pytest.mark.labelstudio

SCHEMA = parse_labeling_config(DEFAULT_LABEL_CONFIG)


@pytest.fixture
def proxy(label_studio: LabelStudioServer) -> Iterator[FaultProxy]:
    with FaultProxy(label_studio.url) as running:
        yield running


def gateway_via(
    proxy: FaultProxy,
    token: str,
    *,
    max_attempts: int = 4,
    max_backoff: float = QUICK_BACKOFF,
    timeout: float = 30.0,
) -> LabelStudioGateway:
    return LabelStudioGateway(
        url=proxy.url,
        token=Secret(token),
        timeout=timeout,
        max_attempts=max_attempts,
        max_backoff=max_backoff,
    )


def texts(count: int) -> list[dict[str, object]]:
    return [{"text": f"text number {number}"} for number in range(count)]


def predictions_for(task_ids: list[int]) -> list[PredictionRecord]:
    return [PredictionRecord(task_id=task_id, label="pos", score=0.5) for task_id in task_ids]


class TestForwarding:
    async def test_proxy_passes_answers_through_unchanged(
        self, label_studio: LabelStudioServer, proxy: FaultProxy, make_project: MakeProject
    ) -> None:
        """Without faults, a call through the proxy returns what Label Studio holds."""
        project_id = make_project(texts(3))
        async with gateway_via(proxy, label_studio.legacy_token) as gateway:
            tasks = await changed_tasks(gateway, project_id, schema=SCHEMA, updated_after=None)

        assert ["text number 0", "text number 1", "text number 2"] == [t.text for t in tasks]


class TestTemporaryFailures:
    @pytest.mark.parametrize("status", [500, 502, 503])
    async def test_server_error_is_retried_until_it_stops(
        self,
        label_studio: LabelStudioServer,
        proxy: FaultProxy,
        make_project: MakeProject,
        status: int,
    ) -> None:
        """A read answered 5xx twice is sent again until the real answer comes."""
        project_id = make_project()
        path = f"/api/projects/{project_id}/"
        proxy.fail_next(n=2, status=status, method="GET", path_contains=path)
        async with gateway_via(proxy, label_studio.legacy_token) as gateway:
            await gateway.get_project(project_id)

        assert [status, status, 200] == statuses(proxy, path)

    async def test_read_through_server_errors_returns_the_real_answer(
        self, label_studio: LabelStudioServer, proxy: FaultProxy, make_project: MakeProject
    ) -> None:
        """After retries, the caller gets the project exactly as Label Studio holds it."""
        project_id = make_project(title="survives two 503s")
        proxy.fail_next(n=2, status=503, path_contains=f"/api/projects/{project_id}/")
        async with gateway_via(proxy, label_studio.legacy_token) as gateway:
            project = await gateway.get_project(project_id)

        assert (project_id, "survives two 503s") == (project.id, project.title)

    async def test_reset_connection_is_retried(
        self, label_studio: LabelStudioServer, proxy: FaultProxy, make_project: MakeProject
    ) -> None:
        """A read whose connection is reset twice is sent again and then succeeds."""
        project_id = make_project(texts(2))
        proxy.reset_next(n=2, method="GET", path_contains="/api/tasks/")
        async with gateway_via(proxy, label_studio.legacy_token) as gateway:
            await gateway.list_task_ids(project_id)

        assert [None, None, 200] == statuses(proxy, "/api/tasks/")

    async def test_task_scan_through_resets_returns_every_task_once(
        self, label_studio: LabelStudioServer, proxy: FaultProxy, make_project: MakeProject
    ) -> None:
        """Resets between the pages of a task scan neither lose nor repeat a task."""
        project_id = make_project(texts(7))
        proxy.reset_next(n=3, method="GET", path_contains="/api/tasks/")
        async with gateway_via(proxy, label_studio.legacy_token, max_attempts=5) as gateway:
            tasks = await changed_tasks(
                gateway, project_id, schema=SCHEMA, updated_after=None, page_size=3
            )

        assert [f"text number {n}" for n in range(7)] == [task.text for task in tasks]

    async def test_late_answer_is_abandoned_and_asked_again(
        self, label_studio: LabelStudioServer, proxy: FaultProxy, make_project: MakeProject
    ) -> None:
        """A read answered after the timeout is given up on and sent a second time."""
        project_id = make_project()
        path = f"/api/projects/{project_id}/"
        # Timeout and delay far apart: a loaded machine's slow second answer (over the
        # timeout) would make a third request and fail the test for the wrong reason.
        proxy.delay_next(n=1, seconds=20.0, method="GET", path_contains=path)
        async with gateway_via(proxy, label_studio.legacy_token, timeout=5.0) as gateway:
            await gateway.get_project(project_id)

        assert [FaultKind.DELAY, None] == [
            seen.fault for seen in proxy.requests(path_contains=path)
        ]

    async def test_token_refresh_is_retried_through_server_errors(
        self, label_studio: LabelStudioServer, proxy: FaultProxy, make_project: MakeProject
    ) -> None:
        """A personal access token's refresh answered 503 is retried and the call succeeds."""
        project_id = make_project()
        proxy.fail_next(n=2, status=503, path_contains="/api/token/refresh/")
        async with gateway_via(proxy, label_studio.pat) as gateway:
            await gateway.get_project(project_id)

        assert [503, 503, 200] == statuses(proxy, "/api/token/refresh/")


class TestRetryAfter:
    @pytest.mark.parametrize("status", [429, 503])
    async def test_next_attempt_waits_at_least_retry_after(
        self,
        label_studio: LabelStudioServer,
        proxy: FaultProxy,
        make_project: MakeProject,
        status: int,
    ) -> None:
        """After `Retry-After: 1.5` the next attempt comes no sooner than 1.5 s later."""
        project_id = make_project()
        path = f"/api/projects/{project_id}/"
        proxy.fail_next(n=1, status=status, retry_after=1.5, path_contains=path)
        async with gateway_via(proxy, label_studio.legacy_token, max_backoff=10.0) as gateway:
            await gateway.get_project(project_id)

        first, second = proxy.requests(path_contains=path)
        assert second.arrived_at - first.arrived_at >= 1.5


class TestGivingUp:
    async def test_persistent_server_error_raises_unreachable(
        self, label_studio: LabelStudioServer, proxy: FaultProxy, make_project: MakeProject
    ) -> None:
        """A server that keeps answering 503 ends in LabelStudioUnreachable."""
        project_id = make_project()
        proxy.fail_next(n=None, status=503)
        async with gateway_via(proxy, label_studio.legacy_token, max_attempts=3) as gateway:
            with pytest.raises(LabelStudioUnreachable):
                await gateway.get_project(project_id)

    async def test_gives_up_after_exactly_max_attempts(
        self, label_studio: LabelStudioServer, proxy: FaultProxy, make_project: MakeProject
    ) -> None:
        """With max_attempts=3 the server sees three requests, then no more."""
        project_id = make_project()
        proxy.fail_next(n=None, status=503)
        async with gateway_via(proxy, label_studio.legacy_token, max_attempts=3) as gateway:
            with pytest.raises(LabelStudioUnreachable):
                await gateway.get_project(project_id)

        assert 3 == len(proxy.requests())

    async def test_persistent_resets_raise_unreachable(
        self, label_studio: LabelStudioServer, proxy: FaultProxy, make_project: MakeProject
    ) -> None:
        """Connections that are always reset end in LabelStudioUnreachable."""
        project_id = make_project()
        proxy.reset_next(n=None)
        async with gateway_via(proxy, label_studio.legacy_token, max_attempts=3) as gateway:
            with pytest.raises(LabelStudioUnreachable):
                await gateway.list_task_ids(project_id)

    @pytest.mark.parametrize("which", ["legacy", "pat"])
    async def test_giving_up_never_shows_the_token(
        self,
        label_studio: LabelStudioServer,
        proxy: FaultProxy,
        make_project: MakeProject,
        which: str,
    ) -> None:
        """The error raised after the last attempt does not contain the API token."""
        project_id = make_project()
        token = label_studio.legacy_token if which == "legacy" else label_studio.pat
        proxy.fail_next(n=None, status=502, path_contains=f"/api/projects/{project_id}/")
        async with gateway_via(proxy, token, max_attempts=2) as gateway:
            with pytest.raises(LabelStudioUnreachable) as raised:
                await gateway.get_project(project_id)

        assert token not in f"{raised.value!s} {raised.value!r} {raised.value.__cause__!r}"


class TestPermanentFailures:
    async def test_401_is_not_retried(self, proxy: FaultProxy, make_project: MakeProject) -> None:
        """Label Studio's own 401 for a wrong token reaches it once and is not sent again."""
        project_id = make_project()
        async with gateway_via(proxy, "wrong-legacy-token-0123456789") as gateway:
            with pytest.raises(LabelStudioAuthError):
                await gateway.get_project(project_id)

        assert [401] == statuses(proxy, f"/api/projects/{project_id}/")

    async def test_missing_project_is_not_retried(
        self, label_studio: LabelStudioServer, proxy: FaultProxy
    ) -> None:
        """A 404 for the project is ProjectNotFound after a single request."""
        async with gateway_via(proxy, label_studio.legacy_token) as gateway:
            with pytest.raises(ProjectNotFound):
                await gateway.get_project(987654)

        assert [404] == statuses(proxy, "/api/projects/987654/")


class TestImportPredictionsIsNeverReplayed:
    """`import/predictions` is not idempotent: a second copy means duplicate predictions."""

    async def _import_with_fault(
        self,
        label_studio: LabelStudioServer,
        proxy: FaultProxy,
        project_id: int,
        task_ids: list[int],
    ) -> None:
        async with gateway_via(proxy, label_studio.legacy_token) as gateway:
            with pytest.raises(LabelStudioUnreachable):
                await gateway.import_predictions(
                    project_id,
                    model_version="faulty-v1",
                    schema=SCHEMA,
                    predictions=predictions_for(task_ids),
                )

    async def test_dropped_answer_is_not_sent_again(
        self,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        proxy: FaultProxy,
        make_project: MakeProject,
    ) -> None:
        """When the server acted but the answer was lost, the import is sent exactly once."""
        project_id = make_project(texts(4))
        proxy.drop_response_next(n=1, method="POST", path_contains=IMPORT_PATH)
        await self._import_with_fault(
            label_studio, proxy, project_id, ls_client.task_ids(project_id)
        )

        assert [None] == statuses(proxy, IMPORT_PATH, method="POST")

    async def test_dropped_answer_leaves_one_prediction_per_task(
        self,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        proxy: FaultProxy,
        make_project: MakeProject,
    ) -> None:
        """The server holds the batch once after the lost answer: one prediction per task."""
        project_id = make_project(texts(4))
        task_ids = ls_client.task_ids(project_id)
        proxy.drop_response_next(n=1, method="POST", path_contains=IMPORT_PATH)
        await self._import_with_fault(label_studio, proxy, project_id, task_ids)

        held = Counter(prediction["task"] for prediction in ls_client.predictions(project_id))
        assert dict.fromkeys(task_ids, 1) == dict(held)

    async def test_server_error_on_import_is_not_sent_again(
        self,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        proxy: FaultProxy,
        make_project: MakeProject,
    ) -> None:
        """A 503 on an import may follow a commit, so it is reported and not retried."""
        project_id = make_project(texts(3))
        proxy.fail_next(n=1, status=503, method="POST", path_contains=IMPORT_PATH)
        await self._import_with_fault(
            label_studio, proxy, project_id, ls_client.task_ids(project_id)
        )

        assert [503] == statuses(proxy, IMPORT_PATH, method="POST")

    async def test_reset_on_import_is_not_sent_again(
        self,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        proxy: FaultProxy,
        make_project: MakeProject,
    ) -> None:
        """A reset after the request went out is ambiguous, so the import is not resent."""
        project_id = make_project(texts(3))
        proxy.reset_next(n=1, method="POST", path_contains=IMPORT_PATH)
        await self._import_with_fault(
            label_studio, proxy, project_id, ls_client.task_ids(project_id)
        )

        assert [None] == statuses(proxy, IMPORT_PATH, method="POST")


# ---- task data Label Studio stores but cannot serve ------------------------------------------

LONE_SURROGATE_TEXT = "broken \ud800 text"  # valid in JSON ("\ud800"), not encodable as UTF-8


@pytest.mark.labelstudio
class TestLoneSurrogateInTaskData:
    """Label Studio 1.23.2 imports a task whose text holds a lone UTF-16 surrogate, then
    fails (HTTP 500, UnicodeEncodeError in its log) on every listing that includes `data`."""

    def test_listing_with_data_fails_in_label_studio(
        self, ls_client: LabelStudioClient, make_project: MakeProject
    ) -> None:
        """A task listing with data answers 500 once such a task exists (a server fact)."""
        project_id = make_project([{"text": "fine"}, {"text": LONE_SURROGATE_TEXT}])

        with pytest.raises(LabelStudioServerError, match="-> 500"):
            ls_client.call("GET", f"/api/tasks/?project={project_id}&fields=all&page=1")

    def test_id_listing_still_works_in_label_studio(
        self, ls_client: LabelStudioClient, make_project: MakeProject
    ) -> None:
        """Listing only ids is unaffected by such a task (a server fact)."""
        project_id = make_project([{"text": "fine"}, {"text": LONE_SURROGATE_TEXT}])

        assert 2 == len(ls_client.task_ids(project_id))

    async def test_poll_reads_the_other_tasks(
        self, label_studio: LabelStudioServer, make_project: MakeProject
    ) -> None:
        """A project holding one unservable task still has its other tasks polled."""
        project_id = make_project([{"text": "fine"}, {"text": LONE_SURROGATE_TEXT}])
        gateway = LabelStudioGateway(
            url=label_studio.url,
            token=Secret(label_studio.legacy_token),
            max_attempts=2,
            max_backoff=0.2,
        )
        async with gateway:
            tasks = await changed_tasks(gateway, project_id, schema=SCHEMA, updated_after=None)

        assert ["fine"] == [task.text for task in tasks]
