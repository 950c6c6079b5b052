"""The demo's own Label Studio: install, start, stop, and annotator accounts.

Label Studio lives in its own virtual environment (it pins Django and friends), which
`scripts/install-label-studio.sh` creates once and reuses. The demo starts it bound to
127.0.0.1 in a new session (its own process group): the Ctrl-C that reaches the demo does
not reach Label Studio, so the demo stops the daemon first and then Label Studio, in that
order, instead of both dying at once mid-request.

The plain functions that install, configure, start and stop the server
(`install_label_studio`, `server_environment`, `start_server`, `stop_server`,
`read_log_tail`) also run the test suite's server (`tests/lsserver.py`): the demo and the
tests then meet Label Studio set up the same way, and a fix to one (such as the pinned
SECRET_KEY) reaches both. They are synchronous and use no part of the daemon.

Why each simulated annotator gets its own Label Studio user. `GET /api/projects/{id}/next`
first hands a user back the task that user already holds a lock on
(`Task.get_locked_by` in `projects/functions/next_task.py`), so several annotators
sharing one user would all be served the same task and label it several times. With one
user each, the lock keeps them apart and every one gets the next lowest-score task that
nobody holds. Users are made the way a person makes one, through the sign-up form (open
unless the server sets DISABLE_SIGNUP_WITHOUT_LINK), and each one's API token is read
with its session from `/api/current-user/token`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import structlog

from aldaemon.errors import AldaemonError, LabelStudioRefused, LabelStudioUnreachable
from aldaemon.labelstudio import LabelStudioGateway, payloads
from aldaemon.labelstudio.failures import MEMORY_EFFICIENT_IMPORT_FLAG
from aldaemon.labelstudio.http import NothingLeft
from aldaemon.labelstudio.retry import Replay
from aldaemon.records import LabelingSchema
from aldaemon.secret import Secret

log = structlog.get_logger(__name__)

LABEL_STUDIO_VERSION = "1.23.2"
INSTALL_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "install-label-studio.sh"
STARTUP_TIMEOUT = 900.0  # first start migrates an empty database: ~40 s, minutes on a busy box
SECRET_KEY_FILE = "aldaemon-secret-key"  # in the data dir, beside Label Studio's database
_NO_TASKS_LEFT = "There are no tasks"  # the detail of /next's 404 when the queue is empty
_CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken"\s+value="([^"]+)"')


# ---- one Label Studio process, for the demo and the test suite ---------------------------


def install_label_studio(*, timeout: float = 3600.0) -> Path:
    """Run the idempotent install script; return Label Studio's virtual environment."""
    if not INSTALL_SCRIPT.is_file():
        raise AldaemonError(
            f"{INSTALL_SCRIPT} is missing: run the demo from a clone of the repository "
            "(`make demo`)"
        )
    try:
        completed = subprocess.run(
            [str(INSTALL_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True, timeout=timeout
        )
    except subprocess.CalledProcessError as exc:
        raise AldaemonError(
            f"installing Label Studio {LABEL_STUDIO_VERSION} failed (exit {exc.returncode}); "
            "see the messages above"
        ) from None
    return Path(completed.stdout.strip().splitlines()[-1])


def server_environment(
    *, data_dir: Path, username: str, password: str, legacy_token: str
) -> dict[str, str]:
    """Our environment without anything that configures Label Studio, plus the setup.

    Inherited `LABEL_STUDIO_*`, `DJANGO_*` and `POSTGRE_*` variables are dropped so that a
    developer's own Label Studio settings cannot leak into ours. The user settings only
    matter at the first start, on an empty data dir; later starts leave an existing user
    as it is.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LABEL_STUDIO_", "DJANGO_", "POSTGRE_"))
    }
    env.update(
        {
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            "LATEST_VERSION_CHECK": "false",
            "COLLECT_ANALYTICS": "false",
            "LABEL_STUDIO_USERNAME": username,
            "LABEL_STUDIO_PASSWORD": password,
            "LABEL_STUDIO_USER_TOKEN": legacy_token,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "PYTHONUNBUFFERED": "1",
            # The demo's and the tests' ML backends listen on 127.0.0.1, which Label
            # Studio refuses to connect by default ("reserved network address"). Both
            # settings: connecting a backend also adds a webhook to its /webhook, which
            # is checked under SSRF protection (a 403 with the same message otherwise).
            "ML_BLOCK_LOCAL_IP": "false",
            "SSRF_PROTECTION_ENABLED": "false",
            # Label Studio 1.23 regenerates a SECRET_KEY starting with "$" at every
            # start (and with it every personal access token): pin one per data dir.
            "SECRET_KEY": _pinned_secret_key(data_dir),
            # Its prediction import then recounts only the tasks it touched, not the
            # whole project (README: "Label Studio's prediction import on big projects").
            MEMORY_EFFICIENT_IMPORT_FLAG: "true",
        }
    )
    return env


def _pinned_secret_key(data_dir: Path) -> str:
    """The data dir's own SECRET_KEY: made at the first start, read back at every other."""
    path = data_dir / SECRET_KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))  # never starts with "$"
        path.chmod(0o600)
    return path.read_text().strip()


def start_server(
    *,
    venv: Path,
    port: int,
    data_dir: Path,
    env: Mapping[str, str],
    log_path: Path,
    preexec_fn: Callable[[], object] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `label-studio start` on 127.0.0.1:`port`, appending its output to `log_path`.

    It runs in a new session, so it is its own process group: a Ctrl-C meant for us does
    not reach it (we stop it, in our own order), and `stop_server` signals the whole group,
    so nothing it spawned outlives it. It returns at once; the caller waits for `/health`.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    command = [
        str(venv / "bin" / "label-studio"),
        "start",
        "--no-browser",
        "--internal-host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with log_path.open("ab") as log_file:
        log_file.write(f"\n=== {time.strftime('%F %T')} {' '.join(command)}\n".encode())
        log_file.flush()
        return subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=data_dir,
            start_new_session=True,
            preexec_fn=preexec_fn,
        )


def stop_server(process: subprocess.Popen[bytes], *, grace: float) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers past `grace` seconds."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # children that outlived their leader


def read_log_tail(log_path: Path, *, lines: int) -> str:
    """The last `lines` lines of the server's log, for an error message."""
    try:
        text = log_path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:])


# ---- the demo's server and its users ------------------------------------------------------


async def is_healthy(url: str, *, timeout: float = 3.0) -> bool:
    """True when a Label Studio answers `GET /health` with 200 at `url`."""
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.get(f"{url}/health")
    except httpx.HTTPError:
        return False
    return response.status_code == 200


@dataclass(frozen=True)
class DemoUser:
    """The account the demo creates at Label Studio's first start (an administrator)."""

    email: str
    password: Secret
    legacy_token: Secret


class LocalLabelStudio:
    """One Label Studio process the demo started, and the only one it may stop."""

    def __init__(self, *, venv: Path, data_dir: Path, port: int, log_path: Path) -> None:
        self.venv = venv
        self.data_dir = data_dir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"LocalLabelStudio(url={self.url!r}, data_dir={str(self.data_dir)!r})"

    def environment(self, user: DemoUser) -> dict[str, str]:
        """The server's environment, with `user` as the account a first start creates."""
        return server_environment(
            data_dir=self.data_dir,
            username=user.email,
            password=user.password.reveal(),
            legacy_token=user.legacy_token.reveal(),
        )

    async def start(self, user: DemoUser) -> None:
        """Start the server and wait until `/health` answers; raise with the log's tail."""
        self._process = start_server(
            venv=self.venv,
            port=self.port,
            data_dir=self.data_dir,
            env=self.environment(user),
            log_path=self.log_path,
        )
        await self._wait_until_healthy()

    async def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            process = self._process
            if process is None or process.poll() is not None:
                code = None if process is None else process.returncode
                self._process = None
                raise AldaemonError(
                    f"Label Studio exited (code {code}) before it answered on {self.url}; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            if await is_healthy(self.url):
                return
            await asyncio.sleep(1.0)
        self.stop()
        raise AldaemonError(
            f"Label Studio did not answer on {self.url} within {STARTUP_TIMEOUT:.0f} s; "
            f"last lines of {self.log_path}:\n{self.log_tail()}"
        )

    def stop(self, *, grace: float = 20.0) -> None:
        """Stop the server (see `stop_server`); stopping twice is fine."""
        process = self._process
        self._process = None
        if process is not None:
            stop_server(process, grace=grace)

    def log_tail(self, lines: int = 30) -> str:
        return read_log_tail(self.log_path, lines=lines)


async def annotator_token(url: str, *, email: str, password: Secret) -> Secret:
    """Sign `email` up through Label Studio's form (or log in if it exists); return its token.

    The token is the user's legacy API token: one fixed key per user that a session can
    read back at any time, so a lost copy is never a lost account. The server must accept
    legacy tokens (the demo's own server is started with them on).
    """
    async with httpx.AsyncClient(base_url=url, timeout=30.0, follow_redirects=False) as client:
        signed_in = await _submit_form(
            client, "/user/signup/", {"email": email, "password": password.reveal()}
        )
        if not signed_in:  # most likely the user exists already: log in instead
            signed_in = await _submit_form(
                client, "/user/login/", {"email": email, "password": password.reveal()}
            )
        if not signed_in:
            raise LabelStudioRefused(
                f"Label Studio at {url} neither signed up nor logged in {email}; is sign-up "
                "disabled (DISABLE_SIGNUP_WITHOUT_LINK)?"
            )
        response = await client.get("/api/current-user/token")
    if response.status_code != 200:
        raise LabelStudioRefused(
            f"reading the API token of {email} answered HTTP {response.status_code}",
            status_code=response.status_code,
        )
    token = response.json().get("token")
    if not isinstance(token, str) or not token:
        raise LabelStudioRefused(f"Label Studio returned no API token for {email}")
    return Secret(token, source=f"Label Studio user {email}")


async def _submit_form(client: httpx.AsyncClient, path: str, fields: dict[str, str]) -> bool:
    """Post a Django form with its CSRF token; True when it answered with a redirect.

    Both forms redirect on success and re-render themselves (200) with errors otherwise.
    """
    try:
        page = await client.get(path)
        match = _CSRF_FIELD.search(page.text)
        csrf = match.group(1) if match else client.cookies.get("csrftoken", "")
        response = await client.post(
            path,
            data={**fields, "csrfmiddlewaretoken": csrf},
            headers={"Referer": f"{client.base_url}{path}"},
        )
    except httpx.HTTPError as exc:
        raise LabelStudioUnreachable(f"{path}: {type(exc).__name__}") from None
    return response.status_code in (301, 302, 303) and "sessionid" in client.cookies


# ---- the demo's own writes: a project, its tasks, simulated annotators ---------------------


class DemoGateway(LabelStudioGateway):
    """The daemon's gateway plus what the demo (and the benchmarks' annotators) also do.

    The daemon never creates projects, tasks or annotations, and never takes tasks from the
    queue; these calls live here so the daemon's gateway holds only the calls it makes.
    """

    async def create_project(self, *, title: str, label_config: str) -> int:
        project = await self._http.sdk_call(
            lambda: self._http.sdk.projects.create(title=title, label_config=label_config),
            operation="create_project",
            replay=Replay.IF_NOT_SENT,
        )
        return int(project.id)  # type: ignore[arg-type]

    async def import_tasks(self, project_id: int, tasks: Sequence[Mapping[str, object]]) -> int:
        """Import tasks (each a task `{"data": ...}` or a bare data dict); returns the count.

        Label Studio inserts tasks of one request in one transaction: all or none.
        """
        if not tasks:
            return 0
        answer = await self._http.request(
            "POST",
            f"/api/projects/{project_id}/import",
            json_body=[dict(task) for task in tasks],
            operation="import_tasks",
            project_id=project_id,
            replay=Replay.IF_NOT_SENT,
            timeout=max(self._http.timeout, self.IMPORT_TIMEOUT),
        )
        return int(answer["task_count"])

    async def create_annotation(
        self,
        task_id: int,
        *,
        schema: LabelingSchema,
        label: str | None,
        was_cancelled: bool = False,
    ) -> int:
        """Annotate a task with `label` (None: empty result); returns the annotation id."""
        result = [] if label is None else payloads.choices_result(schema, label)
        annotation = await self._http.sdk_call(
            lambda: self._http.sdk.annotations.create(
                id=task_id, result=result, was_cancelled=was_cancelled
            ),
            operation="create_annotation",
            replay=Replay.IF_NOT_SENT,
        )
        return int(annotation.id)

    async def next_task(self, project_id: int) -> dict[str, Any] | None:
        """The task Label Studio serves the token's user next (and locks), or None."""
        try:
            answer = await self._http.request(
                "GET",
                f"/api/projects/{project_id}/next",
                operation="next_task",
                project_id=project_id,
                missing_ok=_NO_TASKS_LEFT,
            )
        except NothingLeft:
            return None
        return dict(answer)

    async def task_data(self, project_id: int) -> dict[int, dict[str, Any]]:
        """Every task's data by id, in one listing (the demo's own bookkeeping)."""
        answer = await self._http.request(
            "GET",
            "/api/tasks/",
            params={
                "project": project_id,
                "page": 1,
                "page_size": 100_000,
                "fields": "all",
                "include": "id,data",
            },
            operation="task_data",
            project_id=project_id,
        )
        return {int(task["id"]): dict(task.get("data") or {}) for task in answer.get("tasks", [])}

    async def connect_ml_backend(self, project_id: int, *, url: str, title: str) -> int:
        """Connect the backend at `url` to the project as a user would (`POST /api/ml`);
        a backend connected earlier is reused, its URL updated if the port changed."""
        listed = await self._http.request(
            "GET", "/api/ml", params={"project": project_id}, operation="list_ml_backends",
            project_id=project_id,
        )  # fmt: skip
        for backend in listed or []:
            if str(backend.get("url", "")).rstrip("/") == url:
                return int(backend["id"])
        if listed:
            backend_id = int(listed[0]["id"])
            await self._http.request(
                "PATCH", f"/api/ml/{backend_id}", json_body={"url": url},
                operation="update_ml_backend", project_id=project_id,
            )  # fmt: skip
            return backend_id
        created = await self._http.request(
            "POST",
            "/api/ml",
            json_body={"url": url, "project": project_id, "title": title},
            operation="connect_ml_backend",
            project_id=project_id,
            replay=Replay.IF_NOT_SENT,
        )
        return int(created["id"])
