"""Changes a person makes to what aldaemon owns: the pure rules (`sync.drift`) and a run
against the real Label Studio (sampling set back, another version made active, the
active version's predictions deleted)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from aldaemon.config import Config, load_config
from aldaemon.service.runtime import Runtime
from aldaemon.sync.drift import (
    DriftKind,
    detect_drift,
    foreign_versions,
    queue_view_drift,
    sent_versions,
)
from aldaemon.sync.versions import VersionRow, VersionState, queue_view_data
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

    def test_our_uploaded_version_active_is_an_interrupted_activation(self) -> None:
        """A crash between Label Studio's answer and the store's record: not a pin."""
        uploaded_v3 = [*ACTIVE_V2, row("aldaemon-v3", VersionState.UPLOADED, uploaded=5)]
        assert DriftKind.ACTIVATION_INTERRUPTED == drift("aldaemon-v3", UNCERTAINTY, uploaded_v3)

    def test_our_superseded_version_made_active_is_a_pin(self) -> None:
        assert DriftKind.ACTIVE_SWITCHED == drift("aldaemon-v1", UNCERTAINTY, ACTIVE_V2)

    def test_no_active_version_is_lost(self) -> None:
        assert DriftKind.ACTIVE_LOST == drift("", UNCERTAINTY, ACTIVE_V2)

    def test_a_pin_leaves_everything_to_the_person(self) -> None:
        assert drift("human-v1", "Sequential sampling", ACTIVE_V2, pinned="human-v1") is None

    def test_after_unpin_nothing_is_active_so_nothing_drifts(self) -> None:
        """Once the pinned version's row is superseded, the next version activates."""
        ours = [row("aldaemon-v2", VersionState.SUPERSEDED, uploaded=5)]
        assert drift("human-v1", "Sequential sampling", ours) is None


class TestQueueViewRule:
    EXPECTED = queue_view_data(title="Active learning queue", version="aldaemon-v2")

    def test_a_deleted_view_is_recreated(self) -> None:
        found = queue_view_drift(found=None, expected=self.EXPECTED)
        assert (DriftKind.QUEUE_VIEW, "deleted") == (found and found.what, found and found.found)

    def test_a_changed_ordering_is_named(self) -> None:
        edited = {**self.EXPECTED, "ordering": ["-tasks:id"]}
        found = queue_view_drift(found=edited, expected=self.EXPECTED)
        assert "ordering ['-tasks:id']" == (found and found.found)

    def test_columns_arranged_by_annotators_are_not_a_drift(self) -> None:
        """Hidden columns and widths are the annotators'; only title, filters and
        ordering are aldaemon's."""
        arranged = {**self.EXPECTED, "hiddenColumns": {"explore": ["tasks:data.text"]}}
        assert queue_view_drift(found=arranged, expected=self.EXPECTED) is None


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


class SentimentProject(NamedTuple):
    """A project of short pos/neg texts, the first ones annotated, and a config for it."""

    id: int
    task_ids: list[int]
    labels: list[str]
    config: Config


def sentiment_project(
    ls_client: LabelStudioClient,
    label_studio: LabelStudioServer,
    config_dir: Path,
    *,
    title: str,
    seed: int,
    tasks: int,
    annotated: int,
) -> SentimentProject:
    rng = random.Random(seed)
    project_id = ls_client.create_project(title=title)
    labels = ["pos" if i % 2 == 0 else "neg" for i in range(tasks)]
    words = {"pos": ["great", "lovely", "fine"], "neg": ["awful", "broken", "bad"]}
    task_ids = ls_client.import_tasks(
        project_id, [{"text": " ".join(rng.choices(words[label], k=4))} for label in labels]
    )
    for task_id, label in zip(task_ids[:annotated], labels[:annotated], strict=True):
        ls_client.annotate(task_id, label)
    config = write_config(
        config_dir / "c.toml",
        url=label_studio.url,
        token=label_studio.legacy_token,
        project_id=project_id,
    )
    return SentimentProject(project_id, task_ids, labels, config)


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
    project_id, task_ids, labels, config = sentiment_project(
        ls_client,
        label_studio,
        tmp_path_factory.mktemp("edits"),
        title="human edits",
        seed=3,
        tasks=16,
        annotated=8,
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


class Crash(BaseException):
    """A SIGKILL at one line: nothing after it runs, no handler catches it."""


@dataclass
class InterruptedActivation:
    logs: list[MutableMapping[str, Any]] = field(default_factory=list)
    crashed_with: dict[str, str | None] = field(default_factory=dict)  # LS and store at the crash
    active_after: str | None = None
    local_states: dict[str, str] = field(default_factory=dict)
    pinned_after: str | None = None


@pytest.fixture(scope="class")
def interrupted_activation(
    tmp_path_factory: pytest.TempPathFactory,
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
) -> InterruptedActivation:
    """v1 active; v2's activation killed after Label Studio made it active and before the
    store recorded it; the daemon restarted on the same state dir."""
    project_id, task_ids, labels, config = sentiment_project(
        ls_client,
        label_studio,
        tmp_path_factory.mktemp("interrupted"),
        title="interrupted activation",
        seed=7,
        tasks=16,
        annotated=8,
    )
    seen = InterruptedActivation()

    def crash(*args: object, **kwargs: object) -> None:
        raise Crash

    async def until_the_crash() -> None:
        async with Runtime(config) as runtime:
            (project,) = runtime.config.projects
            assert "aldaemon-v1" == (await runtime.run_cycle(project)).version
            assert runtime.store is not None
            runtime.store.mark_active = crash  # type: ignore[method-assign,assignment]
            for task_id, label in zip(task_ids[8:12], labels[8:12], strict=True):
                ls_client.annotate(task_id, label)
            with contextlib.suppress(Crash):
                await runtime.run_cycle(project, forced_training=True)
            versions = runtime.store.list_versions(project_id)
            seen.crashed_with = {
                "label_studio": ls_client.get_project(project_id)["model_version"],
                **{row.name: str(row.state) for row in versions},
            }

    async def after_restart() -> None:
        async with Runtime(config) as runtime:
            (project,) = runtime.config.projects
            await runtime.run_cycle(project)
            assert runtime.store is not None
            seen.active_after = ls_client.get_project(project_id)["model_version"]
            seen.local_states = {
                row.name: str(row.state) for row in runtime.store.list_versions(project_id)
            }
            seen.pinned_after = runtime.store.get_meta(project_id).pinned_version

    asyncio.run(until_the_crash())
    with captured_events() as logs:
        asyncio.run(after_restart())
    seen.logs = list(logs)
    return seen


@pytest.mark.labelstudio
class TestInterruptedActivation:
    def test_the_crash_left_label_studio_ahead_of_the_store(
        self, interrupted_activation: InterruptedActivation
    ) -> None:
        expected = {
            "label_studio": "aldaemon-v2",
            "aldaemon-v1": "active",
            "aldaemon-v2": "uploaded",
        }
        assert expected == interrupted_activation.crashed_with

    def test_the_restart_finishes_the_activation_instead_of_pinning(
        self, interrupted_activation: InterruptedActivation
    ) -> None:
        seen = interrupted_activation
        expected = ("aldaemon-v2", {"aldaemon-v1": "superseded", "aldaemon-v2": "active"}, None)
        assert expected == (seen.active_after, seen.local_states, seen.pinned_after)

    def test_it_is_logged_once_as_an_interrupted_activation(
        self, interrupted_activation: InterruptedActivation
    ) -> None:
        found = [
            (entry["what"], entry["found"], entry["expected"])
            for entry in events(interrupted_activation.logs, "drift.detected")
        ]
        assert [("activation_interrupted", "aldaemon-v2", "aldaemon-v1")] == found


# --- the queue view, checked at each full id listing ----------------------------------------


@dataclass
class ViewEdits:
    logs: list[MutableMapping[str, Any]] = field(default_factory=list)
    title: str = ""
    expected: dict[str, Any] = field(default_factory=dict)  # the view's data as aldaemon wrote it
    after_delete: list[dict[str, Any]] = field(default_factory=list)  # views with that title
    after_edit: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="class")
def view_edits(
    tmp_path_factory: pytest.TempPathFactory,
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
) -> ViewEdits:
    """The queue view deleted, then its ordering edited; each followed by a cycle that
    lists every task id (as the periodic resync does), then one more with nothing changed."""
    project_id, _, _, config = sentiment_project(
        ls_client,
        label_studio,
        tmp_path_factory.mktemp("view-edits"),
        title="queue view edits",
        seed=5,
        tasks=12,
        annotated=6,
    )
    seen = ViewEdits(title=config.projects[0].view.title)

    def queue_views() -> list[dict[str, Any]]:
        views: list[dict[str, Any]] = ls_client.call("GET", f"/api/dm/views/?project={project_id}")
        return [view for view in views if view["data"]["title"] == seen.title]

    async def run() -> None:
        async with Runtime(config) as runtime:
            (project,) = runtime.config.projects
            await runtime.run_cycle(project)
            (view,) = queue_views()
            seen.expected = view["data"]
            ls_client.call("DELETE", f"/api/dm/views/{view['id']}/")
            await runtime.run_cycle(project, force_resync=True)
            seen.after_delete = queue_views()
            if not seen.after_delete:
                return  # not recreated: the tests below say so
            view = seen.after_delete[0]
            edited = {**view["data"], "ordering": ["-tasks:id"]}
            ls_client.call(
                "PATCH", f"/api/dm/views/{view['id']}/", {"project": project_id, "data": edited}
            )
            await runtime.run_cycle(project, force_resync=True)
            await runtime.run_cycle(project, force_resync=True)
            seen.after_edit = queue_views()[0]["data"]

    with captured_events() as logs:
        asyncio.run(run())
    seen.logs = list(logs)
    return seen


@pytest.mark.labelstudio
class TestQueueViewEdits:
    def test_a_deleted_view_is_recreated(self, view_edits: ViewEdits) -> None:
        """One view with the queue's title and aldaemon's data exists again."""
        assert [view_edits.expected] == [view["data"] for view in view_edits.after_delete]

    def test_an_edited_ordering_is_restored(self, view_edits: ViewEdits) -> None:
        assert view_edits.expected == view_edits.after_edit

    def test_each_edit_is_logged_once_with_what_changed(self, view_edits: ViewEdits) -> None:
        """Two `drift.detected` (`queue_view`): the deletion, then the ordering; the cycle
        after the restore finds nothing."""
        found = [
            (entry["what"], str(entry["found"]).split(" ")[0])
            for entry in events(view_edits.logs, "drift.detected")
        ]
        assert [("queue_view", "deleted"), ("queue_view", "ordering")] == found
