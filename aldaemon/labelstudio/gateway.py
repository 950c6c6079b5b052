"""The one object that talks to Label Studio: async, retried, counted, token-safe.

Every request, whether made through `label_studio_sdk.AsyncLabelStudio` or raw, goes through
ONE `httpx.AsyncClient` owned here, so that

- authentication (legacy token or PAT with async refresh) is an `httpx.Auth` on that
  client (see `auth.py` for why the SDK's own refresh is bypassed);
- `request_count` / `bytes_received` come from its event hooks and include retries and
  token refreshes: what actually went over the wire; `count_requests()` counts the same
  requests for one block of work only (a cycle, a prune), however many run concurrently;
- retries are decided in one place (`retry.py`); the SDK's retries are switched off
  (`max_retries=0`) because they would replay non-idempotent POSTs.

The SDK is used where its typed call is a plain fit (current user, projects, annotations,
tasks, predictions list). Raw calls cover what it lacks or gets wrong: the task listing
with a `query` JSON string, `model-versions`, `import/predictions`, task import with ids,
views (it remaps their keys), webhooks, and `next`. Nothing here returns an SDK object.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Final, TypeVar

import httpx
import structlog
from label_studio_sdk import AsyncLabelStudio
from label_studio_sdk.core.api_error import ApiError
from label_studio_sdk.core.parse_error import ParsingError

from aldaemon.errors import AldaemonError, LabelStudioRefused, LabelStudioUnreachable
from aldaemon.labelstudio import payloads
from aldaemon.labelstudio.auth import LabelStudioAuth
from aldaemon.labelstudio.failures import to_labelstudio_error
from aldaemon.labelstudio.retry import HttpStatusError, Replay, call_with_retries
from aldaemon.records import (
    LabelingSchema,
    PredictionRecord,
    ProjectInfo,
    TaskRecord,
    ViewInfo,
)
from aldaemon.secret import Secret

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Handed to the SDK instead of the real token: not a JWT, so the SDK never tries its own
# (blocking) refresh, and the real header is set by LabelStudioAuth on every request.
_SDK_PLACEHOLDER_KEY = "set-by-aldaemon-auth"

WEBHOOK_SECRET_HEADER = "X-Aldaemon-Secret"
SAMPLING_MODES = frozenset({"Sequential sampling", "Uniform sampling", "Uncertainty sampling"})
_NO_TASKS_LEFT = "There are no tasks"  # the detail of /next's 404 when the queue is empty


@dataclasses.dataclass
class RequestTally:
    """Requests sent from inside one `count_requests()` block, retries and refreshes included."""

    requests: int = 0
    open: bool = True


# The tallies of the blocks the current task is in (and the tasks it started inherit).
# A ContextVar of our own, not structlog's bound `project_id`: the numbers must not depend
# on what is bound for logging, and a project's prune runs beside its next cycle, so a
# count per project would still mix the two.
_OPEN_TALLIES: ContextVar[tuple[RequestTally, ...]] = ContextVar(
    "aldaemon_request_tallies", default=()
)


@contextlib.contextmanager
def count_requests() -> Iterator[RequestTally]:
    """Count the requests sent to Label Studio from inside this block, by any gateway.

    Projects run concurrently, one task each, on one shared gateway, so the difference of
    its global `request_count` would charge each project with the others' requests. httpx
    runs event hooks in the calling task, and a ContextVar is per task, so each block sees
    only its own requests. Blocks nest (both count). A task started inside the block that
    outlives it stops counting when the block ends, so the number read afterwards is final.
    """
    tally = RequestTally()
    reset = _OPEN_TALLIES.set((*_OPEN_TALLIES.get(), tally))
    try:
        yield tally
    finally:
        tally.open = False
        _OPEN_TALLIES.reset(reset)


class NotGiven(enum.Enum):
    """Sentinel type for "leave this field as it is" in `update_project`."""

    NOT_GIVEN = "not given"


NOT_GIVEN: Final = NotGiven.NOT_GIVEN


class LabelStudioGateway:
    """Async access to one Label Studio server; use `async with` or call `close()`."""

    # Deleting a version costs ~3 queries per prediction (121 s for 10.5k on SQLite), and an
    # import recounts the whole project; a timeout there is ambiguous, so wait long.
    DELETE_VERSION_TIMEOUT = 900.0
    IMPORT_TIMEOUT = 300.0
    # Reading around tasks Label Studio cannot serve costs ~log2(page) requests each;
    # past this many per scan, the poll fails as it would have without the search.
    MAX_ISOLATION_REQUESTS = 64

    def __init__(
        self,
        *,
        url: str,
        token: Secret,
        timeout: float = 30.0,
        max_attempts: int = 5,
        max_backoff: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.max_backoff = max_backoff
        # What went over the wire, retries and token refreshes included (event hooks).
        self.request_count = 0
        self.bytes_received = 0  # response body bytes as received (before decompression)
        self._reachable = True
        self._auth = LabelStudioAuth(token)
        self._http = httpx.AsyncClient(
            base_url=self.url,
            auth=self._auth,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            event_hooks={"request": [self._count_request], "response": [self._count_response]},
            headers={"User-Agent": "aldaemon"},
        )
        self._auth.bind(self._http)
        self._sdk = AsyncLabelStudio(  # type: ignore[no-untyped-call]
            base_url=self.url,
            api_key=_SDK_PLACEHOLDER_KEY,
            httpx_client=self._http,
            timeout=timeout,
            max_retries=0,
        )

    def __repr__(self) -> str:
        return f"LabelStudioGateway(url={self.url!r}, token={self._auth.kind.value})"

    async def __aenter__(self) -> LabelStudioGateway:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    # ---- reading ---------------------------------------------------------------------

    async def check_auth(self) -> None:
        """One cheap authenticated call; raises LabelStudioAuthError for a bad token."""
        await self._sdk_call(lambda: self._sdk.users.whoami(), operation="check_auth")

    async def get_project(self, project_id: int) -> ProjectInfo:
        project = await self._sdk_call(
            lambda: self._sdk.projects.get(id=project_id),
            operation="get_project",
            project_id=project_id,
        )
        return payloads.parse_project(project.dict())

    async def fetch_changed_tasks(
        self,
        project_id: int,
        *,
        schema: LabelingSchema,
        updated_after: str | None,
        page_size: int = 500,
    ) -> list[TaskRecord]:
        """The tasks of `fetch_changes`, for callers that need no scan details."""
        changes = await self.fetch_changes(
            project_id, schema=schema, updated_after=updated_after, page_size=page_size
        )
        return changes.tasks

    async def fetch_changes(
        self,
        project_id: int,
        *,
        schema: LabelingSchema,
        updated_after: str | None,
        page_size: int = 500,
    ) -> ChangedTasks:
        """Every task updated after `updated_after` (None: all), with all its annotations.

        A scan of several pages is not one snapshot: a task on an early page annotated
        while later pages are read carries a new `updated_at` the scan never saw, yet later
        pages may hold newer timestamps. `ChangedTasks.started_at` (the server's clock when
        the first page was served, less a second) is the highest watermark such a scan
        can safely claim.

        Pages by id on page 1 (`id > last id seen`), so an annotator's work between two
        pages can neither shift a task out of the scan nor show it twice, and an idle poll
        costs exactly one request.

        A task Label Studio cannot serve is skipped, not allowed to stall the poll: one
        such task (a lone surrogate in its text, say) makes every listing that includes it
        answer HTTP 500. It is logged once per poll as `labelstudio.task_unreadable` and
        the other tasks are returned (see `_read_around_unreadable`). The caller's
        watermark may then pass the skipped task, and that loses nothing: fixing the task
        in Label Studio gives it a new `updated_at`, so a later poll reads it with every
        annotation it has, those made while it was unreadable included; deleting it is
        found by `list_task_ids` like any deletion.
        """
        stats = _ScanStats()
        raw_tasks = await self._scan_tasks(
            project_id,
            include=payloads.TASK_INCLUDE,
            updated_after=updated_after,
            page_size=page_size,
            operation="fetch_changed_tasks",
            skip_unreadable=True,
            stats=stats,
        )
        return ChangedTasks(
            tasks=[payloads.parse_task(task, schema) for task in raw_tasks],
            pages=stats.pages,
            started_at=stats.started_at,
        )

    async def list_task_ids(self, project_id: int, *, page_size: int = 1000) -> list[int]:
        """Ids of every task in the project, ascending: how deleted tasks are found."""
        raw_tasks = await self._scan_tasks(
            project_id,
            include=payloads.TASK_ID_INCLUDE,
            updated_after=None,
            page_size=page_size,
            operation="list_task_ids",
        )
        return [int(task["id"]) for task in raw_tasks]

    async def model_version_counts(self, project_id: int) -> dict[str, int]:
        """Predictions per model version in the project, e.g. {"aldaemon-v3": 120}."""
        answer = await self._request(
            "GET",
            f"/api/projects/{project_id}/model-versions/",
            operation="model_version_counts",
            project_id=project_id,
        )
        return payloads.model_version_counts(answer)

    async def list_predictions(self, project_id: int) -> list[tuple[int, str, float | None]]:
        """(task id, model version, score) of every prediction in the project; unpaginated."""
        predictions = await self._sdk_call(
            lambda: self._sdk.predictions.list(project=project_id),
            operation="list_predictions",
            project_id=project_id,
        )
        return [
            (
                int(prediction.task),
                str(prediction.model_version or ""),
                None if prediction.score is None else float(prediction.score),
            )
            for prediction in predictions
        ]

    async def list_views(self, project_id: int) -> list[ViewInfo]:
        answer = await self._request(
            "GET",
            "/api/dm/views/",
            params={"project": project_id},
            operation="list_views",
            project_id=project_id,
        )
        return [payloads.parse_view(view) for view in answer or []]

    async def next_task(self, project_id: int) -> dict[str, Any] | None:
        """The task Label Studio serves the token's user next (and locks), or None."""
        try:
            answer = await self._request(
                "GET",
                f"/api/projects/{project_id}/next",
                operation="next_task",
                project_id=project_id,
                missing_ok=_NO_TASKS_LEFT,
            )
        except _NothingLeft:
            return None
        return dict(answer)

    # ---- writing ---------------------------------------------------------------------

    async def import_predictions(
        self,
        project_id: int,
        *,
        model_version: str,
        schema: LabelingSchema,
        predictions: Sequence[PredictionRecord],
    ) -> int:
        """Upload predictions in one bulk call; returns how many Label Studio created.

        Not idempotent: retried only when the connection could not be opened. After a
        timeout or a 5xx the predictions may exist anyway (the server commits before it
        recounts the project), so the caller checks `model_version_counts` before sending
        again. Labels are validated first, because Label Studio silently drops foreign ones.
        """
        body = payloads.prediction_payloads(predictions, model_version=model_version, schema=schema)
        if not body:
            return 0
        answer = await self._request(
            "POST",
            f"/api/projects/{project_id}/import/predictions",
            json_body=body,
            operation="import_predictions",
            project_id=project_id,
            replay=Replay.IF_NOT_SENT,
            timeout=max(self.timeout, self.IMPORT_TIMEOUT),
        )
        created = int(answer["created"])
        if created != len(body):
            log.warning(
                "labelstudio.predictions_dropped",
                project_id=project_id,
                model_version=model_version,
                sent=len(body),
                created=created,
            )
        return created

    async def delete_model_version(self, project_id: int, model_version: str) -> int:
        """Delete every prediction of one version; returns how many. Slow on the server."""
        if not model_version:
            raise ValueError("model_version must not be empty")
        answer = await self._request(
            "DELETE",
            f"/api/projects/{project_id}/model-versions/",
            json_body={"model_version": model_version},
            operation="delete_model_version",
            project_id=project_id,
            timeout=max(self.timeout, self.DELETE_VERSION_TIMEOUT),
        )
        return int(answer.get("deleted_predictions", 0))

    async def update_project(
        self,
        project_id: int,
        *,
        model_version: str | NotGiven | None = NOT_GIVEN,
        sampling: str | NotGiven | None = NOT_GIVEN,
        show_collab_predictions: bool | NotGiven | None = NOT_GIVEN,
    ) -> ProjectInfo:
        """Change only the given fields. `model_version=None` clears the active version.

        Label Studio 1.23 refuses a null model_version (400) but takes "" for "none", and
        refuses a version that has no predictions yet: upload first, then switch.
        """
        changes: dict[str, object] = {}
        if not isinstance(model_version, NotGiven):
            changes["model_version"] = model_version or ""
        if not isinstance(sampling, NotGiven) and sampling is not None:
            if sampling not in SAMPLING_MODES:
                raise ValueError(f"sampling must be one of {sorted(SAMPLING_MODES)}")
            changes["sampling"] = sampling
        if (
            not isinstance(show_collab_predictions, NotGiven)
            and show_collab_predictions is not None
        ):
            changes["show_collab_predictions"] = show_collab_predictions
        if not changes:
            return await self.get_project(project_id)
        answer = await self._request(
            "PATCH",
            f"/api/projects/{project_id}/",
            json_body=changes,
            operation="update_project",
            project_id=project_id,
        )
        return payloads.parse_project(answer)

    async def create_view(self, project_id: int, *, data: Mapping[str, object]) -> ViewInfo:
        answer = await self._request(
            "POST",
            "/api/dm/views/",
            json_body={"project": project_id, "data": dict(data)},
            operation="create_view",
            project_id=project_id,
            replay=Replay.IF_NOT_SENT,
        )
        return payloads.parse_view(answer)

    async def replace_view(
        self, view_id: int, *, project_id: int, data: Mapping[str, object]
    ) -> ViewInfo:
        """Replace the view's whole `data` (Label Studio's PATCH does not merge it).

        A 404 here means the view is gone, not the project: LabelStudioRefused(status 404).
        """
        answer = await self._request(
            "PATCH",
            f"/api/dm/views/{view_id}/",
            json_body={"project": project_id, "data": dict(data)},
            operation="replace_view",
        )
        return payloads.parse_view(answer)

    async def create_webhook(
        self, project_id: int, *, url: str, secret: Secret, actions: Sequence[str]
    ) -> int:
        """Register a webhook that sends `secret` in the WEBHOOK_SECRET_HEADER header."""
        answer = await self._request(
            "POST",
            "/api/webhooks/",
            json_body={
                "url": url,
                "project": project_id,
                "send_payload": True,
                "send_for_all_actions": False,
                "actions": list(actions),
                "headers": {WEBHOOK_SECRET_HEADER: secret.reveal()},
                "is_active": True,
            },
            operation="create_webhook",
            project_id=project_id,
            replay=Replay.IF_NOT_SENT,
            extra_secrets=(secret.reveal(),),
        )
        return int(answer["id"])

    # ---- helpers for tests, the demo and its simulated annotators ---------------------

    async def create_project(self, *, title: str, label_config: str) -> int:
        project = await self._sdk_call(
            lambda: self._sdk.projects.create(title=title, label_config=label_config),
            operation="create_project",
            replay=Replay.IF_NOT_SENT,
        )
        return int(project.id)  # type: ignore[arg-type]

    async def import_tasks(self, project_id: int, tasks: Sequence[Mapping[str, object]]) -> int:
        """Import tasks (each a task `{"data": ...}` or a bare data dict); returns the count.

        Label Studio inserts tasks of one request in one transaction: all or none.
        """
        if not tasks:
            return 0
        answer = await self._request(
            "POST",
            f"/api/projects/{project_id}/import",
            json_body=[dict(task) for task in tasks],
            operation="import_tasks",
            project_id=project_id,
            replay=Replay.IF_NOT_SENT,
            timeout=max(self.timeout, self.IMPORT_TIMEOUT),
        )
        return int(answer["task_count"])

    async def create_annotation(
        self,
        task_id: int,
        *,
        schema: LabelingSchema,
        label: str | None,
        was_cancelled: bool = False,
    ) -> int:
        """Annotate a task with `label` (None: empty result); returns the annotation id."""
        result = [] if label is None else payloads.choices_result(schema, label)
        annotation = await self._sdk_call(
            lambda: self._sdk.annotations.create(
                id=task_id, result=result, was_cancelled=was_cancelled
            ),
            operation="create_annotation",
            replay=Replay.IF_NOT_SENT,
        )
        return int(annotation.id)

    async def update_annotation(
        self, annotation_id: int, *, schema: LabelingSchema, label: str
    ) -> None:
        result = payloads.choices_result(schema, label)
        await self._sdk_call(
            lambda: self._sdk.annotations.update(id=annotation_id, result=result),
            operation="update_annotation",
        )

    async def delete_annotation(self, annotation_id: int) -> None:
        await self._sdk_call(
            lambda: self._sdk.annotations.delete(id=annotation_id), operation="delete_annotation"
        )

    async def delete_task(self, task_id: int) -> None:
        await self._sdk_call(
            lambda: self._sdk.tasks.delete(id=str(task_id)), operation="delete_task"
        )

    # ---- plumbing --------------------------------------------------------------------

    async def _scan_tasks(
        self,
        project_id: int,
        *,
        include: str,
        updated_after: str | None,
        page_size: int,
        operation: str,
        skip_unreadable: bool = False,
        stats: _ScanStats | None = None,
    ) -> list[dict[str, Any]]:
        stats = stats or _ScanStats()
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        scan = _TaskScan(
            project_id=project_id,
            include=include,
            updated_after=updated_after,
            page_size=page_size,
            operation=operation,
        )
        budget = _Budget(self.MAX_ISOLATION_REQUESTS)
        tasks: list[dict[str, Any]] = []
        after_id: int | None = None
        while True:
            try:
                answer = await self._request(
                    "GET",
                    "/api/tasks/",
                    params=scan.params(after_id=after_id),
                    operation=operation,
                    project_id=project_id,
                    report_500=skip_unreadable,
                    on_response=stats.note_response,
                )
                page: list[dict[str, Any]] = list(answer.get("tasks") or [])
                listed = [int(task["id"]) for task in page]
            except _Http500 as failure:
                # Only a server that still lists the page's ids gets its tasks isolated.
                answer = await self._request(
                    "GET",
                    "/api/tasks/",
                    params=scan.params(after_id=after_id, include=payloads.TASK_ID_INCLUDE),
                    operation=operation,
                    project_id=project_id,
                )
                listed = [int(task["id"]) for task in answer.get("tasks") or []]
                page = await self._read_around_unreadable(
                    scan, listed, after_id=after_id, budget=budget, failure=failure.error
                )
            tasks.extend(page)
            stats.pages += 1
            # `total` counts what matches this request's filters: all of it came back.
            if not listed or len(listed) >= int(answer.get("total", 0)):
                return tasks
            last_id = listed[-1]
            if after_id is not None and last_id <= after_id:
                raise LabelStudioRefused(
                    f"{operation}: Label Studio ignored the id filter (page ended at "
                    f"{last_id} after {after_id}); refusing to loop"
                )
            after_id = last_id

    async def _read_around_unreadable(
        self,
        scan: _TaskScan,
        listed: list[int],
        *,
        after_id: int | None,
        budget: _Budget,
        failure: LabelStudioUnreachable,
    ) -> list[dict[str, Any]]:
        """The tasks of one page that Label Studio can serve, found by bisection.

        The page, the id range (after_id, listed[-1]], answered 500 after all retries while
        its ids-only listing answered: some task in it cannot be serialized. The range is
        cut in two at its middle listed id and the left half is read on its own. If it
        answers, the right half must hold the culprit and is cut again without being asked;
        if not, both halves are searched. A range holding one task is then read by itself
        and the task skipped if that fails: every skip rests on two failed listings, the
        last of the task alone, so one passing 500 never skips a good task. Ranges rather
        than id lists keep the halves tiling the page, gaps included.

        Cost: log2(n) to 2*log2(n) requests per unreadable task in a page of n (measured:
        15 for 2 among 20, 41 for 3 among 500), on top of the failed page and the ids
        listing. A 500 is not retried inside the search; anything else (connection lost,
        502, 503) is, and if it persists the poll fails as usual. When the scan's budget is
        spent, the poll fails with the page's own error.
        """

        async def read(low: int | None, high: int) -> list[dict[str, Any]] | None:
            """Tasks in (low, high], or None when Label Studio answered 500."""
            if not budget.spend():
                gave_up = LabelStudioUnreachable(
                    f"{failure}; gave up isolating the tasks Label Studio cannot serve after "
                    f"{budget.limit} extra requests",
                    status_code=failure.status_code,
                )
                self._note_unreachable(gave_up)
                raise gave_up
            try:
                answer = await self._request(
                    "GET",
                    "/api/tasks/",
                    params=scan.params(after_id=low, up_to_id=high),
                    operation=scan.operation,
                    project_id=scan.project_id,
                    report_500=True,
                    retry_500=False,
                )
            except _Http500:
                return None
            return list(answer.get("tasks") or [])

        async def isolate(low: int | None, ids: list[int]) -> list[dict[str, Any]]:
            """The readable tasks of (low, ids[-1]], a range known to answer 500."""
            if len(ids) == 1:
                alone = await read(low, ids[0])
                if alone is not None:
                    return alone
                log.error(
                    "labelstudio.task_unreadable",
                    project_id=scan.project_id,
                    task_id=ids[0],
                    status=failure.status_code,
                    action=f"fix or delete task {ids[0]} in Label Studio; "
                    "aldaemon skips it until then",
                )
                return []
            middle = len(ids) // 2
            left, right = ids[:middle], ids[middle:]
            left_tasks = await read(low, left[-1])
            if left_tasks is None:
                return await isolate(low, left) + await read_or_isolate(left[-1], right)
            # The whole range failed and its left half did not: the right half holds it.
            return left_tasks + await isolate(left[-1], right)

        async def read_or_isolate(low: int | None, ids: list[int]) -> list[dict[str, Any]]:
            tasks = await read(low, ids[-1])
            return tasks if tasks is not None else await isolate(low, ids)

        if not listed:
            return []
        return await isolate(after_id, listed)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        params: Mapping[str, str | int] | None = None,
        json_body: object = None,
        project_id: int | None = None,
        replay: Replay = Replay.IDEMPOTENT,
        timeout: float | None = None,
        missing_ok: str | None = None,
        extra_secrets: Sequence[str] = (),
        report_500: bool = False,
        retry_500: bool = True,
        on_response: Callable[[httpx.Response], None] | None = None,
    ) -> Any:
        """One raw JSON call with retries; returns the decoded answer (None when empty).

        `report_500`: a final HTTP 500 raises `_Http500` for the caller to handle, without
        logging Label Studio unreachable. `retry_500=False` gives up on the first 500.
        """

        async def attempt() -> Any:
            response = await self._http.request(
                method,
                path,
                params=dict(params) if params else None,
                json=json_body,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
            )
            if response.status_code >= 400:
                body = _decode(response)
                if (
                    missing_ok is not None
                    and response.status_code == 404
                    and missing_ok in payloads.server_message(body)
                ):
                    raise _NothingLeft
                raise HttpStatusError(
                    response.status_code, headers=dict(response.headers), body=body
                )
            if on_response is not None:
                on_response(response)
            if not response.content:
                return None
            answer = _decode(response)
            if isinstance(answer, str):
                raise LabelStudioRefused(
                    f"{operation}: Label Studio answered HTTP {response.status_code} "
                    "with something that is not JSON; is the URL right?"
                )
            return answer

        return await self._run(
            attempt,
            operation=operation,
            project_id=project_id,
            replay=replay,
            extra_secrets=extra_secrets,
            report_500=report_500,
            final_statuses=() if retry_500 else (500,),
        )

    async def _sdk_call(
        self,
        call: Callable[[], Awaitable[T]],
        *,
        operation: str,
        project_id: int | None = None,
        replay: Replay = Replay.IDEMPOTENT,
    ) -> T:
        async def attempt() -> T:
            try:
                return await call()
            except ApiError as error:
                raise HttpStatusError(
                    error.status_code or 0, headers=dict(error.headers or {}), body=error.body
                ) from None
            except ParsingError:
                raise LabelStudioRefused(
                    f"{operation}: Label Studio answered in a shape the SDK could not read; "
                    "is this Label Studio 1.23?"
                ) from None

        return await self._run(attempt, operation=operation, project_id=project_id, replay=replay)

    async def _run(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        operation: str,
        project_id: int | None,
        replay: Replay,
        extra_secrets: Sequence[str] = (),
        report_500: bool = False,
        final_statuses: Collection[int] = (),
    ) -> T:
        """Retry `attempt`, map its failure to an aldaemon error, log reachability changes."""
        try:
            result = await call_with_retries(
                attempt,
                replay=replay,
                max_attempts=self.max_attempts,
                max_backoff=self.max_backoff,
                operation=operation,
                final_statuses=final_statuses,
            )
        except _NothingLeft:
            self._note_reachable()
            raise
        except AldaemonError:
            raise
        except (httpx.HTTPError, HttpStatusError) as failure:
            error = to_labelstudio_error(
                failure,
                operation=operation,
                url=self.url,
                token_kind=self._auth.kind,
                project_id=project_id,
                secrets=(*self._auth.secrets(), *extra_secrets),
            )
            if (
                report_500
                and isinstance(failure, HttpStatusError)
                and failure.status_code == 500
                and isinstance(error, LabelStudioUnreachable)
            ):
                raise _Http500(error) from None
            if isinstance(error, LabelStudioUnreachable):
                self._note_unreachable(error)
            else:
                self._note_reachable()
            # A transport error carries only the URL and errno: worth keeping as the cause.
            cause = failure if isinstance(failure, httpx.HTTPError) else None
            raise error from cause
        self._note_reachable()
        return result

    def _note_unreachable(self, error: LabelStudioUnreachable) -> None:
        if self._reachable:
            log.error(
                "labelstudio.unreachable",
                url=self.url,
                error=str(error),
                action="retrying at every poll; nothing is lost meanwhile",
            )
        self._reachable = False

    def _note_reachable(self) -> None:
        if not self._reachable:
            log.info("labelstudio.recovered", url=self.url)
        self._reachable = True

    async def _count_request(self, request: httpx.Request) -> None:
        self.request_count += 1
        for tally in _OPEN_TALLIES.get():
            if tally.open:
                tally.requests += 1

    async def _count_response(self, response: httpx.Response) -> None:
        await response.aread()
        self.bytes_received += response.num_bytes_downloaded


class _NothingLeft(Exception):
    """Internal: an expected 404 meaning "empty", e.g. no next task."""


class _Http500(Exception):
    """Internal: HTTP 500 where the caller asked to see it (a listing that may hold a task
    Label Studio cannot serialize); `error` is what to raise if the caller gives up."""

    def __init__(self, error: LabelStudioUnreachable) -> None:
        super().__init__(str(error))
        self.error = error


@dataclasses.dataclass(frozen=True, kw_only=True)
class _TaskScan:
    """What every request of one task scan shares; its pages differ by id range only."""

    project_id: int
    include: str
    updated_after: str | None
    page_size: int
    operation: str

    def params(
        self, *, after_id: int | None, up_to_id: int | None = None, include: str | None = None
    ) -> dict[str, str | int]:
        query = payloads.task_query(
            updated_after=self.updated_after, after_id=after_id, up_to_id=up_to_id
        )
        return {
            "project": self.project_id,
            "page": 1,
            "page_size": self.page_size,
            "fields": "all",
            "include": include or self.include,
            "query": query,
        }


@dataclasses.dataclass
class _Budget:
    """Extra requests one scan may spend reading around unreadable tasks."""

    limit: int
    spent: int = 0

    def spend(self) -> bool:
        """Take one request from the budget; False when none is left."""
        if self.spent >= self.limit:
            return False
        self.spent += 1
        return True


@dataclass(frozen=True)
class ChangedTasks:
    """What one scan for changed tasks read."""

    tasks: list[TaskRecord]
    pages: int
    started_at: datetime | None  # server clock at the first page, less 1 s; None if unknown


@dataclass
class _ScanStats:
    pages: int = 0
    started_at: datetime | None = None

    def note_response(self, response: httpx.Response) -> None:
        if self.started_at is not None:
            return
        date = response.headers.get("date")
        try:
            served = parsedate_to_datetime(date) if date else None
        except (TypeError, ValueError):
            served = None
        if served is not None and served.tzinfo is not None:
            # `Date` has whole seconds and is written after the query ran: step back one.
            self.started_at = served.astimezone(UTC) - timedelta(seconds=1)


def _decode(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text
