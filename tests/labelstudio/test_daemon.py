"""`aldaemon run` as a real subprocess against the real Label Studio.

Every test starts `python -m aldaemon --config X --log-format json run`, drives it the way
systemd and Label Studio would (signals, a NOTIFY_SOCKET, webhooks, an outage) and reads
what it did from its JSON log lines, its HTTP endpoints and Label Studio itself. Settings
are small (poll every 2 s, a handful of tasks) and every wait is bounded; a timed-out wait
fails with the daemon's log tail.

A slow model (`make_slow_classifier`, below) holds a training open on demand: the daemon's
worker process imports it by name, and ALDAEMON_TEST_FIT_DELAY says how long each fit
sleeps, so "SIGTERM during a training" is a state the test creates, not a lucky timing.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pytest

from aldaemon.errors import EX_CONFIG
from aldaemon.model.default import make_text_classifier
from aldaemon.service.daemon import WEBHOOK_DEBOUNCE_SECONDS
from tests.conftest import MakeProject
from tests.lsserver import REPO_ROOT, LabelStudioClient, LabelStudioServer, free_port

SLOW_MODEL = "tests.labelstudio.test_daemon:make_slow_classifier"
FIT_DELAY_ENV = "ALDAEMON_TEST_FIT_DELAY"
WEBHOOK_SECRET = "webhook-secret-for-daemon-tests-42"
UNCERTAINTY_SAMPLING = "Uncertainty sampling"
# How long a wait for something the daemon is about to do may take on a loaded machine.
# Only a failing test waits this long: every wait returns as soon as its condition holds.
WAIT_SECONDS = 60.0

labelstudio = pytest.mark.labelstudio
T = TypeVar("T")

POSITIVE = ["good great lovely", "great film, loved it", "lovely and good", "wonderful good"]
NEGATIVE = ["bad awful terrible", "awful film, hated it", "terrible and bad", "boring bad"]
UNLABELED = [f"some review number {n} about a film" for n in range(8)]
TASKS = [{"text": text} for text in POSITIVE + NEGATIVE + UNLABELED]


# ---- a model whose fit takes as long as the test wants -----------------------------------


class SlowClassifier:
    """The default classifier, with a sleep before each fit (ALDAEMON_TEST_FIT_DELAY s)."""

    def __init__(self) -> None:
        self._inner = make_text_classifier()
        self.classes_: Any = None

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> SlowClassifier:
        time.sleep(float(os.environ.get(FIT_DELAY_ENV, "0")))
        self._inner.fit(texts, labels)
        self.classes_ = self._inner.classes_
        return self

    def predict_proba(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        probabilities: npt.NDArray[np.float64] = self._inner.predict_proba(texts)
        return probabilities


def make_slow_classifier() -> SlowClassifier:
    return SlowClassifier()


# ---- the daemon as a subprocess -----------------------------------------------------------


@dataclass
class DaemonSettings:
    """What goes into the daemon's config file; each field is one line of TOML."""

    url: str
    token: str
    state_dir: Path
    projects: Sequence[int]
    listen: str = ""
    poll_interval: float = 2
    shutdown_grace: float = 30
    webhook_secret: str | None = WEBHOOK_SECRET
    model: str | None = None
    max_attempts: int = 2
    # The daemon's own default. A shorter one turns a slow answer on a loaded machine into
    # a failed cycle (and an unreachable/recovered pair in the log); a Label Studio that is
    # down refuses the connection at once, so no test waits for it.
    timeout: float = 30
    min_new_annotations: int = 2

    def toml(self, secrets_dir: Path) -> str:
        secrets_dir.mkdir(parents=True, exist_ok=True)
        token_file = secrets_dir / "labelstudio-token"
        token_file.write_text(self.token)
        lines = [
            "[labelstudio]",
            f'url = "{self.url}"',
            f'token_file = "{token_file}"',
            f"timeout = {self.timeout}",
            f"max_attempts = {self.max_attempts}",
            "[state]",
            f'dir = "{self.state_dir}"',
            "[daemon]",
            f"poll_interval = {self.poll_interval}",
            "resync_interval = 600",
            f'listen = "{self.listen}"',
            f"shutdown_grace = {self.shutdown_grace}",
            "cycle_timeout = 120",
        ]
        if self.webhook_secret is not None:
            secret_file = secrets_dir / "webhook-secret"
            secret_file.write_text(self.webhook_secret)
            lines.append(f'webhook_secret_file = "{secret_file}"')
        for project_id in self.projects:
            lines += ["[[projects]]", f"id = {project_id}"]
            if self.model is not None:
                lines.append(f'model = "{self.model}"')
            lines += [
                "[projects.retrain]",
                f"min_new_annotations = {self.min_new_annotations}",
                "min_interval = 0",
                "min_per_class = 1",
                "[projects.predictions]",
                "queue_depth = 0  # every unlabeled task: the tests count them",
            ]
        return "\n".join(lines) + "\n"


class DaemonProcess:
    """One `aldaemon run` subprocess, its JSON log file, and bounded waits on it."""

    def __init__(
        self,
        *,
        config_path: Path,
        log_path: Path,
        log_level: str = "info",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config_path = config_path
        self.log_path = log_path
        process_env = dict(os.environ)
        process_env.pop("NOTIFY_SOCKET", None)  # only a test that asks for one gets one
        process_env.update({"PYTHONPATH": str(REPO_ROOT), **(env or {})})
        with log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "aldaemon",
                    "--config",
                    str(config_path),
                    "--log-format",
                    "json",
                    "--log-level",
                    log_level,
                    "run",
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                env=process_env,
            )

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def lines(self) -> list[dict[str, Any]]:
        """Every log line so far; a line that is not JSON becomes {"event": None, "raw": ...}."""
        parsed: list[dict[str, Any]] = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            parsed.append(record if isinstance(record, dict) else {"event": None, "raw": line})
        return parsed

    def events(self, name: str, **fields: object) -> list[dict[str, Any]]:
        """Log records with this event name whose fields have the given values."""
        return [
            record
            for record in self.lines()
            if record.get("event") == name
            and all(record.get(key) == value for key, value in fields.items())
        ]

    def tail(self, count: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-count:])

    def wait_for(
        self, what: str, probe: Callable[[], T | None], *, timeout: float = WAIT_SECONDS
    ) -> T:
        """Poll `probe` until it returns something other than None/False; fail with the log."""
        deadline = time.monotonic() + timeout
        while True:
            result = probe()
            if result is not None and result is not False:
                return result
            if not self.running:
                raise AssertionError(
                    f"the daemon exited ({self.process.returncode}) while waiting for {what}\n"
                    f"--- daemon log tail ---\n{self.tail()}"
                )
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout:g} s waiting for {what}\n"
                    f"--- daemon log tail ---\n{self.tail()}"
                )
            time.sleep(0.2)

    def wait_for_event(
        self, name: str, *, count: int = 1, timeout: float = WAIT_SECONDS, **fields: object
    ) -> dict[str, Any]:
        """The `count`-th record of this event (waiting for it); returns that record."""

        def probe() -> dict[str, Any] | None:
            found = self.events(name, **fields)
            return found[count - 1] if len(found) >= count else None

        shown = ", ".join(f"{k}={v!r}" for k, v in fields.items())
        return self.wait_for(f"{count} x {name} ({shown})", probe, timeout=timeout)

    def send(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float = 60) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the daemon did not exit within {timeout:g} s\n"
                f"--- daemon log tail ---\n{self.tail()}"
            ) from None

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM and wait for the exit status."""
        if self.running:
            self.send(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        if self.running:
            self.process.kill()
            self.process.wait(timeout=30)


StartDaemon = Callable[..., tuple[DaemonProcess, DaemonSettings]]


def _launch(
    directory: Path,
    settings: DaemonSettings,
    *,
    log_level: str = "info",
    env: Mapping[str, str] | None = None,
) -> DaemonProcess:
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "config.toml"
    config_path.write_text(settings.toml(directory / "secrets"))
    return DaemonProcess(
        config_path=config_path,
        log_path=directory / "daemon.log",
        log_level=log_level,
        env=env,
    )


@pytest.fixture
def start_daemon(tmp_path: Path, label_studio: LabelStudioServer) -> Iterator[StartDaemon]:
    """Factory: start a daemon for some projects; it is killed (and its log shown) at the end."""
    started: list[DaemonProcess] = []

    def start(
        projects: Sequence[int],
        *,
        log_level: str = "info",
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> tuple[DaemonProcess, DaemonSettings]:
        settings = DaemonSettings(
            url=label_studio.url,
            token=label_studio.legacy_token,
            state_dir=tmp_path / "state",
            projects=projects,
            **overrides,
        )
        daemon = _launch(
            tmp_path / f"daemon-{len(started)}", settings, log_level=log_level, env=env
        )
        started.append(daemon)
        return daemon, settings

    yield start
    for daemon in started:
        daemon.kill()
        print(f"--- {daemon.log_path} ---\n{daemon.tail(80)}")


def rewrite_config(daemon: DaemonProcess, settings: DaemonSettings) -> None:
    daemon.config_path.write_text(settings.toml(daemon.config_path.parent / "secrets"))


def label_tasks(client: LabelStudioClient, project_id: int, *, first: int, count: int) -> None:
    """Annotate POSITIVE[first:first+count] as pos and NEGATIVE[first:first+count] as neg."""
    task_ids = client.task_ids(project_id)  # import order: POSITIVE, NEGATIVE, UNLABELED
    for index in range(first, first + count):
        client.annotate(task_ids[index], "pos")
        client.annotate(task_ids[len(POSITIVE) + index], "neg")


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def post_webhook(
    listen: str, body: Mapping[str, object], *, secret: str | None, query: str = ""
) -> int:
    request = urllib.request.Request(
        f"http://{listen}/webhook{query}", data=json.dumps(body).encode(), method="POST"
    )
    request.add_header("Content-Type", "application/json")
    if secret is not None:
        request.add_header("X-Aldaemon-Secret", secret)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def annotation_created(project_id: int) -> dict[str, object]:
    return {
        "action": "ANNOTATION_CREATED",
        "annotation": {"id": 1, "task": 1, "project": project_id},
        "project": {"id": project_id},
    }


def metric_samples(text: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """{labels: value} of one metric in the Prometheus text format."""
    samples: dict[frozenset[tuple[str, str]], float] = {}
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        labels_text, _, value = line[len(name) + 1 :].rpartition("} ")
        pairs = [item.split("=", 1) for item in labels_text.split(",") if item]
        samples[frozenset((key, raw.strip('"')) for key, raw in pairs)] = float(value)
    return samples


def cycles_of(daemon: DaemonProcess, project_id: int) -> list[dict[str, Any]]:
    return daemon.events("cycle.finished", project_id=project_id)


# ---- tests ------------------------------------------------------------------------------


class TestBadConfig:
    def test_run_with_an_invalid_config_exits_78(self, tmp_path: Path) -> None:
        """`aldaemon run` on a config with a bad value exits 78, so systemd does not restart it."""
        config = tmp_path / "config.toml"
        config.write_text('[labelstudio]\nurl = "ftp://x"\ntoken = "abcdefgh12"\n')

        completed = subprocess.run(
            [sys.executable, "-m", "aldaemon", "--config", str(config), "run"],
            cwd=REPO_ROOT,
            capture_output=True,
            timeout=60,
        )

        assert EX_CONFIG == completed.returncode

    def test_run_with_a_missing_config_exits_78(self, tmp_path: Path) -> None:
        """`aldaemon run` with no config file at the given path exits 78."""
        completed = subprocess.run(
            [sys.executable, "-m", "aldaemon", "--config", str(tmp_path / "nope.toml"), "run"],
            cwd=REPO_ROOT,
            capture_output=True,
            timeout=60,
        )

        assert EX_CONFIG == completed.returncode


class TestRestartKeepsSigningKey:
    def test_the_suite_pins_a_signing_key_label_studio_keeps(self, tmp_path: Path) -> None:
        """Test servers run with a fixed SECRET_KEY, so a restart keeps every token valid."""
        server = LabelStudioServer(data_dir=tmp_path)
        (tmp_path / ".env").write_text("\nSECRET_KEY=$x(9abc\n")  # what 1.23 may store
        assert (True, server.environment()["SECRET_KEY"]) == (
            restart_keeps_signing_key(server),
            LabelStudioServer(data_dir=tmp_path).environment()["SECRET_KEY"],
        )


@labelstudio
class TestActiveLearningLoop:
    # Both tests make 4 annotations, one POST at a time. min_new_annotations = 4 keeps a
    # poll that lands between the POSTs from training on some of them: exactly one version
    # is trained, on all 4, however the polls fall.

    def test_annotations_lead_to_an_active_version_with_uncertainty_sampling(
        self,
        start_daemon: StartDaemon,
        make_project: MakeProject,
        ls_client: LabelStudioClient,
    ) -> None:
        """Annotations made through the API become an active version with uncertainty sampling."""
        project_id = make_project(TASKS)
        daemon, _ = start_daemon([project_id], min_new_annotations=4)
        daemon.wait_for_event("cycle.finished", project_id=project_id)

        label_tasks(ls_client, project_id, first=0, count=2)
        activated = daemon.wait_for_event("version.activated", project_id=project_id, timeout=60)

        project = ls_client.get_project(project_id)
        assert ("aldaemon-v1", "aldaemon-v1", UNCERTAINTY_SAMPLING) == (
            activated["version"],
            project["model_version"],
            project["sampling"],
        )

    def test_metrics_count_cycles_and_labels(
        self,
        start_daemon: StartDaemon,
        make_project: MakeProject,
        ls_client: LabelStudioClient,
    ) -> None:
        """After a cycle that read labels, /metrics holds that cycle and the labels per class."""
        project_id = make_project(TASKS)
        listen = f"127.0.0.1:{free_port()}"
        daemon, _ = start_daemon([project_id], listen=listen, min_new_annotations=4)
        label_tasks(ls_client, project_id, first=0, count=2)
        # The cycle's own `cycle.finished`, not `version.activated`: the metrics are set at
        # the end of the cycle, after the activation is logged.
        daemon.wait_for_event("cycle.finished", project_id=project_id, activated=1)

        _, text = http_get(f"http://{listen}/metrics")

        project = str(project_id)
        ok_cycles = metric_samples(text, "aldaemon_cycles_total").get(
            frozenset({("project", project), ("outcome", "ok")}), 0.0
        )
        labels = {
            dict(key)["label"]: value
            for key, value in metric_samples(text, "aldaemon_labels").items()
            if dict(key)["project"] == project
        }
        assert (True, {"pos": 2.0, "neg": 2.0}) == (ok_cycles >= 1, labels)


@dataclass
class InterruptedTraining:
    """What happened when a daemon got SIGTERM mid-training and a second one started."""

    project_id: int
    first: DaemonProcess
    first_exit: int
    second: DaemonProcess
    predictions: list[tuple[int, str, float | None]] = field(default_factory=list)
    active_version: str | None = None


@pytest.fixture(scope="class")
def interrupted(
    tmp_path_factory: pytest.TempPathFactory,
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
) -> Iterator[InterruptedTraining]:
    """SIGTERM while the first training sleeps in its fit; then start again and let it work."""
    directory = tmp_path_factory.mktemp("interrupted")
    project_id = ls_client.create_project(title="daemon: SIGTERM during training")
    ls_client.import_tasks(project_id, TASKS)
    settings = DaemonSettings(
        url=label_studio.url,
        token=label_studio.legacy_token,
        state_dir=directory / "state",
        projects=[project_id],
        model=SLOW_MODEL,
        shutdown_grace=1,
    )
    first = _launch(directory / "first", settings, env={FIT_DELAY_ENV: "120"})
    second: DaemonProcess | None = None
    try:
        first.wait_for_event("cycle.finished", project_id=project_id)
        label_tasks(ls_client, project_id, first=0, count=2)
        first.wait_for_event("train.started", project_id=project_id, timeout=60)
        first.send(signal.SIGTERM)
        first_exit = first.wait_exit(timeout=60)

        second = _launch(directory / "second", settings, env={FIT_DELAY_ENV: "0"})
        second.wait_for_event("version.activated", project_id=project_id, timeout=90)
        second.terminate()
        result = InterruptedTraining(
            project_id=project_id, first=first, first_exit=first_exit, second=second
        )
        result.predictions = [
            (p["task"], p["model_version"], p["score"]) for p in ls_client.predictions(project_id)
        ]
        result.active_version = ls_client.get_project(project_id)["model_version"]
        yield result
    finally:
        for daemon in (first, second):
            if daemon is not None:
                daemon.kill()
                print(f"--- {daemon.log_path} ---\n{daemon.tail(60)}")


@labelstudio
class TestSigtermDuringTraining:
    def test_the_daemon_exits_zero(self, interrupted: InterruptedTraining) -> None:
        """SIGTERM during a training ends the daemon with exit status 0."""
        assert 0 == interrupted.first_exit

    def test_the_training_was_cut_short_by_the_grace_period(
        self, interrupted: InterruptedTraining
    ) -> None:
        """With the fit still sleeping when the grace ends, the cycle is cancelled, not awaited."""
        assert 1 == len(interrupted.first.events("daemon.grace_expired"))

    def test_the_next_start_resumes_the_interrupted_version(
        self, interrupted: InterruptedTraining
    ) -> None:
        """The second daemon picks up the version left in state 'training' instead of a new one."""
        resumed = interrupted.second.events("version.resumed", project_id=interrupted.project_id)
        assert [("aldaemon-v1", "training")] == [(r["version"], r["state"]) for r in resumed]

    def test_there_is_one_prediction_per_task_and_version(
        self, interrupted: InterruptedTraining
    ) -> None:
        """Label Studio holds at most one prediction per (task, model version)."""
        per_key = collections.Counter(
            (task, version) for task, version, _ in interrupted.predictions
        )
        assert [] == [key for key, count in per_key.items() if count > 1]

    def test_the_active_version_has_a_prediction_for_every_unlabeled_task(
        self, interrupted: InterruptedTraining
    ) -> None:
        """The version activated after the restart covers all unlabeled tasks."""
        active = interrupted.active_version
        covered = [task for task, version, _ in interrupted.predictions if version == active]
        assert (len(TASKS) - 4, len(TASKS) - 4) == (len(covered), len(set(covered)))


@labelstudio
class TestReload:
    def test_a_broken_file_is_rejected_and_polling_goes_on(
        self, start_daemon: StartDaemon, make_project: MakeProject
    ) -> None:
        """SIGHUP with invalid TOML logs config.reload_rejected and the old config keeps polling."""
        project_id = make_project(TASKS)
        daemon, _ = start_daemon([project_id])
        daemon.wait_for_event("cycle.finished", project_id=project_id)
        daemon.config_path.write_text("[labelstudio\nthis is not toml")

        daemon.send(signal.SIGHUP)
        daemon.wait_for_event("config.reload_rejected")
        cycles_at_rejection = len(cycles_of(daemon, project_id))
        daemon.wait_for_event(
            "cycle.finished", project_id=project_id, count=cycles_at_rejection + 2
        )

        assert len(cycles_of(daemon, project_id)) - cycles_at_rejection >= 2

    def test_adding_a_project_starts_serving_it(
        self, start_daemon: StartDaemon, make_project: MakeProject
    ) -> None:
        """SIGHUP after adding a project to the file starts cycles for that project."""
        first = make_project(TASKS)
        second = make_project(TASKS)
        daemon, settings = start_daemon([first])
        daemon.wait_for_event("cycle.finished", project_id=first)
        settings.projects = [first, second]
        rewrite_config(daemon, settings)

        daemon.send(signal.SIGHUP)
        reloaded = daemon.wait_for_event("config.reloaded")
        cycle = daemon.wait_for_event("cycle.finished", project_id=second)

        assert ([second], second) == (reloaded["added"], cycle["project_id"])


@labelstudio
class TestWebhook:
    @pytest.fixture
    def webhook_daemon(
        self, start_daemon: StartDaemon, make_project: MakeProject
    ) -> tuple[DaemonProcess, str, int]:
        """A daemon that polls only every 300 s, after its first cycle.

        A cycle that fails is not tried again for 300 s, so a slow Label Studio (a loaded
        machine) gets more attempts rather than failing the one early cycle.
        """
        project_id = make_project(TASKS)
        listen = f"127.0.0.1:{free_port()}"
        daemon, _ = start_daemon([project_id], listen=listen, poll_interval=300, max_attempts=3)
        daemon.wait_for_event("cycle.finished", project_id=project_id)
        return daemon, listen, project_id

    def test_missing_secret_is_401(self, webhook_daemon: tuple[DaemonProcess, str, int]) -> None:
        """A webhook without the X-Aldaemon-Secret header is refused with 401."""
        _, listen, project_id = webhook_daemon
        assert 401 == post_webhook(listen, annotation_created(project_id), secret=None)

    def test_wrong_secret_is_401(self, webhook_daemon: tuple[DaemonProcess, str, int]) -> None:
        """A webhook with a wrong secret is refused with 401."""
        _, listen, project_id = webhook_daemon
        assert 401 == post_webhook(listen, annotation_created(project_id), secret="not-it-123456")

    def test_a_burst_makes_one_early_poll(
        self, webhook_daemon: tuple[DaemonProcess, str, int]
    ) -> None:
        """Twenty webhooks in a row lead to one extra cycle, long before poll_interval.

        The debounce window opens at the first webhook and is not extended by later ones, so
        a burst that lasts longer than a window (a loaded machine) rightly opens one more
        window per WEBHOOK_DEBOUNCE_SECONDS it lasts, each worth at most one cycle. Within
        that allowance (none for a burst shorter than a window) twenty webhooks that are not
        coalesced still show as cycles too many.
        """
        daemon, listen, project_id = webhook_daemon
        burst_started = time.monotonic()
        statuses = {
            post_webhook(listen, annotation_created(project_id), secret=WEBHOOK_SECRET)
            for _ in range(20)
        }
        burst_ended = time.monotonic()
        windows = 1 + int((burst_ended - burst_started) // WEBHOOK_DEBOUNCE_SECONDS)
        daemon.wait_for_event("cycle.finished", project_id=project_id, count=2)
        # Not a synchronisation: with coalesced webhooks no cycle comes after the ones
        # counted below however long we wait. It is how long a cycle too many has to show.
        time.sleep(max(0.0, burst_ended + 3 * WEBHOOK_DEBOUNCE_SECONDS - time.monotonic()))

        cycles = len(cycles_of(daemon, project_id))  # the fixture's first, then the burst's
        assert ({202}, True) == (statuses, 2 <= cycles <= 1 + windows), (
            f"{cycles} cycles after a burst of {burst_ended - burst_started:.2f} s "
            f"({windows} debounce window(s))"
        )

    def test_a_real_annotation_triggers_a_cycle(
        self,
        webhook_daemon: tuple[DaemonProcess, str, int],
        ls_client: LabelStudioClient,
    ) -> None:
        """With the webhook installed, an annotation in Label Studio is polled long before 300 s."""
        daemon, listen, project_id = webhook_daemon
        installed = subprocess.run(
            [
                sys.executable,
                "-m",
                "aldaemon",
                "--config",
                str(daemon.config_path),
                "webhook",
                "install",
                "--project",
                str(project_id),
                "--url",
                f"http://{listen}/webhook?project={project_id}",
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert 0 == installed.returncode, installed.stderr

        ls_client.annotate(ls_client.task_ids(project_id)[0], "pos")
        # Well short of the next scheduled poll (300 s, jitter at most 5 s), so only the
        # webhook can have started this cycle.
        cycle = daemon.wait_for_event(
            "cycle.finished", project_id=project_id, annotations_created=1, timeout=90
        )

        assert 1 == cycle["annotations_created"]


@dataclass
class Outage:
    """A daemon that lived through Label Studio going away and coming back."""

    daemon: DaemonProcess
    project_id: int
    health_before: int
    health_during: int
    health_after: int
    annotations_in_label_studio: int
    labels_in_daemon: float
    running_after: bool


def restart_keeps_signing_key(server: LabelStudioServer) -> bool:
    """Whether restarting `server` keeps the key that signs its personal access tokens.

    Label Studio 1.23 stores a random SECRET_KEY in `<data dir>/.env` at first start, but
    django-environ reads a value that starts with "$" as a reference to another variable:
    such a key (about 1 in 50) is replaced at every restart, and every personal access
    token signed with it stops working. A SECRET_KEY in the environment wins over .env.
    """
    configured = server.environment().get("SECRET_KEY")
    return bool(configured) and not str(configured).startswith("$")


@pytest.fixture(scope="class")
def restartable_label_studio(
    tmp_path_factory: pytest.TempPathFactory, label_studio: LabelStudioServer
) -> Iterator[LabelStudioServer]:
    """The shared server when a restart leaves later tests unharmed, else a private one."""
    if not label_studio.managed:
        pytest.skip("an external Label Studio cannot be stopped by the tests")
    if restart_keeps_signing_key(label_studio):
        yield label_studio
        return
    private = LabelStudioServer(data_dir=tmp_path_factory.mktemp("outage-label-studio"))
    private.start()
    try:
        yield private
    finally:
        private.stop()


@pytest.fixture(scope="class")
def outage(
    tmp_path_factory: pytest.TempPathFactory, restartable_label_studio: LabelStudioServer
) -> Iterator[Outage]:
    """Stop Label Studio for a few polls, start it again, keep annotating."""
    label_studio = restartable_label_studio
    ls_client = LabelStudioClient(label_studio)
    directory = tmp_path_factory.mktemp("outage")
    project_id = ls_client.create_project(title="daemon: Label Studio outage")
    ls_client.import_tasks(project_id, TASKS)
    listen = f"127.0.0.1:{free_port()}"
    settings = DaemonSettings(
        url=label_studio.url,
        token=label_studio.legacy_token,
        state_dir=directory / "state",
        projects=[project_id],
        listen=listen,
        # One attempt: each poll during the outage fails at once (connection refused). The
        # default timeout stays long, so a slow answer outside the outage is no second one.
        max_attempts=1,
    )
    daemon = _launch(directory / "daemon", settings)
    health = f"http://{listen}/healthz"
    try:
        daemon.wait_for_event("cycle.finished", project_id=project_id, outcome="idle")
        health_before = http_get(health)[0]
        label_tasks(ls_client, project_id, first=0, count=1)  # polled before the stop, or not
        try:
            label_studio.stop()
            daemon.wait_for_event("labelstudio.unreachable", timeout=60)
            failed = len(daemon.events("cycle.finished", outcome="failed"))
            daemon.wait_for_event("cycle.finished", outcome="failed", count=failed + 2)
            health_during = http_get(health)[0]
        finally:
            label_studio.start()
        daemon.wait_for_event("labelstudio.recovered", timeout=60)
        label_tasks(ls_client, project_id, first=1, count=1)
        total = sum(
            ls_client.get_task(t)["total_annotations"] for t in ls_client.task_ids(project_id)
        )

        def labels_counted() -> float | None:
            _, text = http_get(f"http://{listen}/metrics")
            counted = sum(
                value
                for key, value in metric_samples(text, "aldaemon_labels").items()
                if dict(key)["project"] == str(project_id)
            )
            return counted if counted == total else None

        labels = daemon.wait_for("every label counted", labels_counted, timeout=60)
        health_after = daemon.wait_for(
            "healthz 200", lambda: 200 if http_get(health)[0] == 200 else None
        )
        yield Outage(
            daemon=daemon,
            project_id=project_id,
            health_before=health_before,
            health_during=health_during,
            health_after=health_after,
            annotations_in_label_studio=total,
            labels_in_daemon=labels,
            running_after=daemon.running,
        )
    finally:
        daemon.kill()
        print(f"--- {daemon.log_path} ---\n{daemon.tail(60)}")


@labelstudio
class TestLabelStudioOutage:
    def test_the_daemon_keeps_running(self, outage: Outage) -> None:
        """The daemon process is still alive after Label Studio came back."""
        assert outage.running_after

    def test_unreachable_is_logged_once(self, outage: Outage) -> None:
        """However many polls failed, labelstudio.unreachable is logged exactly once."""
        assert 1 == len(outage.daemon.events("labelstudio.unreachable"))

    def test_recovered_is_logged_once(self, outage: Outage) -> None:
        """labelstudio.recovered is logged exactly once, when Label Studio answers again."""
        assert 1 == len(outage.daemon.events("labelstudio.recovered"))

    def test_healthz_is_503_during_and_200_around_the_outage(self, outage: Outage) -> None:
        """/healthz answers 200 before, 503 while Label Studio is down, 200 after."""
        assert (200, 503, 200) == (outage.health_before, outage.health_during, outage.health_after)

    def test_no_annotation_is_lost(self, outage: Outage) -> None:
        """Every annotation Label Studio holds is counted by the daemon after the outage."""
        assert (4, 4.0) == (outage.annotations_in_label_studio, outage.labels_in_daemon)


@labelstudio
class TestSdNotify:
    def test_life_cycle_messages_arrive_in_order(
        self, start_daemon: StartDaemon, make_project: MakeProject, tmp_path: Path
    ) -> None:
        """A start, a SIGHUP and a SIGTERM send READY, RELOADING, READY, STOPPING in order."""
        project_id = make_project(TASKS)
        socket_path = tmp_path / "notify"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
            receiver.bind(str(socket_path))
            receiver.settimeout(WAIT_SECONDS)
            daemon, _ = start_daemon([project_id], env={"NOTIFY_SOCKET": str(socket_path)})
            received = [_next_message(receiver, daemon)]
            daemon.wait_for_event("cycle.finished", project_id=project_id)
            daemon.send(signal.SIGHUP)
            daemon.wait_for_event("config.reloaded")
            exit_status = daemon.terminate()
            received += _remaining_messages(receiver)

        life_cycle = [
            key
            for message in received
            for key in message
            if key in {"READY", "RELOADING", "STOPPING"}
        ]
        assert (["READY", "RELOADING", "READY", "STOPPING"], 0) == (life_cycle, exit_status)


def _parse_notify(datagram: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.decode().split("\n"))


def _next_message(receiver: socket.socket, daemon: DaemonProcess) -> dict[str, str]:
    """The next sd_notify datagram; fails with the daemon's log when none comes in time."""
    try:
        return _parse_notify(receiver.recv(4096))
    except TimeoutError:
        raise AssertionError(
            f"no sd_notify message\n--- daemon log tail ---\n{daemon.tail()}"
        ) from None


def _remaining_messages(receiver: socket.socket) -> list[dict[str, str]]:
    """Every datagram still queued, until the socket stays silent for a second."""
    receiver.settimeout(1)
    messages: list[dict[str, str]] = []
    while True:
        try:
            messages.append(_parse_notify(receiver.recv(4096)))
        except TimeoutError:
            return messages


@dataclass
class DebugRun:
    """The whole debug-level log of a daemon that trained, got webhooks and a SIGHUP."""

    text: str
    token: str
    webhook_secret: str


@pytest.fixture(scope="class")
def debug_run(
    tmp_path_factory: pytest.TempPathFactory,
    label_studio: LabelStudioServer,
    ls_client: LabelStudioClient,
) -> Iterator[DebugRun]:
    """A debug-level daemon with a personal access token: train, webhooks, reload, stop."""
    directory = tmp_path_factory.mktemp("debug-run")
    project_id = ls_client.create_project(title="daemon: secrets at debug level")
    ls_client.import_tasks(project_id, TASKS)
    listen = f"127.0.0.1:{free_port()}"
    settings = DaemonSettings(
        url=label_studio.url,
        token=label_studio.pat,
        state_dir=directory / "state",
        projects=[project_id],
        listen=listen,
    )
    daemon = _launch(directory / "daemon", settings, log_level="debug")
    try:
        daemon.wait_for_event("cycle.finished", project_id=project_id)
        label_tasks(ls_client, project_id, first=0, count=2)
        daemon.wait_for_event("version.activated", project_id=project_id, timeout=60)
        post_webhook(listen, annotation_created(project_id), secret=WEBHOOK_SECRET)
        post_webhook(listen, annotation_created(project_id), secret="wrong-secret-0000")
        daemon.send(signal.SIGHUP)
        daemon.wait_for_event("config.reloaded")
        assert 0 == daemon.terminate()
        text = daemon.log_path.read_text()
        assert any(r.get("level") == "debug" for r in daemon.lines()), "no debug lines"
        yield DebugRun(text=text, token=label_studio.pat, webhook_secret=WEBHOOK_SECRET)
    finally:
        daemon.kill()
        print(f"--- {daemon.log_path} ---\n{daemon.tail(60)}")


@labelstudio
class TestSecretsStayOutOfLogs:
    def test_the_token_is_in_no_log_line(self, debug_run: DebugRun) -> None:
        """The Label Studio token appears nowhere in a debug-level log."""
        assert debug_run.token not in debug_run.text

    def test_the_webhook_secret_is_in_no_log_line(self, debug_run: DebugRun) -> None:
        """The webhook secret appears nowhere in a debug-level log."""
        assert debug_run.webhook_secret not in debug_run.text
