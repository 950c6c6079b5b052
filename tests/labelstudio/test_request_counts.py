"""Requests are charged to the project that sent them, though projects run concurrently."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest

from aldaemon.config import Config, load_config
from aldaemon.loop.context import CycleReport
from aldaemon.service.metrics import Metrics
from aldaemon.service.runtime import Runtime
from tests.conftest import project_factory
from tests.lsserver import LabelStudioClient, LabelStudioServer

pytestmark = pytest.mark.labelstudio

REQUESTS_METRIC = "aldaemon_labelstudio_requests_total"


def two_project_config(tmp_path: Path, server: LabelStudioServer, project_ids: list[int]) -> Config:
    """One config, both projects; retraining is out of reach so every cycle only polls."""
    projects = "".join(
        f"""
[[projects]]
id = {project_id}
[projects.retrain]
min_new_annotations = 100000
"""
        for project_id in project_ids
    )
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[labelstudio]
url = "{server.url}"
token = "{server.legacy_token}"
max_attempts = 2

[state]
dir = "{tmp_path / "state"}"

[daemon]
listen = ""
{projects}"""
    )
    return load_config(path, env={})


@dataclass(frozen=True)
class ConcurrentRun:
    project_ids: list[int]
    second: dict[int, CycleReport]  # concurrent idle polls, after first cycles and prunes
    metric_after_first: dict[int, float]
    metric_after_second: dict[int, float]
    gateway_total_after_first: int


def requests_metric(metrics: Metrics, project_id: int) -> float:
    value = metrics.registry.get_sample_value(REQUESTS_METRIC, {"project": str(project_id)})
    return value or 0.0


async def run_twice_concurrently(config: Config) -> ConcurrentRun:
    metrics = Metrics()
    project_ids = [project.id for project in config.projects]
    async with Runtime(config, metrics=metrics) as runtime:
        assert runtime.gateway is not None
        await asyncio.gather(*(runtime.run_cycle(p) for p in config.projects))
        await runtime.wait_for_prunes()
        metric_after_first = {pid: requests_metric(metrics, pid) for pid in project_ids}
        gateway_total_after_first = runtime.gateway.request_count
        second = await asyncio.gather(*(runtime.run_cycle(p) for p in config.projects))
        metric_after_second = {pid: requests_metric(metrics, pid) for pid in project_ids}
    return ConcurrentRun(
        project_ids=project_ids,
        second={report.project_id: report for report in second},
        metric_after_first=metric_after_first,
        metric_after_second=metric_after_second,
        gateway_total_after_first=gateway_total_after_first,
    )


@pytest.fixture(scope="module")
def concurrent_run(
    tmp_path_factory: pytest.TempPathFactory,
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
    request: pytest.FixtureRequest,
) -> ConcurrentRun:
    """Two projects, each with a few tasks, cycled twice side by side on one Runtime."""
    make_project = project_factory(ls_client, request)
    tasks = [{"text": f"some text {number}"} for number in range(5)]
    project_ids = [make_project(tasks), make_project(tasks)]
    config = two_project_config(tmp_path_factory.mktemp("counts"), label_studio, project_ids)
    return asyncio.run(run_twice_concurrently(config))


class TestRequestsPerProject:
    def test_concurrent_idle_polls_each_report_their_own_two_requests(
        self, concurrent_run: ConcurrentRun
    ) -> None:
        """Two projects polling at once each report the 2 requests an idle poll costs, not 4."""
        sent = {
            pid: report.counts["http_requests"] for pid, report in concurrent_run.second.items()
        }
        assert dict.fromkeys(concurrent_run.project_ids, 2) == sent

    def test_metric_grows_by_each_projects_own_requests(
        self, concurrent_run: ConcurrentRun
    ) -> None:
        """The requests metric of each project grows by its own idle poll's 2 requests."""
        grown = {
            pid: concurrent_run.metric_after_second[pid] - concurrent_run.metric_after_first[pid]
            for pid in concurrent_run.project_ids
        }
        assert dict.fromkeys(concurrent_run.project_ids, 2.0) == grown

    def test_every_request_is_charged_to_exactly_one_project(
        self, concurrent_run: ConcurrentRun
    ) -> None:
        """After concurrent first cycles and their prunes, the per-project metric sums to the
        gateway's total: prunes are charged too, and nothing twice."""
        charged = sum(concurrent_run.metric_after_first.values())
        assert float(concurrent_run.gateway_total_after_first) == charged
