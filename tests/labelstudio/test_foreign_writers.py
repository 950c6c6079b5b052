"""Two daemons (two state dirs) on one project, both publishing `aldaemon-v<n>`.

Real Runtimes against the real Label Studio. Two scenarios:

- one after the other: A publishes v1; B, started with an empty state dir, adopts v1
  (numbering past it, as a rebuilt state does) and publishes v2; A then finds a version
  of its prefix it never sent active, refuses to go on and says so (`/healthz` 503),
  until it is given another `version_prefix` (200 again).
- a race: B reads the version counts while Label Studio still holds nothing (its answer
  held back by the fault proxy until A has published v1), so both name their version
  aldaemon-v1; B refuses to upload over A's.

In both, no task ever holds two predictions of one version.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from aldaemon.config import Config, load_config
from aldaemon.loop.context import CycleReport
from aldaemon.service.health import HealthReport
from aldaemon.service.runtime import Runtime
from tests.faultproxy import FaultProxy
from tests.helpers import captured_events, events, health_now
from tests.lsserver import LabelStudioClient, LabelStudioServer

pytestmark = pytest.mark.labelstudio


def write_config(
    path: Path, *, url: str, token: str, project_id: int, prefix: str = "aldaemon"
) -> Config:
    path.write_text(
        f"""
[labelstudio]
url = "{url}"
token = "{token}"
timeout = 60

[state]
dir = "{path.parent / "state"}"

[daemon]
listen = ""

[[projects]]
id = {project_id}
[projects.retrain]
min_new_annotations = 4
min_interval = 0
min_per_class = 2
[projects.predictions]
version_prefix = "{prefix}"
"""
    )
    return load_config(path, env={})


def labeled_project(client: LabelStudioClient, title: str) -> int:
    rng = random.Random(7)
    project_id = client.create_project(title=title)
    labels = ["pos" if i % 2 == 0 else "neg" for i in range(20)]
    words = {"pos": ["great", "lovely", "fine"], "neg": ["awful", "broken", "bad"]}
    task_ids = client.import_tasks(
        project_id,
        [{"text": " ".join(rng.choices(words[label], k=4)) + " box"} for label in labels],
    )
    for task_id, label in zip(task_ids[:8], labels[:8], strict=True):
        client.annotate(task_id, label)
    return project_id


def most_predictions_on_one_task(client: LabelStudioClient, project_id: int) -> int:
    """The most predictions any task holds under one model version (1 is right)."""
    per_task_version = Counter(
        (p["task"], p["model_version"]) for p in client.predictions(project_id)
    )
    return max(per_task_version.values(), default=0)


@dataclass
class TwoWriters:
    logs_a: list[MutableMapping[str, Any]] = field(default_factory=list)
    first_a: CycleReport | None = None
    b: CycleReport | None = None
    health_a_refusing: HealthReport | None = None
    health_a_fixed: HealthReport | None = None
    health_b: HealthReport | None = None
    most_per_task: int = 0
    active: str | None = None


@pytest.fixture(scope="class")
def two_writers(
    tmp_path_factory: pytest.TempPathFactory,
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
) -> TwoWriters:
    project_id = labeled_project(ls_client, "two writers, one after the other")
    token = label_studio.legacy_token
    dir_a, dir_b = tmp_path_factory.mktemp("writer-a"), tmp_path_factory.mktemp("writer-b")
    config_a = write_config(
        dir_a / "a.toml", url=label_studio.url, token=token, project_id=project_id
    )
    config_b = write_config(
        dir_b / "b.toml", url=label_studio.url, token=token, project_id=project_id
    )
    renamed_a = write_config(
        dir_a / "a2.toml", url=label_studio.url, token=token, project_id=project_id, prefix="hostA"
    )
    seen = TwoWriters()

    async def run() -> None:
        async with Runtime(config_a) as a:
            (project_a,) = a.config.projects
            seen.first_a = await a.run_cycle(project_a)
            async with Runtime(config_b) as b:
                seen.b = await b.run_cycle(b.config.projects[0])
                seen.health_b = health_now(b)
            for _ in range(2):
                await a.run_cycle(project_a)
            seen.health_a_refusing = health_now(a)
            await a.reload(renamed_a)
            await a.run_cycle(renamed_a.projects[0])
            seen.health_a_fixed = health_now(a)

    with captured_events() as logs:
        asyncio.run(run())
    seen.logs_a = list(logs)
    seen.most_per_task = most_predictions_on_one_task(ls_client, project_id)
    seen.active = ls_client.get_project(project_id)["model_version"]
    return seen


class TestAnotherWriterOfThePrefix:
    def test_a_refuses_once_naming_the_other_version_and_what_to_do(
        self, two_writers: TwoWriters
    ) -> None:
        """A logs one `project.failed` (kind foreign_writer) naming aldaemon-v2 and the fix."""
        failed = events(two_writers.logs_a, "project.failed")
        assert [("foreign_writer", True, True, True)] == [
            (
                entry["kind"],
                "aldaemon-v2" in entry["error"],
                "one state dir) per project and version_prefix" in entry["error"],
                "another [projects.predictions] version_prefix" in entry["error"],
            )
            for entry in failed
        ]

    def test_health_is_503_while_refusing_and_200_with_another_prefix(
        self, two_writers: TwoWriters
    ) -> None:
        assert two_writers.health_a_refusing is not None
        assert two_writers.health_a_fixed is not None
        assert (False, True) == (
            two_writers.health_a_refusing.healthy,
            two_writers.health_a_fixed.healthy,
        )

    def test_b_publishes_past_the_adopted_version(self, two_writers: TwoWriters) -> None:
        """B (an empty state dir) numbers past A's v1, as a rebuilt state must."""
        assert two_writers.first_a is not None and two_writers.b is not None
        assert ("aldaemon-v1", "aldaemon-v2") == (
            two_writers.first_a.version,
            two_writers.b.version,
        )

    def test_no_task_has_two_predictions_of_one_version(self, two_writers: TwoWriters) -> None:
        assert 1 == two_writers.most_per_task


@dataclass
class Race:
    logs: list[MutableMapping[str, Any]] = field(default_factory=list)
    reports: dict[str, CycleReport] = field(default_factory=dict)
    health_b: HealthReport | None = None
    most_per_task: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    active: str | None = None


@pytest.fixture(scope="class")
def race(
    tmp_path_factory: pytest.TempPathFactory,
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
) -> Race:
    project_id = labeled_project(ls_client, "two writers racing for aldaemon-v1")
    token = label_studio.legacy_token
    dir_a, dir_b = tmp_path_factory.mktemp("racer-a"), tmp_path_factory.mktemp("racer-b")
    seen = Race()
    with FaultProxy(label_studio.url) as proxy:
        # B's first look at the version counts is answered by Label Studio at once (no
        # version yet) but reaches B only after A has published v1.
        proxy.delay_next(1, seconds=12, method="GET", path_contains="/model-versions/")
        config_a = write_config(
            dir_a / "a.toml", url=label_studio.url, token=token, project_id=project_id
        )
        config_b = write_config(dir_b / "b.toml", url=proxy.url, token=token, project_id=project_id)

        async def run() -> None:
            async with Runtime(config_a) as a, Runtime(config_b) as b:
                report_b, report_a = await asyncio.gather(
                    b.run_cycle(b.config.projects[0]), a.run_cycle(a.config.projects[0])
                )
                seen.reports = {"a": report_a, "b": report_b}
                await b.run_cycle(b.config.projects[0])
                seen.health_b = health_now(b)

        with captured_events() as logs:
            asyncio.run(run())
    seen.logs = list(logs)
    seen.most_per_task = most_predictions_on_one_task(ls_client, project_id)
    seen.active = ls_client.get_project(project_id)["model_version"]
    return seen


class TestRaceForOneName:
    def test_both_named_their_version_aldaemon_v1(self, race: Race) -> None:
        assert ("aldaemon-v1", "aldaemon-v1") == (
            race.reports["a"].version,
            race.reports["b"].version,
        )

    def test_b_refuses_to_upload_over_a(self, race: Race) -> None:
        """One `project.failed` (foreign_writer) for B; A's v1 stays active."""
        kinds = [entry["kind"] for entry in events(race.logs, "project.failed")]
        assert (["foreign_writer"], "aldaemon-v1") == (kinds, race.active)

    def test_b_is_unhealthy(self, race: Race) -> None:
        assert race.health_b is not None
        assert not race.health_b.healthy

    def test_no_task_has_two_predictions_of_one_version(self, race: Race) -> None:
        assert 1 == race.most_per_task
