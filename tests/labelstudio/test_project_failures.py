"""Permanent errors and a labeling config that changes under the daemon, on a real server.

Each scenario runs once per class (a class-scoped fixture drives `Runtime` through its
phases and keeps what it saw: reports, captured log events, `status --json`, the health
report); each test then checks one behaviour of that run. The error scenarios put TWO
projects in one config, so they also show what happens to the project that is fine.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import subprocess
import sys
import time
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from aldaemon.config import Config
from aldaemon.loop.context import CycleReport
from aldaemon.loop.poll import WATERMARK_OVERLAP_SECONDS
from aldaemon.records import PredictionRecord
from aldaemon.service.health import HealthReport
from aldaemon.service.runtime import Runtime
from aldaemon.store import Store, VersionRow
from aldaemon.sync.versions import (
    training_examples,
)
from tests.helpers import (
    captured_events,
    choices_config,
    events,
    make_tasks,
    newest_task_update,
    review,
    wait_for_server_clock,
    write_projects_config,
)
from tests.lsserver import LabelStudioClient, LabelStudioServer

# Not a real token of this server: Label Studio answers 401 to both kinds.
WRONG_LEGACY_TOKEN = "0123456789abcdef0123456789abcdef01234567"


def forged_personal_access_token() -> str:
    """A refresh JWT with the right shape and a wrong signature: a revoked or foreign PAT."""

    def part(payload: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")

    claims = {"token_type": "refresh", "exp": 4102444800, "iat": 1700000000, "user_id": "1"}
    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJlLW5vdC12YWxpZA"


async def cycle_each(runtime: Runtime) -> dict[int, CycleReport]:
    """One cycle per configured project, one after the other so request counts stay apart."""
    reports: dict[int, CycleReport] = {}
    for project in runtime.config.projects:
        reports[project.id] = await runtime.run_cycle(project)
        await runtime.wait_for_prunes()
    return reports


def status_json(config_path: Path) -> dict[int, dict[str, Any]]:
    """`aldaemon status --json`, run as the command an operator types, per project id."""
    completed = subprocess.run(
        [sys.executable, "-m", "aldaemon", "--config", str(config_path), "status", "--json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(completed.stdout)
    return {project["project_id"]: project for project in report["projects"]}


def health_now(runtime: Runtime) -> HealthReport:
    now = time.time()
    return runtime.health_report(now=now, started_at=now)


def annotate(client: LabelStudioClient, task_ids: Sequence[int], labels: Sequence[str]) -> None:
    for task_id, label in zip(task_ids, labels, strict=True):
        client.annotate(task_id, label)


def set_label_config(client: LabelStudioClient, project_id: int, label_config: str) -> None:
    client.call("PATCH", f"/api/projects/{project_id}/", {"label_config": label_config})


def predicted_labels(client: LabelStudioClient, project_id: int) -> dict[str, set[str]]:
    """Labels Label Studio holds in predictions, per model version."""
    labels: dict[str, set[str]] = {}
    for prediction in client.predictions(project_id):
        label = prediction["result"][0]["value"]["choices"][0]
        labels.setdefault(prediction["model_version"], set()).add(label)
    return labels


pytestmark = pytest.mark.labelstudio


# --- a wrong or revoked token (401) -------------------------------------------------------


@dataclass
class TokenScenario:
    token: str
    project_ids: tuple[int, int]
    logs: list[MutableMapping[str, Any]] = field(default_factory=list)
    failing: dict[int, CycleReport] = field(default_factory=dict)
    failing_again: dict[int, CycleReport] = field(default_factory=dict)
    status_failed: dict[int, dict[str, Any]] = field(default_factory=dict)
    health_failed: HealthReport | None = None
    recovered: dict[int, CycleReport] = field(default_factory=dict)
    status_recovered: dict[int, dict[str, Any]] = field(default_factory=dict)
    health_recovered: HealthReport | None = None
    status_text: str = ""


@pytest.fixture(scope="class", params=["legacy token", "personal access token"])
def token_scenario(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
) -> TokenScenario:
    """Two projects under a wrong token for two rounds, then SIGHUP's reload with the right one."""
    token = (
        WRONG_LEGACY_TOKEN if request.param == "legacy token" else forged_personal_access_token()
    )
    tasks, labels = make_tasks(20, seed=21)
    project_ids: list[int] = []
    for number in (1, 2):
        project_id = ls_client.create_project(title=f"wrong token {request.param} #{number}")
        task_ids = ls_client.import_tasks(project_id, tasks)
        annotate(ls_client, task_ids[:8], labels[:8])
        project_ids.append(project_id)
    directory = tmp_path_factory.mktemp("token")
    bad_path, good_path = directory / "bad.toml", directory / "good.toml"
    bad = write_projects_config(bad_path, label_studio, project_ids, token=token)
    good = write_projects_config(good_path, label_studio, project_ids)
    seen = TokenScenario(token=token, project_ids=(project_ids[0], project_ids[1]))

    async def run() -> None:
        async with Runtime(bad) as runtime:
            seen.failing = await cycle_each(runtime)
            seen.failing_again = await cycle_each(runtime)
            seen.status_failed = status_json(bad_path)
            seen.health_failed = health_now(runtime)
            await runtime.reload(good)
            seen.recovered = await cycle_each(runtime)
            seen.status_recovered = status_json(good_path)
            seen.health_recovered = health_now(runtime)

    with captured_events() as logs:
        asyncio.run(run())
    seen.logs = list(logs)
    seen.status_text = json.dumps([seen.status_failed, seen.status_recovered])
    return seen


class TestWrongToken:
    def test_each_project_logs_its_failure_once(self, token_scenario: TokenScenario) -> None:
        """Two failing rounds log `project.failed` once per project, not once per cycle."""
        failed = [entry["project_id"] for entry in events(token_scenario.logs, "project.failed")]
        assert sorted(token_scenario.project_ids) == sorted(failed)

    def test_failure_is_an_auth_error(self, token_scenario: TokenScenario) -> None:
        """The logged kind is `auth`, so an operator knows to look at the token."""
        kinds = {entry["kind"] for entry in events(token_scenario.logs, "project.failed")}
        assert {"auth"} == kinds

    def test_status_json_marks_every_project_failed(self, token_scenario: TokenScenario) -> None:
        """`aldaemon status --json` shows each project's failure, naming the rejected token."""
        rejected = {
            project_id: "rejected the token" in (status["failure"] or "")
            for project_id, status in token_scenario.status_failed.items()
        }
        assert dict.fromkeys(token_scenario.project_ids, True) == rejected

    def test_health_report_gives_a_reason_per_project(self, token_scenario: TokenScenario) -> None:
        """/healthz is unhealthy, with one "failed" reason for each project."""
        health = token_scenario.health_failed
        assert health is not None
        assert (False, [f"project {pid} failed" for pid in token_scenario.project_ids]) == (
            health.healthy,
            [reason.split(":")[0] for reason in health.reasons],
        )

    def test_a_failing_cycle_sends_a_single_request(self, token_scenario: TokenScenario) -> None:
        """With the token still wrong, a cycle stops after its first refused request."""
        sent = {
            pid: report.counts["http_requests"]
            for pid, report in token_scenario.failing_again.items()
        }
        assert dict.fromkeys(token_scenario.project_ids, 1) == sent

    def test_token_appears_in_no_log_and_no_status(self, token_scenario: TokenScenario) -> None:
        """The wrong token is in no log event and no status output."""
        logged = json.dumps(token_scenario.logs, default=str)
        assert (False, False) == (
            token_scenario.token in logged,
            token_scenario.token in token_scenario.status_text,
        )

    def test_reload_with_the_right_token_logs_recovery(self, token_scenario: TokenScenario) -> None:
        """After the reload each project logs `project.recovered` once."""
        recovered = [
            entry["project_id"] for entry in events(token_scenario.logs, "project.recovered")
        ]
        assert sorted(token_scenario.project_ids) == sorted(recovered)

    def test_reload_clears_the_failure_in_status(self, token_scenario: TokenScenario) -> None:
        """`status --json` shows no failure once a cycle with the right token succeeded."""
        failures = {
            pid: status["failure"] for pid, status in token_scenario.status_recovered.items()
        }
        assert dict.fromkeys(token_scenario.project_ids) == failures

    def test_reload_makes_health_good_again(self, token_scenario: TokenScenario) -> None:
        """/healthz is healthy again after the recovery."""
        health = token_scenario.health_recovered
        assert health is not None
        assert (True, ()) == (health.healthy, health.reasons)

    def test_recovered_projects_publish(self, token_scenario: TokenScenario) -> None:
        """The first cycle after the fix trains and publishes each project's first version."""
        versions = {pid: report.version for pid, report in token_scenario.recovered.items()}
        assert dict.fromkeys(token_scenario.project_ids, "aldaemon-v1") == versions


# --- a project deleted in Label Studio (404) --------------------------------------------


@dataclass
class DeletedProjectScenario:
    healthy: int
    deleted: int
    logs: list[MutableMapping[str, Any]] = field(default_factory=list)
    after_delete: dict[int, CycleReport] = field(default_factory=dict)
    again: dict[int, CycleReport] = field(default_factory=dict)
    status: dict[int, dict[str, Any]] = field(default_factory=dict)
    health: HealthReport | None = None
    health_after_reload: HealthReport | None = None
    active_version: str | None = None


@pytest.fixture(scope="class")
def deleted_project(
    tmp_path_factory: pytest.TempPathFactory,
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
) -> DeletedProjectScenario:
    """Two healthy projects; one is deleted in Label Studio; later the config drops it."""
    tasks, labels = make_tasks(20, seed=22)
    healthy = ls_client.create_project(title="stays")
    healthy_tasks = ls_client.import_tasks(healthy, tasks)
    doomed = ls_client.create_project(title="will be deleted")
    ls_client.import_tasks(doomed, tasks)
    directory = tmp_path_factory.mktemp("deleted")
    both_path = directory / "both.toml"
    both = write_projects_config(both_path, label_studio, [healthy, doomed])
    only_healthy = write_projects_config(directory / "one.toml", label_studio, [healthy])
    seen = DeletedProjectScenario(healthy=healthy, deleted=doomed)

    async def run() -> None:
        async with Runtime(both) as runtime:
            await cycle_each(runtime)  # both fine, nothing to train yet
            annotate(ls_client, healthy_tasks[:8], labels[:8])
            ls_client.call("DELETE", f"/api/projects/{doomed}/")
            seen.after_delete = await cycle_each(runtime)
            seen.again = await cycle_each(runtime)
            seen.status = status_json(both_path)
            seen.health = health_now(runtime)
            await runtime.reload(only_healthy)
            await cycle_each(runtime)
            seen.health_after_reload = health_now(runtime)

    with captured_events() as logs:
        asyncio.run(run())
    seen.logs = list(logs)
    seen.active_version = ls_client.get_project(healthy)["model_version"]
    return seen


class TestDeletedProject:
    def test_only_the_deleted_project_logs_a_failure_once(
        self, deleted_project: DeletedProjectScenario
    ) -> None:
        """`project.failed` is logged once, for the deleted project only."""
        failed = [entry["project_id"] for entry in events(deleted_project.logs, "project.failed")]
        assert [deleted_project.deleted] == failed

    def test_failure_kind_is_not_found(self, deleted_project: DeletedProjectScenario) -> None:
        """The logged kind is `not_found`."""
        [entry] = events(deleted_project.logs, "project.failed")
        assert "not_found" == entry["kind"]

    def test_other_project_still_publishes(self, deleted_project: DeletedProjectScenario) -> None:
        """The healthy project trains and activates a version while its neighbour fails."""
        report = deleted_project.after_delete[deleted_project.healthy]
        assert ("ok", "aldaemon-v1", "aldaemon-v1") == (
            report.outcome,
            report.version,
            deleted_project.active_version,
        )

    def test_status_json_marks_only_the_deleted_project(
        self, deleted_project: DeletedProjectScenario
    ) -> None:
        """`status --json` says the deleted project does not exist; the other has no failure."""
        failures = {pid: status["failure"] for pid, status in deleted_project.status.items()}
        assert (None, True) == (
            failures[deleted_project.healthy],
            f"project {deleted_project.deleted} does not exist"
            in (failures[deleted_project.deleted] or ""),
        )

    def test_health_report_names_only_the_deleted_project(
        self, deleted_project: DeletedProjectScenario
    ) -> None:
        """/healthz is unhealthy with a single reason, about the deleted project."""
        health = deleted_project.health
        assert health is not None
        assert [f"project {deleted_project.deleted} failed"] == [
            reason.split(":")[0] for reason in health.reasons
        ]

    def test_a_failing_cycle_sends_a_single_request(
        self, deleted_project: DeletedProjectScenario
    ) -> None:
        """Once the project is gone, each of its cycles costs one request."""
        assert 1 == deleted_project.again[deleted_project.deleted].counts["http_requests"]

    def test_dropping_it_from_the_config_makes_health_good(
        self, deleted_project: DeletedProjectScenario
    ) -> None:
        """A reload without the deleted project leaves /healthz healthy."""
        health = deleted_project.health_after_reload
        assert health is not None
        assert (True, ()) == (health.healthy, health.reasons)


# --- the labeling config changes under the daemon ---------------------------------------


@dataclass
class ConfigChangeScenario:
    project_id: int
    logs: list[MutableMapping[str, Any]] = field(default_factory=list)
    reports: list[CycleReport] = field(default_factory=list)
    versions: dict[str, VersionRow] = field(default_factory=dict)
    texts: dict[int, str | None] = field(default_factory=dict)
    predicted: dict[str, set[str]] = field(default_factory=dict)
    predicted_before_change: dict[str, set[str]] = field(default_factory=dict)
    active_version: str | None = None
    expected_texts: dict[int, str] = field(default_factory=dict)

    def config_changes(self) -> list[str]:
        return [entry["change"] for entry in events(self.logs, "project.labeling_config_changed")]


def _read_outcome(seen: ConfigChangeScenario, config: Config, client: LabelStudioClient) -> None:
    """Fill in what local state and Label Studio hold once the scenario is over."""
    store = Store.open(config.state.dir, lock=False)
    try:
        seen.versions = {row.name: row for row in store.list_versions(seen.project_id)}
        seen.texts = dict(store.unlabeled_tasks(seen.project_id))
        examples = training_examples(store.annotated_tasks(seen.project_id))
        seen.texts.update({e.task_id: e.text for e in examples})
    finally:
        store.close()
    seen.predicted = predicted_labels(client, seen.project_id)
    seen.active_version = client.get_project(seen.project_id)["model_version"]


async def _one_cycle(config: Config) -> CycleReport:
    async with Runtime(config) as runtime:
        report = await runtime.run_cycle(config.projects[0])
        await runtime.wait_for_prunes()
        return report


@pytest.fixture(scope="class")
def label_added(
    tmp_path_factory: pytest.TempPathFactory,
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
) -> ConfigChangeScenario:
    """v1 on pos/neg; 'neutral' is added; two cycles later it has min_per_class labels."""
    tasks, labels = make_tasks(30, seed=23)
    project_id = ls_client.create_project(
        title="label added", label_config=choices_config(["pos", "neg"])
    )
    task_ids = ls_client.import_tasks(project_id, tasks)
    annotate(ls_client, task_ids[:12], labels[:12])
    # A threshold the two 'neutral' labels cannot reach: only the config change retrains.
    config = write_projects_config(
        tmp_path_factory.mktemp("added") / "config.toml",
        label_studio,
        [project_id],
        retrain="min_new_annotations = 10\nmin_interval = 0\nmin_per_class = 2",
    )
    seen = ConfigChangeScenario(project_id=project_id)
    with captured_events() as logs:
        seen.reports.append(asyncio.run(_one_cycle(config)))
        set_label_config(ls_client, project_id, choices_config(["pos", "neg", "neutral"]))
        seen.reports.append(asyncio.run(_one_cycle(config)))
        annotate(ls_client, [task_ids[12]], ["neutral"])
        seen.reports.append(asyncio.run(_one_cycle(config)))
        annotate(ls_client, [task_ids[13]], ["neutral"])
        seen.reports.append(asyncio.run(_one_cycle(config)))
    seen.logs = list(logs)
    _read_outcome(seen, config, ls_client)
    return seen


class TestLabelAdded:
    def test_cold_start_names_the_new_label_until_it_has_enough(
        self, label_added: ConfigChangeScenario
    ) -> None:
        """The decision names 'neutral' while it is short, then retrains at min_per_class."""
        assert [
            "cold start: 'neutral' has 0 of 2 labels",
            "cold start: 'neutral' has 1 of 2 labels",
            "labeling config changed (label 'neutral' added): retraining",
        ] == [report.decision for report in label_added.reports[1:]]

    def test_old_model_stays_active_during_the_cold_start(
        self, label_added: ConfigChangeScenario
    ) -> None:
        """No version is trained while 'neutral' is short; the old one keeps serving."""
        assert [None, None] == [report.version for report in label_added.reports[1:3]]

    def test_new_version_knows_the_new_label_and_is_active(
        self, label_added: ConfigChangeScenario
    ) -> None:
        """The retrained version is trained on all three labels and is the active one."""
        newest = label_added.versions["aldaemon-v2"]
        assert (["neg", "neutral", "pos"], "aldaemon-v2") == (
            sorted(newest.class_counts or {}),
            label_added.active_version,
        )

    def test_change_is_logged_once_naming_the_label(
        self, label_added: ConfigChangeScenario
    ) -> None:
        """One `project.labeling_config_changed` event, naming 'neutral'."""
        assert ["label 'neutral' added"] == label_added.config_changes()

    def test_logged_action_says_what_to_do(self, label_added: ConfigChangeScenario) -> None:
        """The event's action tells the operator to annotate the new label."""
        [entry] = events(label_added.logs, "project.labeling_config_changed")
        assert "annotate tasks as 'neutral'" in entry["action"]


MEH_WORDS = ["okay", "average", "fine", "ordinary", "so-so", "mediocre", "middling", "plain"]


@pytest.fixture(scope="class")
def label_removed(
    tmp_path_factory: pytest.TempPathFactory,
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
) -> ConfigChangeScenario:
    """v1 on pos/neg/meh; a crash leaves v2 scored; 'meh' is removed; two more trainings."""
    rng = random.Random(24)
    tasks, labels = make_tasks(24, seed=24)
    meh_tasks: list[dict[str, object]] = [
        {"text": " ".join([*rng.sample(MEH_WORDS, 4), "food"])} for _ in range(12)
    ]
    project_id = ls_client.create_project(
        title="label removed", label_config=choices_config(["pos", "neg", "meh"])
    )
    task_ids = ls_client.import_tasks(project_id, tasks + meh_tasks)
    annotate(ls_client, task_ids[:12], labels[:12])
    annotate(ls_client, task_ids[24:28], ["meh"] * 4)
    config = write_projects_config(
        tmp_path_factory.mktemp("removed") / "config.toml", label_studio, [project_id]
    )
    seen = ConfigChangeScenario(project_id=project_id)
    with captured_events() as logs:
        seen.reports.append(asyncio.run(_one_cycle(config)))
        seen.predicted_before_change = predicted_labels(ls_client, project_id)
        _leave_scored_version(config, project_id, task_ids[28])
        set_label_config(ls_client, project_id, choices_config(["pos", "neg"]))
        seen.reports.append(asyncio.run(_one_cycle(config)))
        annotate(ls_client, task_ids[12:16], labels[12:16])
        seen.reports.append(asyncio.run(_one_cycle(config)))
    seen.logs = list(logs)
    _read_outcome(seen, config, ls_client)
    return seen


def _leave_scored_version(config: Config, project_id: int, task_id: int) -> None:
    """What a crash after scoring leaves: v2 trained on pos/neg/meh, scored, not uploaded."""
    store = Store.open(config.state.dir)
    try:
        v1 = store.get_version(project_id, "aldaemon-v1")
        assert v1 is not None
        store.create_version(project_id, name="aldaemon-v2", number=2, now=time.time())
        store.mark_trained(
            project_id,
            "aldaemon-v2",
            trained_at=time.time(),
            n_labels=v1.n_labels or 0,
            class_counts=v1.class_counts or {},
            metrics=v1.metrics or {},
            train_seconds=v1.train_seconds or 0.0,
            artifact_path=v1.artifact_path or "",
        )
        store.mark_scored(project_id, "aldaemon-v2", n_predictions=1)
        store.save_predictions(
            project_id, "aldaemon-v2", [PredictionRecord(task_id=task_id, label="meh", score=0.1)]
        )
    finally:
        store.close()


class TestLabelRemoved:
    def test_old_model_did_predict_the_label(self, label_removed: ConfigChangeScenario) -> None:
        """Before the change v1 predicts 'meh', so the checks below can fail."""
        assert "meh" in label_removed.predicted_before_change["aldaemon-v1"]

    def test_removal_retrains_at_once(self, label_removed: ConfigChangeScenario) -> None:
        """The first cycle after the removal retrains, whatever the label-change threshold."""
        report = label_removed.reports[1]
        assert ("labeling config changed (label 'meh' removed): retraining", "aldaemon-v3") == (
            report.decision,
            report.version,
        )

    def test_unfinished_version_predicting_it_is_abandoned(
        self, label_removed: ConfigChangeScenario
    ) -> None:
        """The scored v2 is marked failed and never reaches Label Studio."""
        assert ("failed", False) == (
            label_removed.versions["aldaemon-v2"].state,
            "aldaemon-v2" in label_removed.predicted,
        )

    def test_no_later_prediction_carries_the_removed_label(
        self, label_removed: ConfigChangeScenario
    ) -> None:
        """No version published after the change has a 'meh' prediction in Label Studio."""
        later = {
            version: "meh" in labels
            for version, labels in label_removed.predicted.items()
            if version != "aldaemon-v1"
        }
        assert {"aldaemon-v3": False, "aldaemon-v4": False} == later

    def test_its_annotations_are_left_out_of_training(
        self, label_removed: ConfigChangeScenario
    ) -> None:
        """The retrained model saw the 12 pos/neg labels and none of the 4 'meh' ones."""
        assert {"neg": 6, "pos": 6} == label_removed.versions["aldaemon-v3"].class_counts

    def test_the_active_version_is_the_retrained_one(
        self, label_removed: ConfigChangeScenario
    ) -> None:
        """After the next threshold crossing the newest version is active."""
        assert "aldaemon-v4" == label_removed.active_version

    def test_change_is_logged_once_across_trainings(
        self, label_removed: ConfigChangeScenario
    ) -> None:
        """One config-change event names 'meh'; later trainings do not warn about it again."""
        assert (["label 'meh' removed"], []) == (
            label_removed.config_changes(),
            events(label_removed.logs, "train.labels_not_in_config"),
        )


@pytest.fixture(scope="class")
def text_field_renamed(
    tmp_path_factory: pytest.TempPathFactory,
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
) -> ConfigChangeScenario:
    """Tasks carry `text` and `review`; v1 reads `$text`; the config switches to `$review`."""
    old, labels = make_tasks(30, seed=25)
    rng = random.Random(26)
    tasks = [
        {"text": task["text"], "review": review(rng, label) + " reworded"}
        for task, label in zip(old, labels, strict=True)
    ]
    project_id = ls_client.create_project(
        title="text field renamed", label_config=choices_config(["pos", "neg"])
    )
    task_ids = ls_client.import_tasks(project_id, tasks)
    # Unlabeled tasks must be older than the watermark's overlap window, or the ordinary
    # poll would re-read them anyway and hide whether the rename forced a full read.
    overlap_passed = newest_task_update(ls_client, project_id) + timedelta(
        seconds=WATERMARK_OVERLAP_SECONDS + 1
    )
    wait_for_server_clock(ls_client, overlap_passed)
    annotate(ls_client, task_ids[:12], labels[:12])
    config = write_projects_config(
        tmp_path_factory.mktemp("renamed") / "config.toml", label_studio, [project_id]
    )
    seen = ConfigChangeScenario(project_id=project_id)
    seen.expected_texts = {
        tid: str(task["review"]) for tid, task in zip(task_ids, tasks, strict=True)
    }
    with captured_events() as logs:
        seen.reports.append(asyncio.run(_one_cycle(config)))
        set_label_config(ls_client, project_id, choices_config(["pos", "neg"], text_field="review"))
        seen.reports.append(asyncio.run(_one_cycle(config)))
        seen.reports.append(asyncio.run(_one_cycle(config)))
    seen.logs = list(logs)
    _read_outcome(seen, config, ls_client)
    return seen


class TestTextFieldRenamed:
    def test_every_task_text_is_read_again_from_the_new_field(
        self, text_field_renamed: ConfigChangeScenario
    ) -> None:
        """Local state holds every task's `review` text, unchanged tasks included."""
        assert text_field_renamed.expected_texts == text_field_renamed.texts

    def test_the_first_cycle_after_the_rename_reads_every_task(
        self, text_field_renamed: ConfigChangeScenario
    ) -> None:
        """The cycle that sees the rename reads all 30 tasks although none was updated."""
        assert 30 == text_field_renamed.reports[1].counts["tasks_read"]

    def test_the_full_read_happens_once(self, text_field_renamed: ConfigChangeScenario) -> None:
        """The cycle after it polls by watermark again and reads fewer than all tasks."""
        assert text_field_renamed.reports[2].counts.get("tasks_read", 0) < 30

    def test_the_rename_retrains_and_activates(
        self, text_field_renamed: ConfigChangeScenario
    ) -> None:
        """The rename retrains on the new texts without new labels, and that version is active."""
        report = text_field_renamed.reports[1]
        assert ("labeling config changed (text field renamed): retraining", "aldaemon-v2") == (
            report.decision,
            text_field_renamed.active_version,
        )

    def test_change_is_logged_once_naming_both_fields(
        self, text_field_renamed: ConfigChangeScenario
    ) -> None:
        """One event names the old and the new field."""
        assert ["text field renamed from 'text' to 'review'"] == text_field_renamed.config_changes()


# --- the pure parts -------------------------------------------------------------------------
