"""Never report success that did not happen (issue 11, items 1, 2, 4, 8 and 9).

Each case is met the way an operator meets it: a state dir on a file system that fills up
(a real tmpfs, mounted by the test: the suite runs as root in CI), a version whose count
check fails in a real Label Studio, a wall clock that steps back, labels the config does
not have. What is checked is what the operator reads: the exit status and the line `once`
prints, the log events, `/healthz` and `status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog

from aldaemon import cli
from aldaemon.config import Config, load_config
from aldaemon.errors import EX_CANTCREAT
from aldaemon.labelstudio.gateway import LabelStudioGateway
from aldaemon.loop.context import CycleContext
from aldaemon.loop.cycle import Cycle
from aldaemon.loop.poll import record_poll
from aldaemon.records import AnnotationRecord, LabelingSchema, PredictionRecord, TaskRecord
from aldaemon.service.http import HttpEdge
from aldaemon.service.metrics import Metrics
from aldaemon.service.runtime import Runtime
from aldaemon.store import Store
from aldaemon.sync.policy import seconds_since_attempt
from aldaemon.sync.reconcile import diff
from aldaemon.sync.versions import label_counts
from aldaemon.views.report import collect_report_data
from aldaemon.views.status import project_status
from tests.conftest import MakeProject
from tests.lsserver import LabelStudioClient, LabelStudioServer, free_port

POSITIVE = ["good great lovely", "great film, loved it", "lovely and good", "wonderful good"]
NEGATIVE = ["bad awful terrible", "awful film, hated it", "terrible and bad", "boring bad"]
UNLABELED = [f"some review number {n} about a film" for n in range(8)]
TASKS = [{"text": text} for text in POSITIVE + NEGATIVE + UNLABELED]


# ---- helpers -------------------------------------------------------------------------------


def write_config(
    directory: Path,
    *,
    state_dir: Path,
    url: str = "http://127.0.0.1:9",
    token: str = "a-token-that-is-never-sent",
    project_id: int = 1,
    listen: str = "",
    min_new_annotations: int = 1,
) -> Path:
    path = directory / "config.toml"
    path.write_text(
        f"""
[labelstudio]
url = "{url}"
token = "{token}"
max_attempts = 2

[state]
dir = "{state_dir}"

[daemon]
listen = "{listen}"

[[projects]]
id = {project_id}
[projects.retrain]
min_new_annotations = {min_new_annotations}
min_interval = 0
min_per_class = 2
"""
    )
    return path


def run_cli(*argv: str) -> tuple[int, str, str]:
    """`aldaemon.cli.main(argv)` with its output captured: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["--log-format", "json", *argv])
    return code, out.getvalue(), err.getvalue()


def require_root() -> None:
    """Mounting a tmpfs needs root: skip without it, except in CI, which must run these."""
    if os.geteuid() == 0:
        return
    reason = "mounting a small tmpfs as the state dir needs root"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the disk-full tests must not be skipped)")
    pytest.skip(reason)


@contextlib.contextmanager
def small_tmpfs(mount_point: Path, *, size: str) -> Iterator[Path]:
    """A tmpfs of `size` at `mount_point`, unmounted at the end whatever happens."""
    require_root()
    mount_point.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mount_point)],
        check=True,
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the file system is full; returns it (delete it to free the space)."""
    filler = directory / "filler"
    chunk = b"\0" * 4096
    with filler.open("wb", buffering=0) as handle:
        while True:
            try:
                handle.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
    return filler


def events(logs: Sequence[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry.get("event") == name]


def label_tasks(client: LabelStudioClient, project_id: int, *, first: int, count: int) -> None:
    task_ids = sorted(client.task_ids(project_id))
    texts = POSITIVE + NEGATIVE
    for index in range(first, first + count):
        label = "pos" if texts[index] in POSITIVE else "neg"
        client.annotate(task_ids[index], label)


def http_get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


# ---- item 2: first start on a full disk ----------------------------------------------------


class TestFirstStartOnAFullDisk:
    @pytest.mark.parametrize("command", ["once", "run"])
    def test_exits_73_naming_the_path_without_a_traceback(
        self, tmp_path: Path, command: str
    ) -> None:
        """The lock file cannot be written on a full disk: exit 73 and one line naming it."""
        with small_tmpfs(tmp_path / "state", size="64k") as state_dir:
            fill(state_dir)
            config = write_config(tmp_path, state_dir=state_dir)

            code, _, stderr = run_cli("--config", str(config), command)

        assert (EX_CANTCREAT, True, False) == (
            code,
            str(state_dir) in stderr,
            "Traceback" in stderr,
        ), stderr


# ---- item 1: the disk fills up while the daemon runs ----------------------------------------


def labelstudio_config(
    tmp_path: Path, server: LabelStudioServer, project_id: int, *, state_dir: Path, listen: str
) -> Config:
    path = write_config(
        tmp_path,
        state_dir=state_dir,
        url=server.url,
        token=server.legacy_token,
        project_id=project_id,
        listen=listen,
    )
    return load_config(path, env={})


@pytest.mark.labelstudio
class TestDiskFullWhileRunning:
    def test_cycles_fail_healthz_names_the_state_dir_and_recovery_follows(
        self,
        tmp_path: Path,
        make_project: MakeProject,
        ls_client: LabelStudioClient,
        label_studio: LabelStudioServer,
    ) -> None:
        """Full disk: failed cycles, `project.failed` once, /healthz 503 naming the state
        dir; space back: `project.recovered` once, /healthz 200, no annotation lost."""
        project_id = make_project(TASKS)
        label_tasks(ls_client, project_id, first=0, count=2)
        label_tasks(ls_client, project_id, first=4, count=2)
        with small_tmpfs(tmp_path / "state", size="8m") as state_dir:
            listen = f"127.0.0.1:{free_port()}"
            config = labelstudio_config(
                tmp_path, label_studio, project_id, state_dir=state_dir, listen=listen
            )
            seen = asyncio.run(self._scenario(config, ls_client, project_id, state_dir))

        full, freed = seen["full"], seen["freed"]
        assert {
            "outcomes while full": ["failed", "failed", "failed"],
            "project.failed": 1,
            "project.recovered while full": 0,
            "healthz while full": 503,
            "state dir named": True,
            "outcome after": "ok",
            "project.recovered after": 1,
            "healthz after": 200,
            "labels after": 5,
        } == {
            "outcomes while full": full["outcomes"],
            "project.failed": len(events(full["logs"], "project.failed")),
            "project.recovered while full": len(events(full["logs"], "project.recovered")),
            "healthz while full": full["healthz"][0],
            "state dir named": str(state_dir) in json.dumps(full["healthz"][1]),
            "outcome after": freed["outcomes"][0],
            "project.recovered after": len(events(freed["logs"], "project.recovered")),
            "healthz after": freed["healthz"][0],
            "labels after": freed["labels"],
        }

    @staticmethod
    async def _scenario(
        config: Config, client: LabelStudioClient, project_id: int, state_dir: Path
    ) -> dict[str, dict[str, Any]]:
        project = config.projects[0]
        async with Runtime(config) as runtime:
            started = time.time()
            edge = HttpEdge(
                listen=config.daemon.listen,
                webhook_secret=None,
                metrics=runtime.metrics,
                known_projects=lambda: [project_id],
                request_poll=lambda _: None,
                health=lambda: runtime.health_report(now=time.time(), started_at=started),
            )
            await edge.start()
            health_url = f"http://127.0.0.1:{edge.bound_port}/healthz"
            try:
                first = await runtime.run_cycle(project)
                assert first.outcome in ("ok", "idle"), first
                await runtime.wait_for_prunes()
                filler = fill(state_dir)
                label_tasks(client, project_id, first=2, count=1)  # a label to keep
                seen: dict[str, dict[str, Any]] = {}
                with structlog.testing.capture_logs() as logs:
                    outcomes = [(await runtime.run_cycle(project)).outcome for _ in range(3)]
                    healthz = await asyncio.to_thread(http_get, health_url)
                seen["full"] = {"outcomes": outcomes, "logs": list(logs), "healthz": healthz}
                filler.unlink()
                with structlog.testing.capture_logs() as logs:
                    outcomes = [(await runtime.run_cycle(project)).outcome]
                    healthz = await asyncio.to_thread(http_get, health_url)
                    await runtime.wait_for_prunes()
                assert runtime.store is not None
                labels = sum(label_counts(runtime.store.annotated_tasks(project_id)).values())
                seen["freed"] = {
                    "outcomes": outcomes,
                    "logs": list(logs),
                    "healthz": healthz,
                    "labels": labels,
                }
                return seen
            finally:
                await edge.stop()


# ---- item 4: a version that failed its count check ------------------------------------------


class DuplicatingGateway(LabelStudioGateway):
    """Sends the first prediction of the first batch twice: Label Studio then holds one
    more prediction of the version than aldaemon sent, as after a foreign writer."""

    duplicated = False

    async def import_predictions(
        self,
        project_id: int,
        *,
        model_version: str,
        schema: LabelingSchema,
        predictions: Sequence[PredictionRecord],
    ) -> int:
        created = await super().import_predictions(
            project_id, model_version=model_version, schema=schema, predictions=predictions
        )
        if not DuplicatingGateway.duplicated and predictions:
            DuplicatingGateway.duplicated = True
            await super().import_predictions(
                project_id,
                model_version=model_version,
                schema=schema,
                predictions=list(predictions[:1]),
            )
        return created


@pytest.mark.labelstudio
class TestCountMismatch:
    def test_once_says_the_version_failed_and_exits_non_zero(
        self,
        tmp_path: Path,
        make_project: MakeProject,
        ls_client: LabelStudioClient,
        label_studio: LabelStudioServer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """`upload.count_mismatch`: `once` prints "failed" and why, exits 1, no ok cycle."""
        project_id = make_project(TASKS)
        label_tasks(ls_client, project_id, first=0, count=2)
        label_tasks(ls_client, project_id, first=4, count=2)
        config = write_config(
            tmp_path,
            state_dir=tmp_path / "state",
            url=label_studio.url,
            token=label_studio.legacy_token,
            project_id=project_id,
        )
        DuplicatingGateway.duplicated = False

        def duplicating(config: Config) -> LabelStudioGateway:
            return DuplicatingGateway(
                url=config.labelstudio.url,
                token=config.labelstudio.token,
                timeout=config.labelstudio.timeout,
                max_attempts=config.labelstudio.max_attempts,
            )

        monkeypatch.setattr(Runtime, "_make_gateway", staticmethod(duplicating))
        code, stdout, stderr = run_cli("--config", str(config), "once")

        with Store.open(tmp_path / "state", lock=False) as store:
            last_cycle = store.last_cycle(project_id)
        assert {
            "count_mismatch logged": True,
            "exit": 1,
            "printed": f"project {project_id}: failed",
            "count check named": True,
            "outcome": "failed",
        } == {
            "count_mismatch logged": "upload.count_mismatch" in stderr,
            "exit": code,
            "printed": stdout.split(";")[0],
            "count check named": "count check" in stdout,
            "outcome": last_cycle.outcome if last_cycle else None,
        }, stdout


# ---- item 9: labels the config does not have ------------------------------------------------


@pytest.mark.labelstudio
class TestStatusCountsWhatTrains:
    @pytest.fixture
    def status_with_a_foreign_label(
        self,
        tmp_path: Path,
        make_project: MakeProject,
        ls_client: LabelStudioClient,
        label_studio: LabelStudioServer,
    ) -> tuple[dict[str, Any], str]:
        """(status --json, status text) after a cycle read 4 config labels and one 'meh'."""
        project_id = make_project(TASKS)
        label_tasks(ls_client, project_id, first=0, count=2)
        label_tasks(ls_client, project_id, first=4, count=2)
        ls_client.annotate(sorted(ls_client.task_ids(project_id))[8], "meh")
        config = write_config(
            tmp_path,
            state_dir=tmp_path / "state",
            url=label_studio.url,
            token=label_studio.legacy_token,
            project_id=project_id,
        )
        assert 0 == run_cli("--config", str(config), "once")[0]
        _, as_json, _ = run_cli("--config", str(config), "status", "--json")
        _, as_text, _ = run_cli("--config", str(config), "status")
        return json.loads(as_json)["projects"][0], as_text

    def test_labels_count_what_trains(
        self, status_with_a_foreign_label: tuple[dict[str, Any], str]
    ) -> None:
        """`labels` is what training uses (4), not every stored label (5)."""
        project, _ = status_with_a_foreign_label

        assert (4, {"neg": 2, "pos": 2}) == (project["labels"], project["labels_per_class"])

    def test_the_rest_is_listed_apart(
        self, status_with_a_foreign_label: tuple[dict[str, Any], str]
    ) -> None:
        """The label the config lacks is shown on its own line, with its count."""
        project, text = status_with_a_foreign_label

        assert ({"meh": 1}, True) == (
            project["labels_not_in_config"],
            "labels not in the config: meh 1" in text,
        ), text


@pytest.mark.labelstudio
class TestEveryLabelCountIsWhatTrains:
    @pytest.fixture
    def counts(
        self,
        tmp_path: Path,
        make_project: MakeProject,
        ls_client: LabelStudioClient,
        label_studio: LabelStudioServer,
    ) -> dict[str, tuple[dict[str, int], dict[str, int]]]:
        """(labels that train, labels not in the config) as `status`, the `aldaemon_labels`
        gauges and the report each count them, after a cycle read 4 config labels and 'meh'."""
        project_id = make_project(TASKS)
        label_tasks(ls_client, project_id, first=0, count=2)
        label_tasks(ls_client, project_id, first=4, count=2)
        ls_client.annotate(sorted(ls_client.task_ids(project_id))[8], "meh")
        path = write_config(
            tmp_path,
            state_dir=tmp_path / "state",
            url=label_studio.url,
            token=label_studio.legacy_token,
            project_id=project_id,
        )
        config = load_config(path, env={})
        (project,) = config.projects

        def gauge(metrics: Metrics, name: str) -> dict[str, int]:
            return {
                sample.labels["label"]: int(sample.value)
                for family in metrics.registry.collect()
                for sample in family.samples
                if sample.name == name and sample.labels.get("project") == str(project_id)
            }

        async def run() -> dict[str, tuple[dict[str, int], dict[str, int]]]:
            async with Runtime(config) as runtime:
                await runtime.run_cycle(project)
                assert runtime.store is not None
                status = project_status(runtime.store, project)
                report = collect_report_data(
                    runtime.store, project_id, now=time.time(), project=project
                )
                return {
                    "status": (status["labels_per_class"], status["labels_not_in_config"]),
                    "gauges": (
                        gauge(runtime.metrics, "aldaemon_labels"),
                        gauge(runtime.metrics, "aldaemon_labels_not_in_config"),
                    ),
                    "report": (report.labels_per_class, report.labels_not_in_config),
                }

        return asyncio.run(run())

    def test_status_gauges_and_report_agree_on_what_trains(
        self, counts: dict[str, tuple[dict[str, int], dict[str, int]]]
    ) -> None:
        """All three count pos 2 and neg 2 as training labels and list 'meh' apart."""
        expected = ({"neg": 2, "pos": 2}, {"meh": 1})
        assert {"status": expected, "gauges": expected, "report": expected} == counts


# ---- item 8: the wall clock steps back -------------------------------------------------------


class Clocks:
    """A wall clock and a monotonic clock the test moves by hand."""

    def __init__(self, *, wall: float, monotonic: float) -> None:
        self.wall_now = wall
        self.monotonic_now = monotonic

    def wall(self) -> float:
        return self.wall_now

    def monotonic(self) -> float:
        return self.monotonic_now

    def advance(self, seconds: float) -> None:
        self.wall_now += seconds
        self.monotonic_now += seconds


T_TRAINED = 1_800_000_000.0
SCHEMA = LabelingSchema(
    text_field="text", from_name="sentiment", to_name="text", labels=("pos", "neg")
)


def trained_project_context(tmp_path: Path, clocks: Clocks) -> CycleContext:
    """A store with 8 labels, a version trained at T_TRAINED and 8 label changes since."""
    path = write_config(tmp_path, state_dir=tmp_path / "state", min_new_annotations=1)
    path.write_text(path.read_text().replace("min_interval = 0", "min_interval = 60"))
    config = load_config(path, env={})
    store = Store.open(config.state.dir)
    store.create_version(1, name="aldaemon-v1", number=1, label_changes=0, now=T_TRAINED)
    store.mark_trained(
        1,
        "aldaemon-v1",
        trained_at=T_TRAINED,
        n_labels=8,
        class_counts={"pos": 4, "neg": 4},
        metrics={},
        train_seconds=1.0,
        artifact_path="",
    )
    tasks = [
        TaskRecord(
            id=n,
            updated_at="2026-11-27T21:11:36.815556Z",
            text=f"text {n}",
            annotations=(
                AnnotationRecord(
                    id=n,
                    task_id=n,
                    label="pos" if n % 2 else "neg",
                    was_cancelled=False,
                    updated_at="2026-11-27T21:11:36.815556Z",
                ),
            ),
        )
        for n in range(1, 9)
    ]
    record_poll(store, 1, diff(tasks, {}), now=T_TRAINED)
    ctx = CycleContext(
        project=config.projects[0],
        daemon=config.daemon,
        gateway=None,  # type: ignore[arg-type]  # deciding needs no Label Studio
        store=store,
        worker=None,  # type: ignore[arg-type]
        artifacts_dir=tmp_path,
    )
    ctx.clock = clocks.wall
    ctx.monotonic = clocks.monotonic
    return ctx


class TestClockStepBack:
    def test_a_step_back_does_not_hold_training_back_by_its_size(self, tmp_path: Path) -> None:
        """min_interval 60 s, 10 s after training the clock steps back an hour; 5 s later
        the wait is 45 s (monotonic), not 3645 s, and `clock.stepped_back` says why, once."""
        clocks = Clocks(wall=T_TRAINED + 10, monotonic=500.0)
        ctx = trained_project_context(tmp_path, clocks)
        try:
            before = Cycle(ctx)._decide(SCHEMA, text_field_changed=False).reason
            clocks.wall_now -= 3600
            clocks.advance(5)
            with structlog.testing.capture_logs() as logs:
                after = [Cycle(ctx)._decide(SCHEMA, text_field_changed=False).reason]
                clocks.advance(50)
                after.append(Cycle(ctx)._decide(SCHEMA, text_field_changed=False).reason)
        finally:
            ctx.store.close()

        stepped = events(logs, "clock.stepped_back")
        assert {
            "before": "next training allowed in 50 s",
            "after": ["next training allowed in 45 s", "8 new labels (threshold 1)"],
            "stepped_back logged": 1,
            "step seconds": 3600,
        } == {
            "before": before,
            "after": after,
            "stepped_back logged": len(stepped),
            "step seconds": stepped[0].get("seconds") if stepped else None,
        }


class TestSecondsSinceAttempt:
    def test_a_fresh_process_on_a_clock_behind_the_attempt_waits_at_most_the_interval(
        self,
    ) -> None:
        """No anchor yet and the wall clock an hour behind the stored time: 0 s elapsed
        (so the wait is min_interval at most), and the step is reported."""
        elapsed = seconds_since_attempt(
            attempt_at=T_TRAINED, wall_now=T_TRAINED - 3600, monotonic_now=7.0, anchor=None
        )

        assert (0.0, 3600.0) == (elapsed.seconds, elapsed.wall_behind)

    def test_a_steady_clock_reports_no_step(self) -> None:
        """Wall and monotonic clocks moving together: the wall time, nothing behind."""
        first = seconds_since_attempt(
            attempt_at=T_TRAINED, wall_now=T_TRAINED + 10, monotonic_now=100.0, anchor=None
        )
        second = seconds_since_attempt(
            attempt_at=T_TRAINED, wall_now=T_TRAINED + 40, monotonic_now=130.0, anchor=first.anchor
        )

        assert (40.0, 0.0) == (second.seconds, second.wall_behind)
