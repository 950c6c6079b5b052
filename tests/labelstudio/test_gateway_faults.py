"""Faults between the daemon and the REAL Label Studio, injected by tests/faultproxy.py.

The proxy forwards to the server the suite starts and breaks chosen requests on the way:
5xx, 429 with Retry-After, connection resets, late answers, and the nasty one, an import
the server commits whose answer never arrives. The gateway must retry what is safe to
retry, wait as long as the server asks, give up after `max_attempts`, and never send a
non-idempotent import twice; the cycle must then finish that upload without duplicates.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from aldaemon.config import (
    Config,
    DaemonConfig,
    LabelStudioConfig,
    PredictionsConfig,
    ProjectConfig,
    RetrainConfig,
    StateConfig,
)
from aldaemon.errors import (
    LabelStudioAuthError,
    LabelStudioUnreachable,
    ProjectNotFound,
)
from aldaemon.labelstudio import LabelStudioGateway, parse_labeling_config
from aldaemon.loop.context import CycleReport
from aldaemon.records import PredictionRecord
from aldaemon.secret import Secret
from aldaemon.service.runtime import Runtime
from tests.conftest import MakeProject
from tests.faultproxy import FaultKind, FaultProxy
from tests.lsserver import DEFAULT_LABEL_CONFIG, LabelStudioClient, LabelStudioServer
from tests.test_gateway import changed_tasks

pytestmark = pytest.mark.labelstudio

SCHEMA = parse_labeling_config(DEFAULT_LABEL_CONFIG)
IMPORT_PATH = "/import/predictions"
QUICK_BACKOFF = 0.2  # seconds: the cap on waits between attempts, to keep the suite quick


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


def statuses(proxy: FaultProxy, path: str, method: str | None = None) -> list[int | None]:
    """What each request to `path` got, in order; None where the connection was closed."""
    return [seen.status for seen in proxy.requests(method=method, path_contains=path)]


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


# ---- the lead's cycle, through the proxy -----------------------------------------------

TASK_COUNT = 16
LABELED_COUNT = 6
BATCH_SIZE = 4  # 10 unlabeled tasks: batches of 4, 4, 2; the first one's answer is lost


class QuickRetryRuntime(Runtime):
    """The real Runtime, with a gateway that waits at most QUICK_BACKOFF between attempts."""

    @staticmethod
    def _make_gateway(config: Config) -> LabelStudioGateway:
        return LabelStudioGateway(
            url=config.labelstudio.url,
            token=config.labelstudio.token,
            timeout=config.labelstudio.timeout,
            max_attempts=config.labelstudio.max_attempts,
            max_backoff=QUICK_BACKOFF,
        )


@dataclass(frozen=True)
class LostImportRun:
    """Two cycles of one project, the first one's first import answer dropped."""

    first: CycleReport
    second: CycleReport
    unlabeled_task_ids: list[int]
    predictions: list[dict[str, object]]
    project: dict[str, object]
    import_statuses: list[int | None]


def cycle_config(*, url: str, token: str, state_dir: Path, project_id: int) -> Config:
    return Config(
        path="(built by test_faults_gateway)",
        labelstudio=LabelStudioConfig(url=url, token=Secret(token), max_attempts=3),
        state=StateConfig(dir=state_dir),
        daemon=DaemonConfig(listen=""),
        projects=(
            ProjectConfig(
                id=project_id,
                retrain=RetrainConfig(min_new_annotations=1, min_interval=0.0, min_per_class=2),
                predictions=PredictionsConfig(batch_size=BATCH_SIZE),
            ),
        ),
    )


async def two_cycles(config: Config) -> tuple[CycleReport, CycleReport]:
    async with QuickRetryRuntime(config) as runtime:
        first = await runtime.run_cycle(config.projects[0])
        second = await runtime.run_cycle(config.projects[0])
    return first, second


@pytest.fixture(scope="module")
def lost_import_run(
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> LostImportRun:
    project_id = ls_client.create_project(title="lost import answer")
    words = ("good", "fine", "bad", "poor")
    task_ids = ls_client.import_tasks(
        project_id, [{"text": f"{words[n % 4]} item {n}"} for n in range(TASK_COUNT)]
    )
    for index, task_id in enumerate(task_ids[:LABELED_COUNT]):
        ls_client.annotate(task_id, "pos" if index % 2 == 0 else "neg")
    with FaultProxy(label_studio.url) as proxy:
        proxy.drop_response_next(n=1, method="POST", path_contains=IMPORT_PATH)
        config = cycle_config(
            url=proxy.url,
            token=label_studio.legacy_token,
            state_dir=tmp_path_factory.mktemp("lost-import") / "state",
            project_id=project_id,
        )
        first, second = asyncio.run(two_cycles(config))
        import_statuses = statuses(proxy, IMPORT_PATH, method="POST")
    return LostImportRun(
        first=first,
        second=second,
        unlabeled_task_ids=task_ids[LABELED_COUNT:],
        predictions=ls_client.predictions(project_id),
        project=ls_client.get_project(project_id),
        import_statuses=import_statuses,
    )


class TestCycleAfterLostImportAnswer:
    def test_first_cycle_fails_on_the_lost_answer(self, lost_import_run: LostImportRun) -> None:
        """The cycle whose import answer was lost ends failed instead of guessing."""
        assert "failed" == lost_import_run.first.outcome

    def test_next_cycle_resumes_the_same_version(self, lost_import_run: LostImportRun) -> None:
        """The next cycle finishes the interrupted version instead of training a new one."""
        assert lost_import_run.first.version == lost_import_run.second.version

    def test_landed_batch_is_not_sent_again(self, lost_import_run: LostImportRun) -> None:
        """The next cycle sends only the two batches the server did not hold yet."""
        assert [None, 201, 201] == lost_import_run.import_statuses

    def test_every_task_has_exactly_one_prediction_of_the_version(
        self, lost_import_run: LostImportRun
    ) -> None:
        """After the next cycle each unlabeled task has one prediction of the new version."""
        version = lost_import_run.second.version
        held = Counter(
            p["task"] for p in lost_import_run.predictions if p["model_version"] == version
        )
        assert dict.fromkeys(lost_import_run.unlabeled_task_ids, 1) == dict(held)

    def test_resumed_version_is_active(self, lost_import_run: LostImportRun) -> None:
        """The version whose upload was resumed becomes the project's active one."""
        assert lost_import_run.second.version == lost_import_run.project["model_version"]
