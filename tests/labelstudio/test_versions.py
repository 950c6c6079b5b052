"""Choosing what annotators see: pin/unpin, queue depth, status of versions."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from aldaemon.cli import main
from tests.conftest import MakeProject
from tests.helpers import make_tasks, one_cycle, predictions_by_version, train_rounds, write_config
from tests.lsserver import LabelStudioClient, LabelStudioServer

pytestmark = pytest.mark.labelstudio


class TestPinning:
    def test_pin_activates_an_older_version_and_holds_it(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """After `pin`, a newer training is uploaded but the pinned version stays active."""
        tasks, labels = make_tasks(60, seed=8)
        project_id = make_project(tasks)
        config = write_config(tmp_path, label_studio, project_id, predictions="keep_versions = 5")
        train_rounds(ls_client, config, project_id=project_id, labels=labels, rounds=2)

        code = main(
            [
                "--config",
                config.path,
                "pin",
                "--project",
                str(project_id),
                "--version",
                "aldaemon-v1",
            ]
        )
        assert 0 == code
        assert "aldaemon-v1" == ls_client.get_project(project_id)["model_version"]

        ids = ls_client.task_ids(project_id)
        for i in range(12, 18):
            ls_client.annotate(ids[i], labels[i])
        asyncio.run(one_cycle(config))

        assert "aldaemon-v3" in predictions_by_version(ls_client, project_id)
        assert "aldaemon-v1" == ls_client.get_project(project_id)["model_version"]

    def test_unpin_lets_the_next_version_become_active(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """After `unpin`, the next published version is activated again."""
        tasks, labels = make_tasks(60, seed=9)
        project_id = make_project(tasks)
        config = write_config(tmp_path, label_studio, project_id, predictions="keep_versions = 5")
        train_rounds(ls_client, config, project_id=project_id, labels=labels, rounds=2)
        main(
            [
                "--config",
                config.path,
                "pin",
                "--project",
                str(project_id),
                "--version",
                "aldaemon-v1",
            ]
        )

        assert 0 == main(["--config", config.path, "unpin", "--project", str(project_id)])
        ids = ls_client.task_ids(project_id)
        for i in range(12, 18):
            ls_client.annotate(ids[i], labels[i])
        asyncio.run(one_cycle(config))

        assert "aldaemon-v3" == ls_client.get_project(project_id)["model_version"]

    def test_pinning_a_foreign_version_is_refused(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """`pin` of a name aldaemon did not create exits 1 with a clear message."""
        tasks, labels = make_tasks(30, seed=10)
        project_id = make_project(tasks)
        config = write_config(tmp_path, label_studio, project_id)
        train_rounds(ls_client, config, project_id=project_id, labels=labels, rounds=1)

        code = main(
            ["--config", config.path, "pin", "--project", str(project_id), "--version", "their-v1"]
        )

        assert 1 == code
        assert "their-v1 is not a version aldaemon created" in capsys.readouterr().err

    def test_pruning_never_deletes_the_pinned_version(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """With keep_versions = 1, a pinned older version survives later trainings."""
        tasks, labels = make_tasks(60, seed=12)
        project_id = make_project(tasks)
        config = write_config(
            tmp_path, label_studio, project_id, predictions="keep_versions = 1\nprune_per_cycle = 5"
        )
        train_rounds(ls_client, config, project_id=project_id, labels=labels, rounds=1)
        main(
            [
                "--config",
                config.path,
                "pin",
                "--project",
                str(project_id),
                "--version",
                "aldaemon-v1",
            ]
        )
        ids = ls_client.task_ids(project_id)
        for i in range(6, 18):
            ls_client.annotate(ids[i], labels[i])
            if i in (11, 17):
                asyncio.run(one_cycle(config))

        assert "aldaemon-v1" in predictions_by_version(ls_client, project_id)


class TestQueueDepthAndStatus:
    def test_queue_depth_publishes_only_the_most_informative_tasks(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
    ) -> None:
        """queue_depth = 5 uploads five predictions, the five lowest scores of the pool."""
        tasks, labels = make_tasks(40, seed=13)
        project_id = make_project(tasks)
        config = write_config(tmp_path, label_studio, project_id, predictions="queue_depth = 5")
        train_rounds(ls_client, config, project_id=project_id, labels=labels, rounds=1)

        assert 5 == len(predictions_by_version(ls_client, project_id)["aldaemon-v1"])

    def test_status_json_shows_versions_metrics_and_agreement(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """status --json lists labels per class, the active version and the last two's kappa."""
        tasks, labels = make_tasks(60, seed=14)
        project_id = make_project(tasks)
        config = write_config(tmp_path, label_studio, project_id, predictions="keep_versions = 3")
        train_rounds(ls_client, config, project_id=project_id, labels=labels, rounds=2)
        capsys.readouterr()

        assert 0 == main(["--config", config.path, "status", "--json"])

        [project] = json.loads(capsys.readouterr().out)["projects"]
        assert ({"pos": 6, "neg": 6}, "aldaemon-v2") == (
            project["labels_per_class"],
            project["active_version"],
        )
        assert ["aldaemon-v1", "aldaemon-v2"] == [v["name"] for v in project["versions"]]
        assert project["agreement_last_two"] is not None
        assert "ok" == project["last_cycle"]["outcome"]

    def test_status_text_never_shows_the_token(
        self,
        tmp_path: Path,
        label_studio: LabelStudioServer,
        ls_client: LabelStudioClient,
        make_project: MakeProject,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """The readable status output contains no token."""
        tasks, labels = make_tasks(30, seed=15)
        project_id = make_project(tasks)
        config = write_config(tmp_path, label_studio, project_id)
        train_rounds(ls_client, config, project_id=project_id, labels=labels, rounds=1)
        capsys.readouterr()

        assert 0 == main(["--config", config.path, "status"])

        out = capsys.readouterr().out
        assert "active version:  aldaemon-v1" in out
        assert label_studio.legacy_token not in out
