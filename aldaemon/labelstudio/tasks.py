"""Reading tasks: the changed-task poll, the full id listing, a version's tasks, paged by id.

Each is one scan of `/api/tasks/` with a Data Manager `query` (see `payloads.task_query`),
page 1 each time with `id > last id seen`, so an annotator's work between two pages can
neither shift a task out of the scan nor show it twice. A scan of the whole project (the
first read, the id listing) also bounds each request by an id window (`_IdWindow`), which
keeps Label Studio's per-page totals from costing O(project) a page. Scans hand their
pages on one at a time (async iterators): a reader of a million tasks holds one page, not
the project.
The scan also reads around a task Label Studio cannot serve (bisecting the page), so one
broken task cannot stall the poll.
"""

from __future__ import annotations

import dataclasses
from array import array
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import structlog

from aldaemon.errors import LabelStudioRefused, LabelStudioUnreachable
from aldaemon.labelstudio import payloads
from aldaemon.labelstudio.http import GatewayPart, Http500
from aldaemon.records import LabelingSchema, TaskRecord

log = structlog.get_logger(__name__)


class TaskReads(GatewayPart):
    """The task listings of `LabelStudioGateway`."""

    # Reading around tasks Label Studio cannot serve costs ~log2(page) requests each;
    # past this many per scan, the poll fails as it would have without the search.
    MAX_ISOLATION_REQUESTS = 64

    async def changed_task_pages(
        self,
        project_id: int,
        *,
        schema: LabelingSchema,
        updated_after: str | None,
        page_size: int = 500,
    ) -> AsyncIterator[ChangedPage]:
        """Every task updated after `updated_after` (None: all), with all its annotations,
        one page at a time (at least one page, possibly empty).

        A scan of several pages is not one snapshot: a task on an early page annotated
        while later pages are read carries a new `updated_at` the scan never saw, yet later
        pages may hold newer timestamps. `ChangedPage.started_at` (the server's clock when
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
        scan = _TaskScan(
            project_id,
            payloads.TASK_INCLUDE,
            "fetch_changed_tasks",
            page_size,
            updated_after=updated_after,
            windowed=updated_after is None,  # a first or rebuilding read: every task
        )
        stats = _ScanStats()
        async for raw_tasks in self._scan_pages(scan, skip_unreadable=True, stats=stats):
            yield ChangedPage(
                tasks=[payloads.parse_task(task, schema) for task in raw_tasks],
                pages_read=stats.pages,
                started_at=stats.started_at,
            )

    async def list_task_ids(self, project_id: int, *, page_size: int = 1000) -> array[int]:
        """Ids of every task in the project, ascending: how deleted tasks are found.

        Packed 8 bytes an id (a Python list holds ~36 bytes an id: 36 MiB at 1M tasks)."""
        scan = _TaskScan(
            project_id, payloads.TASK_ID_INCLUDE, "list_task_ids", page_size, windowed=True
        )
        ids = array("q")
        async for raw_tasks in self._scan_pages(scan):
            ids.extend(int(task["id"]) for task in raw_tasks)
        return ids

    async def tasks_holding_version(
        self, project_id: int, model_version: str, *, page_size: int = 1000
    ) -> set[int]:
        """Ids of the tasks that hold a prediction of `model_version`, paged like the rest.

        `/api/predictions/` cannot do this at scale: Label Studio 1.23 answers it in one
        unpaged list of every prediction of every version (it ignores `page`, `page_size`
        and `model_version`). The task listing filters by version and pages by id.
        """
        scan = _TaskScan(
            project_id,
            payloads.TASK_VERSIONS_INCLUDE,
            "list_version_tasks",
            page_size,
            model_version=model_version,
        )
        holding: set[int] = set()
        async for raw_tasks in self._scan_pages(scan):
            holding.update(
                int(task["id"])
                for task in raw_tasks
                if model_version in payloads.versions_of_task(task)
            )
        return holding

    async def _scan_pages(
        self,
        scan: _TaskScan,
        *,
        skip_unreadable: bool = False,
        stats: _ScanStats | None = None,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The raw tasks of `scan`, one page at a time; at least one (possibly empty) page.

        A windowed scan bounds every request after the first by an id window as well
        (`_IdWindow`), and yields only the pages that hold tasks."""
        stats = stats or _ScanStats()
        if scan.page_size < 1:
            raise ValueError("page_size must be at least 1")
        window: _IdWindow | None = None  # a windowed scan's, from its second page on
        budget = _Budget(self.MAX_ISOLATION_REQUESTS)
        after_id: int | None = None
        yielded = False
        while True:
            # The first page is read by id alone: it finds where the project's ids start,
            # and a project that fits in it costs no other request.
            up_to_id = window.upper(after_id) if window is not None else None
            answer, page, listed = await self._read_page(
                scan,
                after_id,
                up_to_id,
                skip_unreadable=skip_unreadable,
                stats=stats,
                budget=budget,
            )
            stats.pages += 1
            if page or window is None:
                yielded = True
                yield page
            # `total` counts what matches this request's filters: all of it came back.
            total = int(answer.get("total", 0))
            complete = not listed or len(listed) >= total
            if complete and (window is None or window.done(up_to_id)):
                if not yielded:
                    yield []
                return
            if complete:  # this window is read whole; the next one starts at its end
                assert window is not None and up_to_id is not None
                window.resize(found=len(listed), total=total)
                after_id = up_to_id
                continue
            last_id = listed[-1]
            if after_id is not None and last_id <= after_id:
                raise LabelStudioRefused(
                    f"{scan.operation}: Label Studio ignored the id filter (page ended at "
                    f"{last_id} after {after_id}); refusing to loop"
                )
            after_id = last_id
            if scan.windowed and window is None:
                highest = await self._highest_id(scan) or last_id
                window = _IdWindow(highest=highest, size=scan.page_size, page_size=scan.page_size)

    async def _read_page(
        self,
        scan: _TaskScan,
        after_id: int | None,
        up_to_id: int | None,
        *,
        skip_unreadable: bool,
        stats: _ScanStats,
        budget: _Budget,
    ) -> tuple[dict[str, Any], list[dict[str, Any]], list[int]]:
        """One request of a scan: its answer, the tasks it could read, the ids it listed."""
        try:
            answer = await self._get_tasks(
                scan,
                scan.params(after_id=after_id, up_to_id=up_to_id),
                report_500=skip_unreadable,
                on_response=stats.note_response,
            )
            page: list[dict[str, Any]] = list(answer.get("tasks") or [])
            return answer, page, [int(task["id"]) for task in page]
        except Http500 as failure:
            # Only a server that still lists the page's ids gets its tasks isolated.
            answer = await self._get_tasks(
                scan,
                scan.params(after_id=after_id, up_to_id=up_to_id, include=payloads.TASK_ID_INCLUDE),
            )
            listed = [int(task["id"]) for task in answer.get("tasks") or []]
            page = await self._read_around_unreadable(
                scan, listed, after_id=after_id, budget=budget, failure=failure.error
            )
            return answer, page, listed

    async def _highest_id(self, scan: _TaskScan) -> int | None:
        """The highest task id `scan` matches (None: no task), where a windowed scan ends.

        Asked after the first page, so after the scan's `started_at` (the watermark it may
        claim): a task created later, with a higher id, is after the watermark too, and the
        next poll reads it."""
        answer = await self._get_tasks(
            scan,
            scan.params(after_id=None, include=payloads.TASK_ID_INCLUDE, highest_first=True),
        )
        tasks = answer.get("tasks") or []
        return max((int(task["id"]) for task in tasks), default=None)

    async def _get_tasks(
        self, scan: _TaskScan, params: dict[str, str | int], **options: Any
    ) -> dict[str, Any]:
        """One `/api/tasks/` request of `scan`; `options` go to the HTTP layer."""
        answer: dict[str, Any] = await self._http.request(
            "GET",
            "/api/tasks/",
            params=params,
            operation=scan.operation,
            project_id=scan.project_id,
            **options,
        )
        return answer

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
                self._http.note_unreachable(gave_up)
                raise gave_up
            try:
                answer = await self._get_tasks(
                    scan,
                    scan.params(after_id=low, up_to_id=high),
                    report_500=True,
                    retry_500=False,
                )
            except Http500:
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


@dataclasses.dataclass(frozen=True)
class _TaskScan:
    """What every request of one task scan shares; its pages differ by id range only."""

    project_id: int
    include: str  # the task fields each page carries
    operation: str  # names the scan in logs and errors
    page_size: int = 1000
    # The scan's filter: tasks changed since `updated_after`, or holding `model_version`.
    updated_after: str | None = None
    model_version: str | None = None
    windowed: bool = False  # read in id windows (see `_IdWindow`): whole-project scans

    def params(
        self,
        *,
        after_id: int | None,
        up_to_id: int | None = None,
        include: str | None = None,
        highest_first: bool = False,
    ) -> dict[str, str | int]:
        query = payloads.task_query(
            updated_after=self.updated_after,
            after_id=after_id,
            up_to_id=up_to_id,
            model_version=self.model_version,
            highest_first=highest_first,
        )
        return {
            "project": self.project_id,
            "page": 1,
            "page_size": 1 if highest_first else self.page_size,
            "fields": "all",
            "include": include or self.include,
            "query": query,
        }


@dataclass
class _IdWindow:
    """The id window of a whole-project scan: each request reads ids in (after, after +
    size], so Label Studio's per-page totals (a COUNT and two SUMs over every task the
    filter matches, computed for every page) cover one window instead of every task
    after the cursor. Keyset pages alone make a full read of N tasks O(N^2 / page) on
    Label Studio's side: 1.2 s a page at the start of a 1,000,000-task project against
    0.16 s for a window (bench/million_paging.py, BENCHMARKS.md).

    Ids are global across projects, so a project's tasks may be sparse: a window that
    held less than a page doubles (up to MAX_PAGES pages of ids), one whose total passed
    two pages halves (down to one page).
    """

    MAX_PAGES = 64

    highest: int  # the scan's highest id: the last window ends there
    size: int
    page_size: int

    def upper(self, after_id: int | None) -> int | None:
        """The window after `after_id`; None for the first page (no id known yet)."""
        return None if after_id is None else after_id + self.size

    def done(self, up_to_id: int | None) -> bool:
        """Is a scan whose request ended at `up_to_id` (None: no end) at its end?"""
        return up_to_id is None or up_to_id >= self.highest

    def resize(self, *, found: int, total: int) -> None:
        if total > 2 * self.page_size:
            self.size = max(self.page_size, self.size // 2)
        elif found < self.page_size:
            self.size = min(self.size * 2, self.MAX_PAGES * self.page_size)


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
class ChangedPage:
    """One page of a scan for changed tasks, and where the scan stands."""

    tasks: list[TaskRecord]
    pages_read: int  # this page included
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
