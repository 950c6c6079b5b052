"""A project's cycle with `[daemon] dask_scheduler`: trained and scored on the suite's
Dask cluster, published and activated in the real Label Studio."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from aldaemon.config import load_config
from aldaemon.service.runtime import Runtime
from aldaemon.store import Store
from aldaemon.views.status import collect
from tests.conftest import MakeProject
from tests.daskcluster import DaskCluster, require_distributed
from tests.helpers import (
    EVERY_TASK,
    annotate_some,
    captured_events,
    events,
    health_now,
    make_tasks,
    one_cycle,
    write_config,
)
from tests.lsserver import LabelStudioClient, LabelStudioServer, free_port

pytestmark = pytest.mark.labelstudio


class TestCycleOnDask:
    def test_a_version_is_trained_and_scored_on_the_cluster_then_published_and_active(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
        dask_cluster: DaskCluster,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """One cycle: the cluster ran the training and the scoring; the version is active;
        the model file is in the daemon's state dir, given relative to the daemon's cwd."""
        tasks, labels = make_tasks(50, seed=11)
        project_id = make_project(tasks)
        ids = ls_client.task_ids(project_id)
        annotate_some(ls_client, ids, labels, 12)
        config = write_config(
            tmp_path,
            label_studio,
            project_id,
            extra=f'dask_scheduler = "{dask_cluster.address}"',
            predictions=EVERY_TASK,
        )
        monkeypatch.chdir(tmp_path)  # `dir = "state"`: the Dask workers run elsewhere
        text = Path(config.path).read_text().replace(f'"{tmp_path / "state"}"', '"state"')
        Path(config.path).write_text(text)
        config = load_config(config.path, env={})
        before = Counter(dask_cluster.finished_jobs())

        with captured_events() as logs:
            report = asyncio.run(one_cycle(config))

        ran = Counter(dask_cluster.finished_jobs()) - before
        assert ("ok", "aldaemon-v1") == (report.outcome, report.version), report.error
        assert 1 == ran["aldaemon-SingleLabelTraining"]
        # the pool read from the store by the workers, in one shard per cluster thread
        assert 2 == ran["aldaemon-PoolScoringRequest"]
        assert [dask_cluster.address] == [
            e["address"] for e in events(logs, "model.dask_connected")
        ]
        predicted = [
            p["task"]
            for p in ls_client.predictions(project_id)
            if p["model_version"] == "aldaemon-v1"
        ]
        assert sorted(ids[12:]) == sorted(predicted)
        assert "aldaemon-v1" == ls_client.get_project(project_id)["model_version"]
        with Store.open(tmp_path / "state", lock=False) as store:
            [version] = store.list_versions(project_id)
        assert version.artifact_path is not None
        assert (tmp_path / "state" / "models").resolve() in Path(version.artifact_path).parents
        assert Path(version.artifact_path).is_file()

    def test_status_and_healthz_name_the_dask_runner(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        make_project: MakeProject,
        dask_cluster: DaskCluster,
    ) -> None:
        """`status --json` and `/healthz` say model jobs go to the Dask scheduler."""
        project_id = make_project(make_tasks(4)[0])
        config = write_config(
            tmp_path,
            label_studio,
            project_id,
            extra=f'dask_scheduler = "{dask_cluster.address}"',
        )

        async def health_runner() -> str:
            async with Runtime(config) as runtime:
                return health_now(runtime).model_runner

        expected = f"dask {dask_cluster.address}"
        assert expected == asyncio.run(health_runner())
        assert expected == collect(config)["model_runner"]

    def test_an_unreachable_scheduler_fails_the_cycle_and_healthz_says_why(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """Nothing listens at the address: the cycle fails naming it, /healthz turns 503."""
        require_distributed()
        unused_tcp_address = f"tcp://127.0.0.1:{free_port()}"
        tasks, labels = make_tasks(20, seed=12)
        project_id = make_project(tasks)
        annotate_some(ls_client, ls_client.task_ids(project_id), labels, 12)
        config = write_config(
            tmp_path, label_studio, project_id, extra=f'dask_scheduler = "{unused_tcp_address}"'
        )

        async def cycle_and_health() -> tuple[str, str | None, bool, tuple[str, ...]]:
            async with Runtime(config) as runtime:
                report = await runtime.run_cycle(config.projects[0])
                health = health_now(runtime)
                return report.outcome, report.error, health.healthy, health.reasons

        outcome, error, healthy, reasons = asyncio.run(cycle_and_health())
        assert ("failed", False) == (outcome, healthy)
        assert error is not None and f"Dask scheduler at {unused_tcp_address}" in error
        assert any(f"Dask scheduler at {unused_tcp_address}" in reason for reason in reasons)
        assert "Traceback" not in error
