"""The chaos harness: a seeded kill plan, an annotator thread, the daemon process under
SIGKILL, and the snapshot of Label Studio and the store the invariants are checked on.

`run_chaos` drives one whole run; tests/chaos/test_chaos.py holds the invariants tests
(and the module docstring there tells the run's story).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aldaemon.store import Store, VersionRow
from aldaemon.sync.versions import label_counts, training_examples
from tests.helpers import make_tasks, write_config
from tests.lsserver import LabelStudioClient, LabelStudioServer, LabelStudioServerError

PROJECT_TASKS = 250
FIRST_LABELS = 8
FOREIGN_VERSION = "foreign-v1"
FOREIGN_PREDICTIONS = 40
OWN_PREFIX = "aldaemon"
KEEP_VERSIONS = 2
QUEUE_VIEW_TITLE = "Active learning queue"  # the default [projects.view] title
QUIESCENCE_SECONDS = 180.0
POLL_SECONDS = 0.05
ORPHAN_GRACE_SECONDS = 20.0  # for the last orphans to end; they normally end at once


# --- settings and the kill plan (pure) -------------------------------------------------


@dataclass(frozen=True)
class ChaosSettings:
    kills: int
    seed: int


def chaos_settings(env: Mapping[str, str], *, random_seed: int) -> ChaosSettings:
    """Kills and seed from the environment; `random_seed` when no seed is given."""
    kills_text = env.get("ALDAEMON_CHAOS_KILLS", "").strip() or "30"
    seed_text = env.get("ALDAEMON_CHAOS_SEED", "").strip()
    try:
        kills = int(kills_text)
        seed = int(seed_text) if seed_text else random_seed
    except ValueError:
        raise ValueError(
            "ALDAEMON_CHAOS_KILLS and ALDAEMON_CHAOS_SEED must be integers, got "
            f"{kills_text!r} and {seed_text!r}"
        ) from None
    if kills < 1:
        raise ValueError(f"ALDAEMON_CHAOS_KILLS must be at least 1, got {kills}")
    return ChaosSettings(kills=kills, seed=seed)


@dataclass(frozen=True)
class Trigger:
    """A moment a kill waits for: `name` is "spawn" (the process was started: start-up and
    the first poll), "uploading" (the store shows a version being uploaded), "mid-upload"
    (the store shows this incarnation sent part of a version's predictions, not all), or a
    log event ("daemon.started" means anywhere in the loop). The kill follows after a
    uniform delay of at most `longest_delay`, or after `longest_wait` if the moment never
    comes."""

    name: str
    weight: float
    longest_delay: float
    longest_wait: float


# A third of the kills go for uploads, the most delicate step: half of them anywhere in
# one (the first batch in flight, a batch edge, the final count), half at once when part
# of it is done. An upload of ~9 batches can take well under a second, so only a kill
# that waits for that moment itself lands there whatever the machine's speed.
# "version.activated" is followed by pruning, "train.started" by the worker's fit,
# "reconcile.finished" by the decision. The waits cover a whole cycle (start-up, training
# and upload take ~12 s).
TRIGGERS = (
    Trigger("spawn", weight=0.06, longest_delay=2.5, longest_wait=0.0),
    Trigger("daemon.started", weight=0.30, longest_delay=6.0, longest_wait=10.0),
    Trigger("uploading", weight=0.16, longest_delay=1.0, longest_wait=16.0),
    Trigger("mid-upload", weight=0.16, longest_delay=0.0, longest_wait=20.0),
    Trigger("train.started", weight=0.10, longest_delay=1.5, longest_wait=10.0),
    Trigger("version.activated", weight=0.14, longest_delay=1.5, longest_wait=20.0),
    Trigger("reconcile.finished", weight=0.08, longest_delay=0.3, longest_wait=10.0),
)


MID_UPLOAD = next(t for t in TRIGGERS if t.name == "mid-upload")
MIN_MID_UPLOAD_KILLS = 3  # in every plan (all of a shorter one), however the draws fall
MID_UPLOAD_RETRIES = 10  # at most this many extra kills per run (each waits <= 20 s)
MID_UPLOAD_POLL_SECONDS = 0.01  # a few polls in the shortest window between batches


@dataclass(frozen=True)
class Kill:
    """One SIGKILL: `delay` seconds after `trigger`; `whole_group` or the main process only;
    `retry` when it repeats a mid-upload kill that landed elsewhere."""

    trigger: Trigger
    delay: float
    whole_group: bool
    retry: bool = False

    def describe(self) -> str:
        target = "group" if self.whole_group else "main pid"
        again = ", retry" if self.retry else ""
        return f"{self.trigger.name}+{self.delay:.2f}s ({target}{again})"


def plan_kills(rng: random.Random, count: int) -> list[Kill]:
    """`count` kills drawn from `rng`: the same seed gives the same plan.

    At least MIN_MID_UPLOAD_KILLS of them (all, when fewer are planned) wait for a partly
    done upload: when the draws give fewer, kills the same `rng` picks are turned into
    such kills.
    """
    plan = []
    for _ in range(count):
        trigger = rng.choices(TRIGGERS, [t.weight for t in TRIGGERS])[0]
        plan.append(
            Kill(
                trigger=trigger,
                delay=rng.uniform(0.0, trigger.longest_delay),
                whole_group=rng.random() < 0.8,
            )
        )
    others = [i for i, kill in enumerate(plan) if kill.trigger != MID_UPLOAD]
    missing = min(MIN_MID_UPLOAD_KILLS, count) - (count - len(others))
    for i in sorted(rng.sample(others, max(missing, 0))):
        plan[i] = Kill(trigger=MID_UPLOAD, delay=0.0, whole_group=plan[i].whole_group)
    return plan


def retry_of(kill: Kill, landing: str) -> Kill | None:
    """The kill to make next when a mid-upload kill landed elsewhere (the upload finished
    between the look at the store and the signal, or none came in time), else None."""
    if kill.trigger != MID_UPLOAD or landing == "mid-upload":
        return None
    return Kill(trigger=MID_UPLOAD, delay=0.0, whole_group=kill.whole_group, retry=True)


def upload_moved_on(version: VersionRow | None, counts_seen: dict[str, int]) -> bool:
    """True when `version` is being uploaded, part of it is done, and its uploaded count has
    grown since this incarnation first saw it: the incarnation is sending it.

    `counts_seen` keeps each version's count at its first sight (0 before the upload
    starts), so a version the last incarnation left half done counts only once this one
    moved it on.
    """
    if version is None:
        return False
    uploading = version.state == "uploading"
    done = (version.uploaded_count or 0) if uploading else 0
    first = counts_seen.setdefault(version.name, done)
    return uploading and first < done < (version.n_predictions or 0)


# --- what Label Studio says the labels are (pure) ----------------------------------------


def _instant(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def annotation_label(annotation: Mapping[str, Any]) -> str | None:
    """The chosen label of a non-skipped annotation; None for a skip or an empty result."""
    if annotation.get("was_cancelled"):
        return None
    for region in annotation.get("result") or []:
        choices = (region.get("value") or {}).get("choices") or []
        if choices:
            return str(choices[0])
    return None


def labels_in_label_studio(tasks: Sequence[Mapping[str, Any]]) -> dict[int, str]:
    """task id -> the label of its newest (updated_at, then id) labelled annotation."""
    labels: dict[int, str] = {}
    for task in tasks:
        labelled = [a for a in task.get("annotations") or [] if annotation_label(a) is not None]
        if labelled:
            newest = max(labelled, key=lambda a: (_instant(a["updated_at"]), a["id"]))
            label = annotation_label(newest)
            assert label is not None
            labels[int(task["id"])] = label
    return labels


def duplicated_predictions(predictions: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How many predictions each (task, model_version) holds, keyed "task/version", when
    that is more than one."""
    counts = Counter((p["task"], p["model_version"]) for p in predictions)
    return {f"{task}/{version}": n for (task, version), n in counts.items() if n > 1}


def own_version(name: str) -> bool:
    return name.startswith(f"{OWN_PREFIX}-v")


# --- the annotator -----------------------------------------------------------------------


class Annotator(threading.Thread):
    """A busy annotator: labels, second opinions, relabels, skips and deletions.

    Its choices come from its own seeded RNG. A refused request is retried a few times,
    as a person would click again; one that keeps failing stops the thread and is
    reported by a test.
    """

    ACTIONS = (
        ("label", 0.52),
        ("second", 0.05),
        ("relabel", 0.13),
        ("skip", 0.08),
        ("delete", 0.22),
    )

    def __init__(
        self,
        client: LabelStudioClient,
        *,
        task_ids: Sequence[int],
        truth: Mapping[int, str],
        rng: random.Random,
        labelled: Mapping[int, tuple[int, str]],
    ) -> None:
        super().__init__(name="chaos-annotator", daemon=True)
        self.client = client
        self.task_ids = list(task_ids)
        self.truth = dict(truth)
        self.rng = rng
        self.stop_requested = threading.Event()
        # annotation id -> (task id, label or None for a skip)
        self.live: dict[int, tuple[int, str | None]] = {a: tl for a, tl in labelled.items()}
        self.done: Counter[str] = Counter()
        self.errors: list[str] = []

    def run(self) -> None:
        names = [name for name, _ in self.ACTIONS]
        weights = [weight for _, weight in self.ACTIONS]
        while not self.stop_requested.wait(self.rng.uniform(0.3, 0.9)):
            action = self.rng.choices(names, weights)[0]
            try:
                if self._act(action):
                    self.done[action] += 1
            except LabelStudioServerError as exc:
                self.errors.append(f"{action}: {exc}")
                return

    def _retrying(self, method: str, path: str, body: object = None) -> Any:
        for attempt in range(4):
            try:
                return self.client.call(method, path, body)
            except LabelStudioServerError:
                if attempt == 3:
                    raise
                time.sleep(0.5 * (attempt + 1))
        return None

    def _result(self, label: str) -> list[dict[str, object]]:
        return [
            {
                "from_name": "sentiment",
                "to_name": "text",
                "type": "choices",
                "value": {"choices": [label]},
            }
        ]

    def _act(self, action: str) -> bool:
        busy = {task for task, _ in self.live.values()}
        free = [task for task in self.task_ids if task not in busy]
        labelled = [(ann, task, label) for ann, (task, label) in self.live.items() if label]
        if action in ("label", "skip") and free:
            task = self.rng.choice(free)
            cancelled = action == "skip"
            label = None if cancelled else self._noisy(task)
            answer = self._retrying(
                "POST",
                f"/api/tasks/{task}/annotations/",
                {
                    "result": [] if label is None else self._result(label),
                    "was_cancelled": cancelled,
                },
            )
            self.live[int(answer["id"])] = (task, label)
            return True
        if action == "second" and labelled:
            _, task, _ = self.rng.choice(labelled)
            label = self._noisy(task)
            answer = self._retrying(
                "POST",
                f"/api/tasks/{task}/annotations/",
                {"result": self._result(label), "was_cancelled": False},
            )
            self.live[int(answer["id"])] = (task, label)
            return True
        if action == "relabel" and labelled:
            annotation, task, label = self.rng.choice(labelled)
            other = "neg" if label == "pos" else "pos"
            self._retrying(
                "PATCH", f"/api/annotations/{annotation}/", {"result": self._result(other)}
            )
            self.live[annotation] = (task, other)
            return True
        if action == "delete" and self.live:
            annotation = self.rng.choice(sorted(self.live))
            self._retrying("DELETE", f"/api/annotations/{annotation}/")
            del self.live[annotation]
            return True
        return False

    def _noisy(self, task: int) -> str:
        """Mostly the true label, sometimes the other: real annotators disagree."""
        label = self.truth[task]
        if self.rng.random() < 0.1:
            return "neg" if label == "pos" else "pos"
        return label


# --- the daemon's incarnations ------------------------------------------------------------


class LogTail:
    """Reads a growing log file; yields the JSON events of complete new lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self._partial = b""

    def new_events(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        events = []
        for line in lines:
            if line.startswith(b"{"):
                with contextlib.suppress(ValueError):
                    events.append(json.loads(line))
        return events


@dataclass
class Incarnation:
    """One `aldaemon run` process and its own output file."""

    number: int
    process: subprocess.Popen[bytes]
    log_path: Path
    tail: LogTail
    killed_at_offset: int | None = None  # output written before the kill ends here
    kill_landed: str = ""
    exited_by_itself: int | None = None  # an exit status when it died before the kill
    orphans: list[tuple[int, str]] = field(default_factory=list)  # (pid, start time)
    seen: set[str] = field(default_factory=set)

    def poll_events(self) -> list[dict[str, Any]]:
        """New events since the last call; their names are remembered in `seen`."""
        events = self.tail.new_events()
        self.seen.update(str(event.get("event")) for event in events)
        return events

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def output_before_kill(self) -> str:
        text = self.log_path.read_bytes()
        end = len(text) if self.killed_at_offset is None else self.killed_at_offset
        return text[:end].decode(errors="replace")


class DaemonRunner:
    """Starts, kills and stops the daemon; every incarnation keeps its own output file."""

    def __init__(self, *, config_path: Path, log_dir: Path) -> None:
        self.config_path = config_path
        self.log_dir = log_dir
        self.incarnations: list[Incarnation] = []

    @property
    def current(self) -> Incarnation:
        return self.incarnations[-1]

    @property
    def ever_started(self) -> bool:
        """Some incarnation logged daemon.started: the store exists and is migrated."""
        return any("daemon.started" in i.seen for i in self.incarnations)

    def start(self) -> Incarnation:
        number = len(self.incarnations) + 1
        log_path = self.log_dir / f"run-{number:03d}.log"
        with log_path.open("wb") as output:
            # Its own session: a SIGKILL to the group takes the model worker along, and
            # never reaches pytest.
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "aldaemon",
                    "--config",
                    str(self.config_path),
                    "--log-format",
                    "json",
                    "run",
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )
        incarnation = Incarnation(
            number=number, process=process, log_path=log_path, tail=LogTail(log_path)
        )
        self.incarnations.append(incarnation)
        return incarnation

    def kill(self, *, whole_group: bool) -> None:
        """SIGKILL the current incarnation (its group, or its main process only).

        The process is not reaped before the signal, so its pid and group id cannot have
        been reused by anyone else: only our own processes are ever signalled.
        """
        incarnation = self.current
        incarnation.poll_events()
        incarnation.exited_by_itself = incarnation.process.poll()
        if incarnation.exited_by_itself is None:
            pid = incarnation.process.pid
            if whole_group:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
                # The unreaped main process still holds the group: its members are ours.
                incarnation.orphans = [m for m in process_group_members(pid) if m[0] != pid]
            incarnation.process.wait(timeout=30)
        incarnation.killed_at_offset = incarnation.log_path.stat().st_size

    def terminate(self, *, timeout: float) -> int | None:
        """SIGTERM the main process, as systemd does first; None if it did not exit."""
        process = self.current.process
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def cleanup(self) -> list[int]:
        """SIGKILL what is left of ours; returns the orphans of main-only kills still alive.

        A running incarnation is killed with its group (it is not reaped, so the group is
        ours). Orphans should have ended with the daemon; one still alive after
        ORPHAN_GRACE_SECONDS is returned (a failure) and killed, so that a failed run
        leaves nothing behind, but only if its pid still has the start time it had.
        """
        current = self.incarnations[-1] if self.incarnations else None
        if current is not None and current.process.poll() is None:
            os.killpg(current.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                current.process.wait(timeout=10)
        orphans = [orphan for incarnation in self.incarnations for orphan in incarnation.orphans]
        deadline = time.monotonic() + ORPHAN_GRACE_SECONDS
        while any(process_alive(*orphan) for orphan in orphans) and time.monotonic() < deadline:
            time.sleep(0.2)
        lingering = [pid for pid, started in orphans if process_alive(pid, started)]
        for pid in lingering:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return lingering


def _proc_stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (Linux), or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def process_alive(pid: int, started: str) -> bool:
    """Still running with that start time; a zombie waiting for its reaper has ended."""
    fields = _proc_stat_fields(pid)
    return fields is not None and fields[19] == started and fields[0] != "Z"  # starttime, state


def process_group_members(pgid: int) -> list[tuple[int, str]]:
    """(pid, start time) of every process in group `pgid`, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _proc_stat_fields(int(entry.name))
        if fields and int(fields[2]) == pgid:  # field 5: pgrp
            members.append((int(entry.name), fields[19]))
    return members


class StorePeek:
    """A read-only look at the daemon's store while it runs (WAL lets it), opened lazily."""

    def __init__(self, state_dir: Path, project_id: int) -> None:
        self.state_dir = state_dir
        self.project_id = project_id
        self._store: Store | None = None

    def unfinished(self) -> VersionRow | None:
        if self._store is None:
            self._store = Store.open(self.state_dir, lock=False)
        return self._store.unfinished_version(self.project_id)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


# --- the run ---------------------------------------------------------------------------------


@dataclass
class ChaosOutcome:
    """Everything the invariant tests look at, gathered once after the run."""

    seed: int
    project_id: int
    token: str
    log_dir: Path
    kills: list[Kill]  # as made: the plan, with the retries of missed mid-upload kills
    incarnations: list[Incarnation]
    kill_landings: Counter[str]
    annotator_actions: Counter[str]
    annotator_errors: list[str]
    quiescent: bool
    exit_code: int | None
    ls_labels: dict[int, str]
    ls_unlabelled: set[int]
    ls_version_counts: dict[str, int]
    ls_predictions: list[dict[str, Any]]
    ls_active_version: str | None
    ls_sampling: str | None
    ls_views: list[dict[str, Any]]
    local_view_id: int | None
    local_labels: dict[int, str]
    local_label_counts: dict[str, int]
    local_unlabelled: set[int]
    local_versions: list[VersionRow]
    timings: dict[str, float] = field(default_factory=dict)
    lingering_orphans: list[int] = field(default_factory=list)

    def tag(self) -> str:
        """Names the seed in every assertion message, so a failure can be replayed."""
        return (
            f"[chaos seed {self.seed}: ALDAEMON_CHAOS_SEED={self.seed} to replay; "
            f"daemon output and kills.txt in {self.log_dir}]"
        )


SETTINGS = chaos_settings(os.environ, random_seed=secrets.randbelow(2**31))


def _write_chaos_config(tmp_path: Path, server: LabelStudioServer, project_id: int) -> Path:
    config = write_config(
        tmp_path,
        server,
        project_id,
        extra="poll_interval = 1\nresync_interval = 10\nshutdown_grace = 120",
        retrain="min_new_annotations = 3\nmin_interval = 0\nmin_per_class = 2",
        predictions=(
            f"batch_size = 25\nkeep_versions = {KEEP_VERSIONS}\nprune_per_cycle = 2\n"
            f'version_prefix = "{OWN_PREFIX}"'
        ),
    )
    assert 25 == config.projects[0].predictions.batch_size
    return tmp_path / "config.toml"


def _import_foreign_version(
    client: LabelStudioClient, project_id: int, task_ids: Sequence[int]
) -> None:
    body = [
        {
            "task": task_id,
            "model_version": FOREIGN_VERSION,
            "score": 0.5,
            "result": [
                {
                    "from_name": "sentiment",
                    "to_name": "text",
                    "type": "choices",
                    "value": {"choices": ["pos"]},
                }
            ],
        }
        for task_id in task_ids[:FOREIGN_PREDICTIONS]
    ]
    client.call("POST", f"/api/projects/{project_id}/import/predictions", body)


def _wait_for_trigger(kill: Kill, *, runner: DaemonRunner, peek: StorePeek) -> bool:
    """Wait until the kill's trigger is seen (True) or its longest wait passes (False)."""
    incarnation = runner.current
    trigger = kill.trigger
    deadline = time.monotonic() + trigger.longest_wait
    counts_seen: dict[str, int] = {}
    while time.monotonic() < deadline:
        if incarnation.process.poll() is not None:
            return False  # it died by itself; the kill records that
        names = {str(event.get("event")) for event in incarnation.poll_events()}
        if trigger.name in names:
            return True
        if trigger.name == "uploading" and _uploading_now(incarnation, peek):
            return True
        if trigger == MID_UPLOAD and incarnation.seen & UPLOAD_UNDER_WAY:
            if upload_moved_on(peek.unfinished(), counts_seen):
                return True
            time.sleep(MID_UPLOAD_POLL_SECONDS)
            continue
        time.sleep(POLL_SECONDS)
    return trigger.name == "spawn"


# Events after which an "uploading" version in the store is this incarnation's work, not
# one the last incarnation left behind and this one has not touched yet.
UPLOAD_UNDER_WAY = frozenset(
    {"version.resumed", "upload.resumed", "upload.resumed_by_listing", "train.finished"}
)


def _uploading_now(incarnation: Incarnation, peek: StorePeek) -> bool:
    if not incarnation.seen & UPLOAD_UNDER_WAY:
        return False
    version = peek.unfinished()
    return version is not None and version.state == "uploading"


def _landing(incarnation: Incarnation, peek: StorePeek) -> str:
    """Where a kill landed, as the store tells it: the unfinished step, or between steps."""
    version = peek.unfinished()
    if version is None:
        return "between versions"
    if version.state != "uploading":
        return version.state
    if not incarnation.seen & UPLOAD_UNDER_WAY:
        return "uploading, not yet resumed"
    total = version.n_predictions or 0
    done = version.uploaded_count or 0
    return "mid-upload" if 0 < done < total else "uploading, at a batch edge"


def _wait_until_quiescent(
    *, runner: DaemonRunner, peek: StorePeek, client: LabelStudioClient, project_id: int
) -> bool:
    """Two idle cycles in a row that read nothing, nothing unfinished, pruning caught up."""
    deadline = time.monotonic() + QUIESCENCE_SECONDS
    idle_in_a_row = 0
    incarnation = runner.current
    while time.monotonic() < deadline:
        if incarnation.process.poll() is not None:
            return False
        for event in incarnation.poll_events():
            if event.get("event") != "cycle.finished":
                continue
            changed = any(
                event.get(key)
                for key in ("annotations_created", "annotations_updated", "annotations_deleted")
            )
            idle = event.get("outcome") == "idle" and not changed
            idle_in_a_row = idle_in_a_row + 1 if idle else 0
        if idle_in_a_row >= 2 and peek.unfinished() is None:
            counts = client.call("GET", f"/api/projects/{project_id}/model-versions/")
            if sum(1 for name in counts if own_version(name)) <= KEEP_VERSIONS:
                return True
        time.sleep(0.2)
    return False


def _snapshot_label_studio(client: LabelStudioClient, project_id: int) -> dict[str, Any]:
    answer = client.call(
        "GET", f"/api/tasks/?project={project_id}&fields=all&page_size=100000&page=1"
    )
    tasks = answer["tasks"]
    labels = labels_in_label_studio(tasks)
    return {
        "labels": labels,
        "unlabelled": {int(t["id"]) for t in tasks} - set(labels),
        "counts": client.call("GET", f"/api/projects/{project_id}/model-versions/"),
        "predictions": client.predictions(project_id),
        "project": client.get_project(project_id),
        "views": client.call("GET", f"/api/dm/views/?project={project_id}"),
    }


def run_chaos(
    *,
    settings: ChaosSettings,
    tmp_path: Path,
    server: LabelStudioServer,
    client: LabelStudioClient,
    project_id: int,
) -> ChaosOutcome:
    rng = random.Random(settings.seed)
    plan = plan_kills(rng, settings.kills)
    to_make = list(reversed(plan))  # popped from the end; a retry is pushed back there
    made: list[Kill] = []
    task_ids = client.task_ids(project_id)
    _, truth_list = make_tasks(PROJECT_TASKS, seed=settings.seed)
    truth = dict(zip(task_ids, truth_list, strict=True))
    _import_foreign_version(client, project_id, task_ids)
    first = {
        client.annotate(task_id, truth[task_id]): (task_id, truth[task_id])
        for task_id in task_ids[:FIRST_LABELS]
    }
    config_path = _write_chaos_config(tmp_path, server, project_id)
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    runner = DaemonRunner(config_path=config_path, log_dir=log_dir)
    peek = StorePeek(tmp_path / "state", project_id)
    annotator = Annotator(
        client,
        task_ids=task_ids,
        truth=truth,
        rng=random.Random(settings.seed + 1),
        labelled=first,
    )
    landings: Counter[str] = Counter()
    timings: dict[str, float] = {}
    started = time.monotonic()
    try:
        runner.start()
        annotator.start()
        while to_make:
            kill = to_make.pop()
            made.append(kill)
            seen = _wait_for_trigger(kill, runner=runner, peek=peek)
            time.sleep(kill.delay)
            runner.kill(whole_group=kill.whole_group)
            landing = _landing(runner.current, peek) if runner.ever_started else "first start-up"
            missed = "" if seen else f" (not seen in {kill.trigger.longest_wait:g} s)"
            runner.current.kill_landed = f"{kill.describe()}{missed} -> {landing}"
            retry = retry_of(kill, landing)
            if retry is not None and sum(k.retry for k in made) < MID_UPLOAD_RETRIES:
                to_make.append(retry)
                runner.current.kill_landed += " (tried again)"
            with (log_dir / "kills.txt").open("a") as kills_file:
                kills_file.write(f"run {runner.current.number}: {runner.current.kill_landed}\n")
            landings[landing] += 1
            runner.start()
        timings["kills_s"] = time.monotonic() - started
        annotator.stop_requested.set()
        annotator.join(timeout=30)
        runner.current.poll_events()  # cycles that ended before the annotator stopped
        quiet_from = time.monotonic()
        quiescent = _wait_until_quiescent(
            runner=runner, peek=peek, client=client, project_id=project_id
        )
        timings["quiescence_s"] = time.monotonic() - quiet_from
        exit_code = runner.terminate(timeout=150)
        peek.close()
        remote = _snapshot_label_studio(client, project_id)
        with Store.open(tmp_path / "state", lock=False) as store:
            local_examples = training_examples(store.annotated_tasks(project_id))
            local_counts = label_counts(store.annotated_tasks(project_id))
            local_unlabelled = {task_id for task_id, _ in store.unlabeled_tasks(project_id)}
            local_versions = store.list_versions(project_id)
            local_view_id = store.get_meta(project_id).view_id
    finally:
        annotator.stop_requested.set()
        peek.close()
        lingering_orphans = runner.cleanup()
    return ChaosOutcome(
        seed=settings.seed,
        project_id=project_id,
        token=server.legacy_token,
        log_dir=log_dir,
        kills=made,
        incarnations=runner.incarnations,
        kill_landings=landings,
        annotator_actions=annotator.done,
        annotator_errors=annotator.errors,
        quiescent=quiescent,
        exit_code=exit_code,
        ls_labels=remote["labels"],
        ls_unlabelled=remote["unlabelled"],
        ls_version_counts={str(k): int(v) for k, v in remote["counts"].items()},
        ls_predictions=remote["predictions"],
        ls_active_version=remote["project"].get("model_version") or None,
        ls_sampling=remote["project"].get("sampling"),
        ls_views=remote["views"],
        local_view_id=local_view_id,
        local_labels={e.task_id: e.label for e in local_examples},
        local_label_counts=local_counts,
        local_unlabelled=local_unlabelled,
        local_versions=local_versions,
        timings=timings,
        lingering_orphans=lingering_orphans,
    )
