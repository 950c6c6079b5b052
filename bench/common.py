"""What every benchmark shares: a private Label Studio, projects of real reviews, results.

Projects are filled with modeldata's fine-food reviews (the demo's data: 4,000 training +
1,000 test reviews), repeated as often as a size needs, so that text lengths, vocabulary
and therefore training, scoring and payload sizes are those of real reviews and not of
a toy corpus. Task data carries `review_id` (the row in `corpus()`), never the label: the
simulated annotators look the true label up by that id, as the demo's do.

Setup goes through `tests.lsserver` (plain urllib), not through the gateway being
measured; only what the daemon itself does is timed through the daemon's own code.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import shlex
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import sklearn

from aldaemon.config import Config, load_config
from aldaemon.labelstudio.labeling_config import parse_labeling_config
from aldaemon.records import LabelingSchema
from aldaemon.service.logs import configure_logging
from demo.data import LABEL_CONFIG, Review, load_reviews
from tests.lsserver import (
    ExternalLabelStudioServer,
    LabelStudioClient,
    LabelStudioServer,
    http_json,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
SCHEMA: LabelingSchema = parse_labeling_config(LABEL_CONFIG)
IMPORT_CHUNK = (
    2000  # tasks per import request: big enough to be quick, small enough to time out never
)
SLOW_CALL_TIMEOUT = 1800.0  # seconds; deleting 50k predictions takes minutes on SQLite


# ---- data ------------------------------------------------------------------------------


def corpus() -> list[Review]:
    """The 5,000 fine-food reviews (training split first, then test), in a fixed order."""
    reviews = load_reviews()
    return [*reviews.train, *reviews.test]


@dataclass(frozen=True)
class BenchTask:
    """One task to import: its text, the id annotators look the label up by, its label."""

    review_id: int
    text: str
    label: str


def repeated_tasks(reviews: Sequence[Review], count: int) -> list[BenchTask]:
    """`count` tasks cycling through `reviews`; review_id is the task's position (unique)."""
    return [
        BenchTask(
            review_id=i, text=reviews[i % len(reviews)].text, label=reviews[i % len(reviews)].label
        )
        for i in range(count)
    ]


# ---- Label Studio ------------------------------------------------------------------------


@contextlib.contextmanager
def label_studio(work_dir: Path, *, startup_timeout: float = 300.0) -> Iterator[LabelStudioServer]:
    """A private Label Studio on a free port with a fresh data dir under `work_dir`."""
    server = LabelStudioServer(data_dir=work_dir / "label-studio", startup_timeout=startup_timeout)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def server_for(work_dir: Path, *, external: bool) -> Iterator[LabelStudioServer]:
    """A private Label Studio, or (`external`) the one ALDAEMON_TEST_LS_URL/_TOKEN/_PAT name."""
    if not external:
        with label_studio(work_dir) as server:
            yield server
        return
    yield ExternalLabelStudioServer(
        url=os.environ["ALDAEMON_TEST_LS_URL"],
        legacy_token=os.environ["ALDAEMON_TEST_LS_TOKEN"],
        pat=os.environ["ALDAEMON_TEST_LS_PAT"],
    )


@contextlib.contextmanager
def work_directory(name: str, *, keep: bool) -> Iterator[Path]:
    """A scratch directory for one benchmark run; removed afterwards unless `keep`."""
    path = Path(tempfile.mkdtemp(prefix=f"aldaemon-bench-{name}-"))
    try:
        yield path
    finally:
        if keep:
            print(f"kept work directory {path}")
        else:
            subprocess.run(["rm", "-rf", str(path)], check=False)


def create_project(
    client: LabelStudioClient, *, title: str, tasks: Sequence[BenchTask]
) -> tuple[int, dict[int, BenchTask]]:
    """Create a project holding `tasks`; return its id and task id -> BenchTask."""
    project_id, listed = create_project_of(
        client,
        title=title,
        label_config=LABEL_CONFIG,
        data=[{"text": t.text, "review_id": t.review_id} for t in tasks],
    )
    by_review = {task.review_id: task for task in tasks}
    return project_id, {task_id: by_review[int(d["review_id"])] for task_id, d in listed.items()}


def create_project_of(
    client: LabelStudioClient,
    *,
    title: str,
    label_config: str,
    data: Sequence[Mapping[str, object]],
) -> tuple[int, dict[int, dict[str, Any]]]:
    """Create a project with one task per `data` dict; return its id and task id -> data."""
    project_id = client.create_project(title=title, label_config=label_config)
    for start in range(0, len(data), IMPORT_CHUNK):
        http_json(
            "POST",
            f"{client.url}/api/projects/{project_id}/import",
            token=_legacy_token(client),
            body=[{"data": dict(d)} for d in data[start : start + IMPORT_CHUNK]],
            timeout=SLOW_CALL_TIMEOUT,
        )
    listed = http_json(
        "GET",
        f"{client.url}/api/tasks/?project={project_id}&fields=all&include=id,data"
        f"&page_size={len(data) + 10}&page=1",
        token=_legacy_token(client),
        timeout=SLOW_CALL_TIMEOUT,
    )["tasks"]
    if len(listed) != len(data):
        raise RuntimeError(f"project {project_id} holds {len(listed)} of {len(data)} tasks")
    return project_id, {int(t["id"]): dict(t["data"]) for t in listed}


def annotate(client: LabelStudioClient, task_id: int, label: str) -> int:
    """One annotation with the true label, through the plain HTTP helper."""
    return client.annotate(task_id, label, from_name=SCHEMA.from_name, to_name=SCHEMA.to_name)


def _legacy_token(client: LabelStudioClient) -> str:
    token: str = client._token  # the setup client's own token; never printed
    return token


def daemon_config(
    *,
    directory: Path,
    server: LabelStudioServer,
    project_id: int,
    retrain: Mapping[str, object],
    predictions: Mapping[str, object] | None = None,
    ml_backend: Mapping[str, object] | None = None,
    sections: Mapping[str, Mapping[str, object]] | None = None,
) -> Config:
    """Write a daemon config for one project (no listener) and load it the daemon's way.

    With `ml_backend` (its `[projects.ml_backend]` keys) the project is served by the ML
    backend connected to it (`model = "ml-backend"`). `sections` adds more project tables:
    {"labels": {"policy": "majority"}} writes `[projects.labels]` with `policy = "majority"`.
    """
    directory.mkdir(parents=True, exist_ok=True)
    token_file = directory / "token"
    token_file.write_text(server.legacy_token)
    token_file.chmod(0o600)
    lines = [
        "[labelstudio]",
        f'url = "{server.url}"',
        f'token_file = "{token_file}"',
        "timeout = 120",
        "",
        "[state]",
        f'dir = "{directory / "state"}"',
        "",
        "[daemon]",
        'listen = ""',
        "",
        "[[projects]]",
        f"id = {project_id}",
        *(['model = "ml-backend"'] if ml_backend is not None else []),
        *(["[projects.ml_backend]"] if ml_backend is not None else []),
        *(f"{key} = {_toml(value)}" for key, value in (ml_backend or {}).items()),
        "[projects.retrain]",
        *(f"{key} = {_toml(value)}" for key, value in retrain.items()),
        "[projects.predictions]",
        *(f"{key} = {_toml(value)}" for key, value in (predictions or {}).items()),
    ]
    for section, values in (sections or {}).items():
        lines += [f"[projects.{section}]", *(f"{k} = {_toml(v)}" for k, v in values.items())]
    path = directory / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return load_config(path, env={})


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def quiet_daemon_logs(path: Path) -> TextIO:
    """Send the daemon's structured log lines (info and up) to a file, not the console."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = path.open("a", encoding="utf-8")
    configure_logging(log_format="json", level="info", stream=stream)
    return stream


# ---- measuring ---------------------------------------------------------------------------


class CallTimer:
    """Times every call of chosen async methods on one object (instrumentation only).

    The wrapped method still makes its real request; only the wall time around it is
    recorded, so steps the cycle reports as one (activate = project PATCH + view) can be
    told apart.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = defaultdict(list)

    def wrap(self, target: object, *names: str) -> None:
        for name in names:
            original = getattr(target, name)
            setattr(target, name, self._timed(name, original))

    def _timed(
        self, name: str, original: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                self.seconds[name].append(time.perf_counter() - started)

        return timed

    def take(self) -> dict[str, list[float]]:
        """What was recorded since the last take, and forget it."""
        taken = {name: list(values) for name, values in self.seconds.items()}
        self.seconds.clear()
        return taken


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def rounded(value: float, digits: int = 3) -> float:
    return round(value, digits)


# ---- describing the run -------------------------------------------------------------------


def machine_info(server: LabelStudioServer | None) -> dict[str, Any]:
    """What the figures were measured on: cores, memory, versions, load at the time."""
    info: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": _cpu_model(),
        "ram_gib": round(_meminfo_kib("MemTotal") / 2**20, 1),
        "python": platform.python_version(),
        "sqlite_daemon": sqlite3.sqlite_version,
        "scikit_learn": sklearn.__version__,
        "loadavg_at_end": list(os.getloadavg()),
        "kernel": platform.release(),
    }
    if server is not None:
        info["label_studio"] = _label_studio_version(server)
        info["sqlite_label_studio"] = _label_studio_sqlite(server)
    return info


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _meminfo_kib(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _label_studio_version(server: LabelStudioServer) -> str:
    answer = http_json("GET", f"{server.url}/api/version", token=server.legacy_token)
    release = answer.get("release") if isinstance(answer, dict) else None
    return str(release or answer)


def _label_studio_sqlite(server: LabelStudioServer) -> str:
    venv = server._venv
    if venv is None:
        return "unknown"
    completed = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sqlite3; print(sqlite3.sqlite_version)"],
        capture_output=True,
        text=True,
        check=False,
    )
    return completed.stdout.strip() or "unknown"


def write_result(name: str, payload: Mapping[str, Any], *, module: str) -> Path:
    """Write bench/results/<name>.json with the exact command and a timestamp added."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    arguments = " ".join(shlex.quote(arg) for arg in sys.argv[1:])
    document = {
        "benchmark": name,
        "finished_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": f".venv/bin/python -m {module} {arguments}".strip(),
        **payload,
    }
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    print(f"wrote {path.relative_to(REPO_ROOT)}")
    return path
