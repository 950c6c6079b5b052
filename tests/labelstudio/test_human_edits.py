"""Changes a person makes to what aldaemon owns: the pure rules (`sync.drift`) and a run
against the real Label Studio (sampling set back, another version made active, the
active version's predictions deleted)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from aldaemon.config import Config, load_config
from aldaemon.service.runtime import Runtime
from aldaemon.sync.drift import (
    DriftKind,
    detect_drift,
    foreign_versions,
    sent_versions,
)
from aldaemon.sync.versions import VersionRow, VersionState
from tests.helpers import captured_events, events
from tests.lsserver import LabelStudioClient, LabelStudioServer

UNCERTAINTY = "Uncertainty sampling"


def row(name: str, state: VersionState, *, uploaded: int | None = None) -> VersionRow:
    number = int(name.rsplit("-v", 1)[1])
    return VersionRow(
        name=name, number=number, state=state, created_at=0.0, uploaded_count=uploaded
    )


def drift(
    model_version: str | None,
    sampling: str | None,
    ours: Sequence[VersionRow],
    pinned: str | None = None,
) -> DriftKind | None:
    found = detect_drift(
        ls_model_version=model_version,
        ls_sampling=sampling,
        ours=ours,
        pinned=pinned,
        uncertainty_sampling=UNCERTAINTY,
    )
    return None if found is None else found.what


ACTIVE_V2 = [
    row("aldaemon-v1", VersionState.SUPERSEDED, uploaded=5),
    row("aldaemon-v2", VersionState.ACTIVE, uploaded=5),
]


class TestDriftRules:
    def test_nothing_changed(self) -> None:
        assert drift("aldaemon-v2", UNCERTAINTY, ACTIVE_V2) is None

    def test_sampling_set_back_is_restored(self) -> None:
        assert DriftKind.SAMPLING == drift("aldaemon-v2", "Sequential sampling", ACTIVE_V2)

    def test_another_version_made_active_is_a_pin(self) -> None:
        assert DriftKind.ACTIVE_SWITCHED == drift("human-v1", UNCERTAINTY, ACTIVE_V2)

    def test_no_active_version_is_lost(self) -> None:
        assert DriftKind.ACTIVE_LOST == drift("", UNCERTAINTY, ACTIVE_V2)

    def test_a_pin_leaves_everything_to_the_person(self) -> None:
        assert drift("human-v1", "Sequential sampling", ACTIVE_V2, pinned="human-v1") is None

    def test_after_unpin_nothing_is_active_so_nothing_drifts(self) -> None:
        """Once the pinned version's row is superseded, the next version activates."""
        ours = [row("aldaemon-v2", VersionState.SUPERSEDED, uploaded=5)]
        assert drift("human-v1", "Sequential sampling", ours) is None


class TestForeignVersions:
    def test_an_empty_state_adopts_what_it_finds(self) -> None:
        assert [] == foreign_versions(prefix="aldaemon", names_on_server=["aldaemon-v3"], ours=[])

    def test_a_version_never_sent_is_foreign(self) -> None:
        ours = [
            row("aldaemon-v1", VersionState.ACTIVE, uploaded=5),
            row("aldaemon-v2", VersionState.SCORED),
        ]
        assert ["aldaemon-v2"] == foreign_versions(
            prefix="aldaemon", names_on_server=["aldaemon-v1", "aldaemon-v2"], ours=ours
        )

    def test_a_higher_unknown_number_is_foreign_a_lower_one_is_history(self) -> None:
        ours = [row("aldaemon-v4", VersionState.ACTIVE, uploaded=5)]
        assert ["aldaemon-v5"] == foreign_versions(
            prefix="aldaemon",
            names_on_server=["aldaemon-v2", "aldaemon-v4", "aldaemon-v5", "human-v9"],
            ours=ours,
        )

    def test_failed_before_sending_is_not_sent(self) -> None:
        ours = [
            row("aldaemon-v1", VersionState.FAILED),
            row("aldaemon-v2", VersionState.FAILED, uploaded=0),
        ]
        assert {"aldaemon-v2"} == sent_versions(ours)


# --- against the real Label Studio --------------------------------------------------------


def write_config(path: Path, *, url: str, token: str, project_id: int) -> Config:
    path.write_text(
        f"""
[labelstudio]
url = "{url}"
token = "{token}"

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
"""
    )
    return load_config(path, env={})


@dataclass
class Edits:
    logs: list[MutableMapping[str, Any]] = field(default_factory=list)
    sampling_after: str | None = None
    active_after_human: str | None = None
    pinned_after_human: str | None = None
    active_after_unpin_and_delete: str | None = None
    healthy: bool = False


@pytest.fixture(scope="class")
def edits(
    tmp_path_factory: pytest.TempPathFactory,
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
) -> Edits:
    rng = random.Random(3)
    project_id = ls_client.create_project(title="human edits")
    labels = ["pos" if i % 2 == 0 else "neg" for i in range(16)]
    words = {"pos": ["great", "lovely", "fine"], "neg": ["awful", "broken", "bad"]}
    task_ids = ls_client.import_tasks(
        project_id, [{"text": " ".join(rng.choices(words[label], k=4))} for label in labels]
    )
    for task_id, label in zip(task_ids[:8], labels[:8], strict=True):
        ls_client.annotate(task_id, label)
    config = write_config(
        tmp_path_factory.mktemp("edits") / "c.toml",
        url=label_studio.url,
        token=label_studio.legacy_token,
        project_id=project_id,
    )
    seen = Edits()

    def human_prediction() -> None:
        result = [
            {
                "from_name": "sentiment",
                "to_name": "text",
                "type": "choices",
                "value": {"choices": ["pos"]},
            }
        ]
        ls_client.call(
            "POST",
            "/api/predictions/",
            {"task": task_ids[9], "model_version": "human-v1", "result": result, "score": 0.5},
        )

    async def run() -> None:
        async with Runtime(config) as runtime:
            (project,) = runtime.config.projects
            assert "aldaemon-v1" == (await runtime.run_cycle(project)).version
            # 1. sampling set back to Sequential
            ls_client.call(
                "PATCH", f"/api/projects/{project_id}/", {"sampling": "Sequential sampling"}
            )
            await runtime.run_cycle(project)
            seen.sampling_after = ls_client.get_project(project_id)["sampling"]
            # 2. a foreign version made active
            human_prediction()
            ls_client.call("PATCH", f"/api/projects/{project_id}/", {"model_version": "human-v1"})
            await runtime.run_cycle(project)
            await runtime.run_cycle(project, forced_training=True)
            seen.active_after_human = ls_client.get_project(project_id)["model_version"]
            assert runtime.store is not None
            seen.pinned_after_human = runtime.store.get_meta(project_id).pinned_version
            # 3. unpinned, then the daemon's active version's predictions deleted
            runtime.store.set_meta(project_id, pinned_version=None)
            for task_id, label in zip(task_ids[10:14], labels[10:14], strict=True):
                ls_client.annotate(task_id, label)
            await runtime.run_cycle(project, forced_training=True)
            active = ls_client.get_project(project_id)["model_version"]
            ls_client.call(
                "DELETE", f"/api/projects/{project_id}/model-versions/", {"model_version": active}
            )
            await runtime.run_cycle(project)
            seen.active_after_unpin_and_delete = ls_client.get_project(project_id)["model_version"]
            now = time.time()
            seen.healthy = runtime.health_report(now=now, started_at=now).healthy

    with captured_events() as logs:
        asyncio.run(run())
    seen.logs = list(logs)
    return seen


@pytest.mark.labelstudio
class TestHumanEdits:
    def test_each_edit_is_logged_once_with_what_changed(self, edits: Edits) -> None:
        whats = [entry["what"] for entry in events(edits.logs, "drift.detected")]
        assert ["sampling", "active_version", "active_version_lost"] == whats

    def test_sampling_is_restored(self, edits: Edits) -> None:
        assert UNCERTAINTY == edits.sampling_after

    def test_a_human_choice_of_version_is_a_pin(self, edits: Edits) -> None:
        """human-v1 stays active even after a new version was trained."""
        assert ("human-v1", "human-v1") == (edits.active_after_human, edits.pinned_after_human)

    def test_lost_predictions_are_republished(self, edits: Edits) -> None:
        assert (edits.active_after_unpin_and_delete or "").startswith("aldaemon-v")
        assert edits.healthy
