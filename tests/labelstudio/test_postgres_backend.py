"""The core end-to-end behaviours of `test_cycle.py`, against Label Studio on PostgreSQL.

Why again on PostgreSQL: the daemon leans on server behaviour that differs by database.
Commit order can differ from `updated_at` order (the watermark's overlap exists for it),
NULL scores sort last instead of first in uncertainty sampling, and the Data Manager's
ordering and filters are SQL the ORM writes differently per backend.

The test bodies are the ones in `test_cycle.py`, borrowed by name, not copied: this module
overrides the `label_studio`, `ls_client` and `make_project` fixtures those bodies ask for,
so the same code runs against the `label_studio_pg` server. Only a representative subset
runs here, to keep the added time modest.
"""

from __future__ import annotations

import pytest

from tests import test_cycle
from tests.conftest import MakeProject, project_factory
from tests.lsserver import LabelStudioClient, LabelStudioServer, missing_postgres_outcome

_reading = test_cycle.TestReading
_publishing = test_cycle.TestPublishing


@pytest.fixture
def label_studio(label_studio_pg: LabelStudioServer) -> LabelStudioServer:
    """In this module, "the" Label Studio is the one on PostgreSQL."""
    return label_studio_pg


@pytest.fixture
def ls_client(label_studio_pg: LabelStudioServer) -> LabelStudioClient:
    return LabelStudioClient(label_studio_pg)


@pytest.fixture
def make_project(ls_client: LabelStudioClient, request: pytest.FixtureRequest) -> MakeProject:
    return project_factory(ls_client, request)


@pytest.mark.labelstudio
@pytest.mark.postgres
class TestReadingOnPostgreSQL:
    test_first_poll_records_every_annotation_and_idle_poll_costs_two_requests = (
        _reading.test_first_poll_records_every_annotation_and_idle_poll_costs_two_requests
    )
    test_updates_skips_and_deletions_land = _reading.test_updates_skips_and_deletions_land
    test_deleted_task_is_found_by_the_resync = _reading.test_deleted_task_is_found_by_the_resync


@pytest.mark.labelstudio
@pytest.mark.postgres
class TestPublishingOnPostgreSQL:
    test_crossing_the_threshold_publishes_an_active_sorted_version = (
        _publishing.test_crossing_the_threshold_publishes_an_active_sorted_version
    )
    test_queue_view_lists_unlabeled_tasks_by_ascending_score = (
        _publishing.test_queue_view_lists_unlabeled_tasks_by_ascending_score
    )
    test_three_trainings_keep_two_own_versions_and_spare_foreign_ones = (
        _publishing.test_three_trainings_keep_two_own_versions_and_spare_foreign_ones
    )
    test_queue_view_holds_only_the_active_version_not_one_it_is_a_prefix_of = (
        _publishing.test_queue_view_holds_only_the_active_version_not_one_it_is_a_prefix_of
    )


class TestMissingPostgreSQL:
    @pytest.mark.parametrize("value", ["true", "True", "1"])
    def test_ci_fails_instead_of_skipping(self, value: str) -> None:
        """With CI=true a missing PostgreSQL fails the tests that need it."""
        assert "fail" == missing_postgres_outcome({"CI": value})

    @pytest.mark.parametrize("env", [{}, {"CI": "false"}, {"CI": ""}])
    def test_a_developer_machine_skips(self, env: dict[str, str]) -> None:
        """Outside CI a missing PostgreSQL skips them, with the reason shown."""
        assert "skip" == missing_postgres_outcome(env)
