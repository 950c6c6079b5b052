"""The whole loop against a real Label Studio: read, reconcile, train, publish, prune."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aldaemon.config import Config
from aldaemon.loop.poll import WATERMARK_SETTLE_SECONDS, cap_watermark
from aldaemon.store import Store
from aldaemon.sync.reconcile import ReconcileOutcome
from aldaemon.sync.versions import (
    label_counts,
    queue_view_data,
    training_examples,
)
from aldaemon.views.status import collect
from tests.conftest import MakeProject, project_factory
from tests.helpers import (
    EVERY_TASK,
    annotate_some,
    make_tasks,
    newest_task_update,
    one_cycle,
    predictions_by_version,
    wait_for_server_clock,
    wait_until,
    write_config,
)
from tests.lsserver import LabelStudioClient, LabelStudioServer

pytestmark = pytest.mark.labelstudio


def watermark_settled(config: Config, project_id: int) -> bool:
    """True once the settle time has passed since the stored watermark last moved."""
    store = Store.open(config.state.dir, lock=False)
    try:
        moved_at = store.sync_state(project_id).watermark_moved_at
    finally:
        store.close()
    return moved_at is not None and time.time() - moved_at >= WATERMARK_SETTLE_SECONDS


class TestReading:
    def test_first_poll_records_every_annotation_and_idle_poll_costs_two_requests(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """1,000 tasks with 200 annotations are all recorded; an idle rerun sends <= 2 requests."""
        tasks, labels = make_tasks(1000)
        project_id = make_project(tasks)
        task_ids = ls_client.task_ids(project_id)
        annotate_some(ls_client, task_ids, labels, 200)
        config = write_config(
            tmp_path, label_studio, project_id, retrain="min_new_annotations = 100000"
        )
        # A scan of several pages claims no watermark past the server's clock at its first
        # page (its Date header, whole seconds) less a second: annotations newer than that
        # leave the watermark short of them, the next poll moves it again, and the settle
        # time starts over (correct, but not this test).
        newest = newest_task_update(ls_client, project_id)
        wait_for_server_clock(ls_client, newest + timedelta(seconds=1))

        first = asyncio.run(one_cycle(config))
        store = Store.open(config.state.dir, lock=False)
        assert 200 == sum(label_counts(store.annotated_tasks(project_id)).values())
        store.close()
        assert 200 == first.counts["annotations_created"]

        # The first poll after the watermark moved re-reads the overlap window below it once
        # (rows may commit out of timestamp order): the newest annotations, and the 1,000
        # new tasks too when annotating took less than the window (2 pages). Once a poll ran
        # the settle time after the move, an idle poll asks only for newer rows.
        wait_until(
            lambda: watermark_settled(config, project_id),
            timeout=WATERMARK_SETTLE_SECONDS + 30,
            what="the settle time after the watermark's move",
        )
        second = asyncio.run(one_cycle(config))
        third = asyncio.run(one_cycle(config))
        assert 0 == second.counts.get("annotations_created", 0)
        assert second.counts["http_requests"] <= 3
        assert (2, 0) == (third.counts["http_requests"], third.counts.get("tasks_read", 0))

    def test_updates_skips_and_deletions_land(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """An edited label, a skip and a deleted annotation are all reflected locally."""
        tasks, _ = make_tasks(6)
        project_id = make_project(tasks)
        ids = ls_client.task_ids(project_id)
        first = ls_client.annotate(ids[0], "pos")
        doomed = ls_client.annotate(ids[1], "neg")
        ls_client.annotate(ids[2], None, was_cancelled=True)
        config = write_config(
            tmp_path, label_studio, project_id, retrain="min_new_annotations = 99"
        )
        asyncio.run(one_cycle(config))

        ls_client.call(
            "PATCH",
            f"/api/annotations/{first}/",
            {
                "result": [
                    {
                        "from_name": "sentiment",
                        "to_name": "text",
                        "type": "choices",
                        "value": {"choices": ["neg"]},
                    }
                ]
            },
        )
        ls_client.delete_annotation(doomed)
        report = asyncio.run(one_cycle(config))

        store = Store.open(config.state.dir, lock=False)
        examples = {
            e.task_id: e.label for e in training_examples(store.annotated_tasks(project_id))
        }
        unlabeled = {task_id for task_id, _ in store.unlabeled_tasks(project_id)}
        store.close()
        assert {ids[0]: "neg"} == examples
        assert ids[2] in unlabeled  # a skip is not a label
        assert (1, 1) == (
            report.counts.get("annotations_updated", 0),
            report.counts.get("annotations_deleted", 0),
        )

    def test_deleted_task_is_found_by_the_resync(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """A task deleted in Label Studio is marked deleted, and its label no longer counts."""
        tasks, _ = make_tasks(8)
        project_id = make_project(tasks)
        ids = ls_client.task_ids(project_id)
        ls_client.annotate(ids[0], "pos")
        config = write_config(
            tmp_path, label_studio, project_id, retrain="min_new_annotations = 99"
        )
        asyncio.run(one_cycle(config))
        ls_client.call("DELETE", f"/api/tasks/{ids[0]}/")

        report = asyncio.run(one_cycle(config, force_resync=True))

        store = Store.open(config.state.dir, lock=False)
        assert ids[0] not in store.known_task_ids(project_id)
        assert {} == label_counts(store.annotated_tasks(project_id))
        store.close()
        assert 1 == report.counts["tasks_deleted"]

    def test_valve_refuses_to_delete_everything_when_listing_is_empty(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """When Label Studio suddenly lists no task, local tasks and labels are kept."""
        tasks, _ = make_tasks(10)
        project_id = make_project(tasks)
        ids = ls_client.task_ids(project_id)
        ls_client.annotate(ids[0], "pos")
        config = write_config(
            tmp_path, label_studio, project_id, retrain="min_new_annotations = 99"
        )
        asyncio.run(one_cycle(config))
        ls_client.call("DELETE", f"/api/projects/{project_id}/tasks/")

        asyncio.run(one_cycle(config, force_resync=True))

        store = Store.open(config.state.dir, lock=False)
        assert (10, {"pos": 1}) == (
            len(store.known_task_ids(project_id)),
            label_counts(store.annotated_tasks(project_id)),
        )
        store.close()


class TestPublishing:
    def test_below_threshold_nothing_is_trained(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """With fewer new labels than min_new_annotations no version is published."""
        tasks, labels = make_tasks(30)
        project_id = make_project(tasks)
        annotate_some(ls_client, ls_client.task_ids(project_id), labels, 6)
        config = write_config(
            tmp_path, label_studio, project_id, retrain="min_new_annotations = 10"
        )

        report = asyncio.run(one_cycle(config))

        assert ("idle", "6 of 10 new labels") == (report.outcome, report.decision)
        assert {} == predictions_by_version(ls_client, project_id)

    def test_crossing_the_threshold_publishes_an_active_sorted_version(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """One version: one scored prediction per unlabeled task, active, served lowest first."""
        tasks, labels = make_tasks(60, seed=3)
        project_id = make_project(tasks)
        ids = ls_client.task_ids(project_id)
        annotate_some(ls_client, ids, labels, 12)
        config = write_config(tmp_path, label_studio, project_id, predictions=EVERY_TASK)

        report = asyncio.run(one_cycle(config))

        assert ("ok", "aldaemon-v1") == (report.outcome, report.version)
        predictions = [
            p for p in ls_client.predictions(project_id) if p["model_version"] == "aldaemon-v1"
        ]
        assert sorted(ids[12:]) == sorted(p["task"] for p in predictions)
        assert all(0.0 <= p["score"] <= 1.0 for p in predictions)
        project = ls_client.get_project(project_id)
        assert ("aldaemon-v1", "Uncertainty sampling", True) == (
            project["model_version"],
            project["sampling"],
            project["show_collab_predictions"],
        )
        lowest = min(predictions, key=lambda p: (p["score"], p["task"]))
        served = ls_client.call("GET", f"/api/projects/{project_id}/next")
        served_score = next(p["score"] for p in predictions if p["task"] == served["id"])
        assert lowest["score"] == served_score

    def test_queue_view_lists_unlabeled_tasks_by_ascending_score(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """The Data Manager view shows unlabeled tasks of the active version, lowest score first."""
        tasks, labels = make_tasks(40, seed=5)
        project_id = make_project(tasks)
        ids = ls_client.task_ids(project_id)
        annotate_some(ls_client, ids, labels, 10)
        config = write_config(tmp_path, label_studio, project_id, predictions=EVERY_TASK)
        asyncio.run(one_cycle(config))
        store = Store.open(config.state.dir, lock=False)
        view_id = store.get_meta(project_id).view_id
        store.close()

        listed = ls_client.call(
            "GET", f"/api/tasks/?view={view_id}&project={project_id}&page_size=100&fields=all"
        )["tasks"]

        scores = {p["task"]: p["score"] for p in ls_client.predictions(project_id)}
        listed_scores = [scores[task["id"]] for task in listed]
        assert sorted(ids[10:]) == sorted(task["id"] for task in listed)
        assert sorted(listed_scores) == listed_scores

    def test_queue_view_holds_only_the_active_version_not_one_it_is_a_prefix_of(
        self,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """Pinned at v1 while v10 exists: tasks scored only by v10 stay out of the queue.

        Label Studio's model-version filter matches substrings, so "aldaemon-v1" alone
        also matches "aldaemon-v10"; such a task has no score for the active version and
        would sort first (NULL before any number).
        """
        tasks, _ = make_tasks(12, seed=11)
        project_id = make_project(tasks)
        ids = ls_client.task_ids(project_id)
        by_v1 = {task_id: 0.1 * (i + 1) for i, task_id in enumerate(ids[:6])}
        only_v10 = ids[6:]
        predictions = [("aldaemon-v1", t, score) for t, score in by_v1.items()] + [
            ("aldaemon-v10", t, 0.05) for t in [*ids[:6], *only_v10]
        ]
        ls_client.call(
            "POST",
            f"/api/projects/{project_id}/import/predictions",
            [
                {
                    "task": task_id,
                    "model_version": version,
                    "score": score,
                    "result": [
                        {
                            "from_name": "sentiment",
                            "to_name": "text",
                            "type": "choices",
                            "value": {"choices": ["pos"]},
                        }
                    ],
                }
                for version, task_id, score in predictions
            ],
        )
        ls_client.call("PATCH", f"/api/projects/{project_id}", {"model_version": "aldaemon-v1"})
        view = ls_client.call(
            "POST",
            "/api/dm/views/",
            {"project": project_id, "data": queue_view_data(title="q", version="aldaemon-v1")},
        )

        listed = ls_client.call(
            "GET", f"/api/tasks/?view={view['id']}&project={project_id}&page_size=100&fields=all"
        )["tasks"]

        assert sorted(by_v1, key=by_v1.__getitem__) == [task["id"] for task in listed]

    def test_three_trainings_keep_two_own_versions_and_spare_foreign_ones(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """keep_versions = 2 leaves the last two own versions; another prefix is untouched."""
        tasks, labels = make_tasks(50, seed=7)
        project_id = make_project(tasks)
        ids = ls_client.task_ids(project_id)
        ls_client.call(
            "POST",
            f"/api/projects/{project_id}/import/predictions",
            [
                {
                    "task": ids[-1],
                    "result": [
                        {
                            "from_name": "sentiment",
                            "to_name": "text",
                            "type": "choices",
                            "value": {"choices": ["pos"]},
                        }
                    ],
                    "score": 0.5,
                    "model_version": "someone-else-v1",
                }
            ],
        )
        config = write_config(
            tmp_path, label_studio, project_id, predictions="keep_versions = 2\nprune_per_cycle = 5"
        )
        for round_number in range(3):
            start = round_number * 6
            for i in range(start, start + 6):
                ls_client.annotate(ids[i], labels[i])
            asyncio.run(one_cycle(config))

        versions = set(predictions_by_version(ls_client, project_id))
        assert {"aldaemon-v2", "aldaemon-v3", "someone-else-v1"} == versions

    def test_every_task_gets_exactly_one_prediction_per_version(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """Uploading in several batches still gives one prediction per (task, version)."""
        tasks, labels = make_tasks(45, seed=11)
        project_id = make_project(tasks)
        annotate_some(ls_client, ls_client.task_ids(project_id), labels, 8)
        config = write_config(tmp_path, label_studio, project_id, predictions="batch_size = 7")

        asyncio.run(one_cycle(config))

        per_task = Counter(
            (p["task"], p["model_version"]) for p in ls_client.predictions(project_id)
        )
        assert (37, 1) == (len(per_task), max(per_task.values()))


class TestColdStartAndBadData:
    def test_one_class_only_publishes_nothing_and_status_says_why(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """With labels of a single class there is no model, and status names the missing class."""
        tasks, _ = make_tasks(20)
        project_id = make_project(tasks)
        for task_id in ls_client.task_ids(project_id)[:8]:
            ls_client.annotate(task_id, "pos")
        config = write_config(tmp_path, label_studio, project_id)

        report = asyncio.run(one_cycle(config))

        [status] = collect(config)["projects"]
        assert "cold start: 'neg' has 0 of 2 labels" == status["last_decision"]
        assert (None, {}) == (report.version, predictions_by_version(ls_client, project_id))

    def test_odd_task_data_is_skipped_and_the_cycle_goes_on(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """Tasks whose text is empty, a number or a list are skipped; the rest are published."""
        tasks, labels = make_tasks(20, seed=2)
        odd: list[dict[str, object]] = [{"text": ""}, {"text": 42}, {"text": ["a", "list"]}]
        project_id = make_project(tasks + odd)
        ids = ls_client.task_ids(project_id)
        annotate_some(ls_client, ids, labels, 8)
        config = write_config(tmp_path, label_studio, project_id)

        report = asyncio.run(one_cycle(config))

        published = set(predictions_by_version(ls_client, project_id)["aldaemon-v1"])
        assert ("ok", 3) == (report.outcome, report.counts["tasks_skipped"])
        assert set(ids[8:20]) == published

    def test_label_outside_the_config_is_not_trained_on(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """An annotation whose label the config lacks is left out; predictions stay valid."""
        tasks, labels = make_tasks(30, seed=4)
        project_id = make_project(tasks)
        ids = ls_client.task_ids(project_id)
        annotate_some(ls_client, ids, labels, 10)
        ls_client.annotate(ids[10], "meh")
        config = write_config(tmp_path, label_studio, project_id)

        report = asyncio.run(one_cycle(config))

        labels_sent = {
            p["result"][0]["value"]["choices"][0] for p in ls_client.predictions(project_id)
        }
        assert "ok" == report.outcome
        assert labels_sent <= {"pos", "neg"}


def outcome_with_newest(updated_at: str) -> ReconcileOutcome:
    """A reconcile outcome whose newest task was updated at `updated_at`, nothing else."""
    return ReconcileOutcome(
        tasks=(), created=(), updated=(), deleted=(), label_changes=0, newest_updated_at=updated_at
    )


class TestWatermarkOfMultiPageScans:
    def test_a_newer_timestamp_than_the_scan_start_is_capped(self) -> None:
        """A several-page scan claims no watermark past the server time it started at."""
        outcome = outcome_with_newest("2026-11-27T10:00:05.000000Z")
        started = datetime(2026, 11, 27, 10, 0, 2, tzinfo=UTC)
        assert "2026-11-27T10:00:02.000000Z" == cap_watermark(outcome, started).newest_updated_at

    def test_an_older_timestamp_is_kept(self) -> None:
        """When every task read is older than the scan start, the watermark is unchanged."""
        outcome = outcome_with_newest("2026-11-27T10:00:01.000000Z")
        started = datetime(2026, 11, 27, 10, 0, 2, tzinfo=UTC)
        assert "2026-11-27T10:00:01.000000Z" == cap_watermark(outcome, started).newest_updated_at

    def test_without_the_server_clock_the_watermark_does_not_move(self) -> None:
        """No Date header: the scan claims nothing, the next poll reads the window again."""
        outcome = outcome_with_newest("2026-11-27T10:00:01.000000Z")
        assert cap_watermark(outcome, None).newest_updated_at is None

    def test_gateway_reports_pages_and_the_server_clock_of_a_scan(
        self,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """A paged scan hands on one page at a time, says how many it read and when the
        server served the first."""
        from aldaemon.labelstudio.gateway import LabelStudioGateway
        from aldaemon.labelstudio.labeling_config import parse_labeling_config
        from aldaemon.secret import Secret
        from aldaemon.sync.timestamps import parse_ls_datetime

        tasks, _ = make_tasks(12)
        project_id = make_project(tasks)
        schema = parse_labeling_config(ls_client.get_project(project_id)["label_config"])

        async def scan() -> Any:
            async with LabelStudioGateway(
                url=label_studio.url, token=Secret(label_studio.legacy_token)
            ) as gateway:
                return [
                    page
                    async for page in gateway.changed_task_pages(
                        project_id, schema=schema, updated_after=None, page_size=5
                    )
                ]

        pages = asyncio.run(scan())
        assert ([1, 2, 3], [5, 5, 2]) == (
            [page.pages_read for page in pages],
            [len(page.tasks) for page in pages],
        )
        newest = max(parse_ls_datetime(task.updated_at) for page in pages for task in page.tasks)
        started_at = pages[-1].started_at
        assert started_at is not None
        # `Date` has whole seconds (floored): the server clock was below Date + 1 s.
        assert (newest - started_at).total_seconds() < 2.0


# ---- the same behaviours against Label Studio on PostgreSQL -----------------------------
# Why again on PostgreSQL: the daemon leans on server behaviour that differs by database.
# Commit order can differ from `updated_at` order (the watermark's overlap exists for it),
# NULL scores sort last instead of first in uncertainty sampling, and the Data Manager's
# ordering and filters are SQL the ORM writes differently per backend. The test bodies
# above are borrowed by name, not copied; `OnPostgreSQL` overrides the fixtures they ask
# for, so the same code runs against the `label_studio_pg` server. Only a representative
# subset runs there, to keep the added time modest.


class OnPostgreSQL:
    """Fixtures that make "the" Label Studio of a test class the one on PostgreSQL."""

    @pytest.fixture
    def label_studio(self, label_studio_pg: LabelStudioServer) -> LabelStudioServer:
        return label_studio_pg

    @pytest.fixture
    def ls_client(self, label_studio_pg: LabelStudioServer) -> LabelStudioClient:
        return LabelStudioClient(label_studio_pg)

    @pytest.fixture
    def make_project(
        self, ls_client: LabelStudioClient, request: pytest.FixtureRequest
    ) -> MakeProject:
        return project_factory(ls_client, request)


@pytest.mark.postgres
class TestReadingOnPostgreSQL(OnPostgreSQL):
    test_first_poll_records_every_annotation_and_idle_poll_costs_two_requests = (
        TestReading.test_first_poll_records_every_annotation_and_idle_poll_costs_two_requests
    )
    test_updates_skips_and_deletions_land = TestReading.test_updates_skips_and_deletions_land
    test_deleted_task_is_found_by_the_resync = TestReading.test_deleted_task_is_found_by_the_resync


@pytest.mark.postgres
class TestPublishingOnPostgreSQL(OnPostgreSQL):
    test_crossing_the_threshold_publishes_an_active_sorted_version = (
        TestPublishing.test_crossing_the_threshold_publishes_an_active_sorted_version
    )
    test_queue_view_lists_unlabeled_tasks_by_ascending_score = (
        TestPublishing.test_queue_view_lists_unlabeled_tasks_by_ascending_score
    )
    test_three_trainings_keep_two_own_versions_and_spare_foreign_ones = (
        TestPublishing.test_three_trainings_keep_two_own_versions_and_spare_foreign_ones
    )
    test_queue_view_holds_only_the_active_version_not_one_it_is_a_prefix_of = (
        TestPublishing.test_queue_view_holds_only_the_active_version_not_one_it_is_a_prefix_of
    )
