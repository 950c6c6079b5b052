"""Big pools against the real Label Studio: publish the K most informative tasks, read page
by page, and list every task id only when a deletion can have happened.

`queue_depth` = K makes upload, activation, pruning and an annotator's `/next` cost O(K)
instead of O(N); these tests check that what K < N publishes is what the loop promises
(exactly K predictions, the K lowest scores, activated, in the queue view, resumable).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aldaemon.config import Config
from aldaemon.loop.context import CycleReport
from aldaemon.loop.cycle import RESYNC_BEFORE_TRAINING_SECONDS, Cycle
from aldaemon.model.features import text_digest
from aldaemon.service.runtime import Runtime
from aldaemon.store import Store
from tests import helpers
from tests.conftest import MakeProject
from tests.faultproxy import FaultProxy
from tests.helpers import annotate_some, make_tasks, one_cycle, write_config
from tests.lsserver import ExternalLabelStudioServer, LabelStudioClient, LabelStudioServer

pytestmark = pytest.mark.labelstudio

DEPTH = 6  # K: published of the 32 unlabeled tasks below
UNSERVABLE_TEXT = "broken \ud800 text"  # valid JSON, not encodable: Label Studio cannot list it


@dataclass(frozen=True)
class Lab:
    """The server, a setup client, a project maker and a scratch directory, for one test."""

    server: LabelStudioServer
    client: LabelStudioClient
    make_project: MakeProject
    tmp_path: Path


@pytest.fixture
def lab(
    tmp_path: Path,
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
    make_project: MakeProject,
) -> Lab:
    return Lab(server=label_studio, client=ls_client, make_project=make_project, tmp_path=tmp_path)


def version_scores(client: LabelStudioClient, project_id: int, version: str) -> dict[int, float]:
    return {
        int(p["task"]): float(p["score"])
        for p in client.predictions(project_id)
        if p["model_version"] == version
    }


def behind(proxy: FaultProxy, server: LabelStudioServer) -> LabelStudioServer:
    """The same server, reached through the proxy."""
    return ExternalLabelStudioServer(
        url=proxy.url, legacy_token=server.legacy_token, pat=server.pat
    )


def top_k_config(directory: Path, server: LabelStudioServer, project_id: int, **kw: Any) -> Config:
    directory.mkdir(parents=True, exist_ok=True)
    return write_config(directory, server, project_id, predictions=f"queue_depth = {DEPTH}", **kw)


class TestPublishingTheMostInformative:
    def test_k_of_n_leaves_exactly_the_k_lowest_scores(self, lab: Lab) -> None:
        """With queue_depth K, the version holds exactly K predictions, and they are the K
        lowest scores of the whole pool: a second daemon (another prefix) trained on the
        same labels publishes every task, and none of the others scores below the K."""
        tasks, labels = make_tasks(40, seed=31)
        project_id = lab.make_project(tasks)
        annotate_some(lab.client, lab.client.task_ids(project_id), labels, 8)
        every_dir = lab.tmp_path / "every"
        every_dir.mkdir()
        every = write_config(
            every_dir,
            lab.server,
            project_id,
            predictions='queue_depth = 0\nversion_prefix = "every"',
        )

        top_report = asyncio.run(
            one_cycle(top_k_config(lab.tmp_path / "top", lab.server, project_id))
        )
        every_report = asyncio.run(one_cycle(every))

        assert ("ok", "ok") == (top_report.outcome, every_report.outcome)
        top = version_scores(lab.client, project_id, "aldaemon-v1")
        pool = version_scores(lab.client, project_id, "every-v1")
        assert (DEPTH, 32) == (len(top), len(pool))
        assert top == {task: pool[task] for task in top}  # same labels, same model
        assert max(top.values()) <= min(s for task, s in pool.items() if task not in top)

    def test_the_k_are_activated_served_first_and_fill_the_queue_view(self, lab: Lab) -> None:
        """K < N passes the count check (K expected, K held), becomes the active version
        with uncertainty sampling, `/next` serves its lowest score, and the queue view
        lists exactly the K tasks, lowest score first."""
        tasks, labels = make_tasks(40, seed=32)
        project_id = lab.make_project(tasks)
        annotate_some(lab.client, lab.client.task_ids(project_id), labels, 8)
        config = top_k_config(lab.tmp_path, lab.server, project_id)

        report = asyncio.run(one_cycle(config))

        scores = version_scores(lab.client, project_id, "aldaemon-v1")
        store = Store.open(config.state.dir, lock=False)
        try:
            version = store.require_version(project_id, "aldaemon-v1")
            view_id = store.get_meta(project_id).view_id
        finally:
            store.close()
        assert ("ok", "active", DEPTH) == (report.outcome, version.state, version.uploaded_count)
        project = lab.client.get_project(project_id)
        assert ("aldaemon-v1", "Uncertainty sampling") == (
            project["model_version"],
            project["sampling"],
        )
        served = lab.client.call("GET", f"/api/projects/{project_id}/next")
        assert min(scores.values()) == scores[served["id"]]
        listed = lab.client.call(
            "GET", f"/api/tasks/?view={view_id}&project={project_id}&page_size=100&fields=all"
        )["tasks"]
        assert sorted(scores, key=lambda task: (scores[task], task)) == [t["id"] for t in listed]

    def test_an_upload_of_k_resumes_after_a_lost_answer(self, lab: Lab) -> None:
        """The first import answer of K = 6 in batches of 4 is lost: the next cycle sends
        only the missing batch and activates the same version, one prediction per task."""
        tasks, labels = make_tasks(40, seed=33)
        project_id = lab.make_project(tasks)
        annotate_some(lab.client, lab.client.task_ids(project_id), labels, 8)
        with FaultProxy(lab.server.url) as proxy:
            proxy.drop_response_next(n=1, method="POST", path_contains=helpers.IMPORT_PATH)
            server = behind(proxy, lab.server)
            config = write_config(
                lab.tmp_path,
                server,
                project_id,
                predictions=f"queue_depth = {DEPTH}\nbatch_size = 4",
            )
            first = asyncio.run(one_cycle(config))
            second = asyncio.run(one_cycle(config))
            sent = helpers.statuses(proxy, helpers.IMPORT_PATH, method="POST")

        held = [p["task"] for p in lab.client.predictions(project_id)]
        assert ("failed", "ok", "aldaemon-v1") == (first.outcome, second.outcome, second.version)
        assert [None, 201] == sent
        assert (DEPTH, DEPTH) == (len(held), len(set(held)))
        assert "aldaemon-v1" == lab.client.get_project(project_id)["model_version"]


class TestCachedFeatures:
    def test_a_changed_task_s_features_are_recomputed(self, lab: Lab) -> None:
        """The first scoring computes every pool task's features and keeps them; after a
        task's text is edited in Label Studio (and one more task labeled), the next scoring
        recomputes that task's features alone and reuses the other 30, and its stored
        features are of the new text."""
        tasks, labels = make_tasks(40, seed=34)
        project_id = lab.make_project(tasks)
        task_ids = lab.client.task_ids(project_id)
        annotate_some(lab.client, task_ids, labels, 8)
        config = top_k_config(lab.tmp_path, lab.server, project_id)
        first = asyncio.run(one_cycle(config))
        edited, new_text = task_ids[20], "an edited review: utterly superb, would buy again"
        lab.client.call("PATCH", f"/api/tasks/{edited}", {"data": {"text": new_text}})
        lab.client.annotate(task_ids[8], labels[8])  # a new label, so the next cycle trains

        second = asyncio.run(one_cycle(config, forced_training=True))

        assert ("ok", "ok") == (first.outcome, second.outcome)
        assert (32, 0) == (
            first.counts["features_computed"],
            first.counts.get("features_reused", 0),
        )
        assert (1, 30) == (second.counts["features_computed"], second.counts["features_reused"])
        store = Store.open(config.state.dir, lock=False)
        try:
            digests = store.feature_digests(project_id)
        finally:
            store.close()
        assert text_digest(new_text) == digests[edited][1]
        assert len(digests) == 32


# ---- reading: page by page, and the id listing only when counts disagree ------------------


# Past RESYNC_BEFORE_TRAINING_SECONDS (a listing that recent spares the next one anyway),
# well before `resync_interval = 3600`.
AFTER_A_WHILE = 2 * RESYNC_BEFORE_TRAINING_SECONDS


class MovableClock:
    """The wall clock, plus an offset the test moves: time passes without waiting.

    `monotonic` moves by the same offset, so the daemon sees time pass (intervals are
    measured on the monotonic clock), not a step of the wall clock."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic() + self.offset


async def cycles(config: Config, steps: list[Callable[[], Any]]) -> list[CycleReport]:
    """One cycle per step, on one runtime and one movable clock; each step runs first
    and may move the clock (it gets it)."""
    clock = MovableClock()
    reports = []
    async with Runtime(config) as runtime:
        ctx = runtime.context(config.projects[0])
        ctx.clock = clock
        ctx.monotonic = clock.monotonic
        for step in steps:
            step_result = step()
            if isinstance(step_result, float):
                clock.offset += step_result
            reports.append(await Cycle(ctx).run())
    return reports


def live_task_ids(config: Config, project_id: int) -> set[int]:
    store = Store.open(config.state.dir, lock=False)
    try:
        return set(store.known_task_ids(project_id))
    finally:
        store.close()


class TestListingTaskIds:
    def test_equal_count_churn_waits_for_the_periodic_listing(self, lab: Lab) -> None:
        """One task deleted and one added that the poll cannot read: Label Studio counts as
        many tasks as local state, so the training goes ahead without a listing; the
        periodic listing (`resync_interval`) then finds the deleted task. The first cycle
        lists no ids either: it read every task into an empty store, which is a listing."""
        tasks, labels = make_tasks(24, seed=34)
        project_id = lab.make_project(tasks)
        ids = lab.client.task_ids(project_id)
        annotate_some(lab.client, ids, labels, 8)
        config = write_config(lab.tmp_path, lab.server, project_id, extra="resync_interval = 3600")
        deleted = ids[0]

        def churn() -> float:
            lab.client.call("DELETE", f"/api/tasks/{deleted}/")
            lab.client.import_tasks(project_id, [{"text": UNSERVABLE_TEXT}])
            for i in range(8, 12):
                lab.client.annotate(ids[i], labels[i])
            return AFTER_A_WHILE

        after_first: set[int] = set()

        def remember_live() -> float:
            after_first.update(live_task_ids(config, project_id))
            return 3601.0  # the listing is due

        first, second, third = asyncio.run(cycles(config, [lambda: None, churn, remember_live]))

        assert ("resync" in first.seconds, "resync" in second.seconds) == (False, False)
        assert ("aldaemon-v2", deleted in after_first) == (second.version, True)
        assert (1, deleted) == (
            third.counts.get("tasks_deleted"),
            next(iter(set(ids) - live_task_ids(config, project_id))),
        )

    def test_a_deletion_alone_is_listed_before_the_training(self, lab: Lab) -> None:
        """A task deleted with nothing added leaves Label Studio one task short: the
        counts disagree, so the ids are listed before the training, long before the
        periodic listing is due, and the deleted task's label does not train."""
        tasks, labels = make_tasks(24, seed=35)
        project_id = lab.make_project(tasks)
        ids = lab.client.task_ids(project_id)
        annotate_some(lab.client, ids, labels, 8)
        config = write_config(lab.tmp_path, lab.server, project_id, extra="resync_interval = 3600")

        def delete_one() -> float:
            lab.client.call("DELETE", f"/api/tasks/{ids[0]}/")
            for i in range(8, 12):
                lab.client.annotate(ids[i], labels[i])
            return AFTER_A_WHILE

        _, second = asyncio.run(cycles(config, [lambda: None, delete_one]))

        assert (1, "aldaemon-v2") == (second.counts.get("tasks_deleted"), second.version)
        assert ids[0] not in live_task_ids(config, project_id)


class TestReadingPageByPage:
    def test_a_scan_cut_short_keeps_its_pages_and_not_its_watermark(self, lab: Lab) -> None:
        """Label Studio goes away after the first page of a first read: that page's tasks
        are stored, the watermark has not moved (later pages are unread), and the next
        poll reads the rest."""
        tasks, _ = make_tasks(1100, seed=36)  # pages of 500: three
        project_id = lab.make_project(tasks)
        with FaultProxy(lab.server.url) as proxy:
            server = behind(proxy, lab.server)
            config = write_config(lab.tmp_path, server, project_id)
            proxy.fail_next(
                n=None, status=503, method="GET", path_contains="/api/tasks/", spare_first=1
            )
            first = asyncio.run(one_cycle(config))
            store = Store.open(config.state.dir, lock=False)
            try:
                held, watermark = (
                    len(store.known_task_ids(project_id)),
                    store.sync_state(project_id).watermark,
                )
            finally:
                store.close()
            proxy.clear_rules()
            second = asyncio.run(one_cycle(config))

        assert ("failed", 500, None) == (first.outcome, held, watermark)
        assert (second.outcome, len(live_task_ids(config, project_id))) == ("idle", 1100)
