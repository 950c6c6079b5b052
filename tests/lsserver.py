"""A real Label Studio server for the test suite, and small helpers to drive it.

Why a real server: the facts the daemon depends on (filters, paging, what bumps
`updated_at`, silently dropped predictions) are server behaviour that no fake would
reproduce faithfully. The suite installs Label Studio into its own venv (via
`scripts/install-label-studio.sh`), starts it once per session on a free port with a fresh
data dir, and stops it at the end. `stop()`/`start()` restart the same server on the same
port and data dir, so outage tests can take it away and bring it back.

Installing, configuring, starting and stopping the server is the demo's own code
(`demo/labelstudio.py`), so the suite runs Label Studio exactly as `make demo` does;
this module adds what only tests want (a free port, restarts, a PAT, PostgreSQL, dying
with pytest). The helpers that talk to the server use only the standard library (urllib),
not the gateway under test: a test that sets up data with the code it checks would prove
little.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import email.utils
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from aldaemon.labelstudio.failures import MEMORY_EFFICIENT_IMPORT_FLAG
from demo import labelstudio as demo_labelstudio

REPO_ROOT = Path(__file__).resolve().parent.parent
INSTALL_TIMEOUT = 1800.0

DEFAULT_USERNAME = "aldaemon-test@example.com"
DEFAULT_PASSWORD = "aldaemon-test-password"
DEFAULT_LEGACY_TOKEN = "aldaemon-test-legacy-token-0123456789"

DEFAULT_LABEL_CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text" choice="single">
    <Choice value="pos"/>
    <Choice value="neg"/>
  </Choices>
</View>"""


class LabelStudioServerError(RuntimeError):
    """The test server could not be started or answered unexpectedly."""


def free_port() -> int:
    """Ask the kernel for a free TCP port on 127.0.0.1 (racy, but fine for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_json(
    method: str,
    url: str,
    *,
    token: str | None = None,
    auth_scheme: str = "Token",
    body: object = None,
    timeout: float = 60.0,
) -> Any:
    """One JSON request with the standard library; raises LabelStudioServerError on >= 400."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"{auth_scheme} {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as error:
        detail = error.read()[:500].decode(errors="replace")
        raise LabelStudioServerError(f"{method} {url} -> {error.code}: {detail}") from None
    return json.loads(raw) if raw else None


class LabelStudioServer:
    """One Label Studio process bound to 127.0.0.1, with its data dir and credentials.

    `extra_env` is merged into the server's environment last, so a caller can point it at
    PostgreSQL (`DJANGO_DB=default`, `POSTGRE_NAME`, `POSTGRE_USER`, ...) or set feature
    flags without a new class.
    """

    def __init__(
        self,
        *,
        data_dir: Path,
        port: int | None = None,
        username: str = DEFAULT_USERNAME,
        password: str = DEFAULT_PASSWORD,
        legacy_token: str = DEFAULT_LEGACY_TOKEN,
        extra_env: Mapping[str, str] | None = None,
        venv: Path | None = None,
        startup_timeout: float = 300.0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port if port is not None else free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.username = username
        self.password = password
        self.legacy_token = legacy_token
        self.extra_env = dict(extra_env or {})
        self.log_path = self.data_dir / "label-studio.log"
        self.startup_timeout = startup_timeout
        self._venv = venv
        self._process: subprocess.Popen[bytes] | None = None
        self._pat: str | None = None

    def __repr__(self) -> str:
        return f"LabelStudioServer(url={self.url!r}, data_dir={str(self.data_dir)!r})"

    @property
    def managed(self) -> bool:
        """True: this object owns the process and can stop and start it."""
        return True

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pat(self) -> str:
        """The user's personal access token (a refresh JWT), created on first use."""
        if self._pat is None:
            self._pat = self._obtain_pat()
        return self._pat

    def environment(self) -> dict[str, str]:
        """The demo's environment (SECRET_KEY pinned per data dir), plus the tests' own.

        SSRF protection is off so that tests can register webhooks to 127.0.0.1, and a
        webhook may take 10 s instead of 1 (a loaded test machine must not turn a slow
        delivery into a lost one). The memory-efficient prediction import the demo turns
        on is off here: the suite meets Label Studio's stock import, the one most servers
        run (tests/labelstudio/test_sqlite_import_wall.py runs both). `extra_env` comes
        last, so it wins.
        """
        env = demo_labelstudio.server_environment(
            data_dir=self.data_dir,
            username=self.username,
            password=self.password,
            legacy_token=self.legacy_token,
        )
        env["SSRF_PROTECTION_ENABLED"] = "false"
        env["WEBHOOK_TIMEOUT"] = "10"
        env[MEMORY_EFFICIENT_IMPORT_FLAG] = "false"
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        """Start (or restart) the server on the same port and data dir; wait until healthy."""
        if self.running:
            return
        if self._venv is None:
            self._venv = demo_labelstudio.install_label_studio(timeout=INSTALL_TIMEOUT)
        self._process = demo_labelstudio.start_server(
            venv=self._venv,
            port=self.port,
            data_dir=self.data_dir,
            env=self.environment(),
            log_path=self.log_path,
            preexec_fn=_die_with_parent,
        )
        atexit.register(self.stop)
        self._wait_until_healthy()

    def stop(self, *, grace: float = 15.0) -> None:
        """Stop the server (see `demo_labelstudio.stop_server`); stopping twice is fine."""
        process = self._process
        self._process = None
        if process is not None:
            demo_labelstudio.stop_server(process, grace=grace)

    def log_tail(self, lines: int = 60) -> str:
        return demo_labelstudio.read_log_tail(self.log_path, lines=lines)

    def is_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=5) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise LabelStudioServerError(
                    f"label-studio exited with {code} before it was healthy; log tail:\n"
                    + self.log_tail()
                )
            if self.is_healthy():
                return
            time.sleep(0.5)
        self.stop()
        raise LabelStudioServerError(
            f"label-studio not healthy after {self.startup_timeout:.0f}s; log tail:\n"
            + self.log_tail()
        )

    def _obtain_pat(self) -> str:
        """Create the user's personal access token with the legacy token.

        A user has at most one PAT (a second POST is 409), so the token is kept on disk
        next to the data: a restarted server, or a second fixture on the same data dir,
        finds it again.
        """
        stored = self.data_dir / "aldaemon-test-pat"
        if stored.exists():
            return stored.read_text().strip()
        answer = http_json("POST", f"{self.url}/api/token/", token=self.legacy_token)
        token = str(answer["token"])
        stored.write_text(token)
        return token


class ExternalLabelStudioServer(LabelStudioServer):
    """A server someone else runs (ALDAEMON_TEST_LS_URL): used as is, never stopped."""

    def __init__(self, *, url: str, legacy_token: str, pat: str) -> None:
        super().__init__(data_dir=Path("/nonexistent"), port=0, legacy_token=legacy_token)
        self.url = url.rstrip("/")
        self._pat = pat

    @property
    def managed(self) -> bool:
        return False

    def start(self) -> None:
        raise LabelStudioServerError("an external Label Studio cannot be started by the tests")

    def stop(self, *, grace: float = 15.0) -> None:
        raise LabelStudioServerError("an external Label Studio cannot be stopped by the tests")


# ---- PostgreSQL for a second Label Studio ---------------------------------------------


@dataclass(frozen=True)
class PostgresSettings:
    """Where the test PostgreSQL is; trust auth is the usual local setup (no password)."""

    host: str = "127.0.0.1"
    port: int = 5432
    users: tuple[str, ...] = ("postgres", "root")  # tried in order until one connects
    password: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PostgresSettings:
        """`ALDAEMON_TEST_PG_HOST`, `_PORT`, `_USER`, `_PASSWORD` override the defaults."""
        user = env.get("ALDAEMON_TEST_PG_USER")
        return cls(
            host=env.get("ALDAEMON_TEST_PG_HOST", cls.host),
            port=int(env.get("ALDAEMON_TEST_PG_PORT", str(cls.port))),
            users=(user,) if user else cls.users,
            password=env.get("ALDAEMON_TEST_PG_PASSWORD", cls.password),
        )


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be reached or used; the message says what was tried."""


def missing_postgres_outcome(env: Mapping[str, str]) -> str:
    """What a missing PostgreSQL means: "fail" in CI (`CI=true`, tests must never skip
    there), "skip" on a developer's machine."""
    return "fail" if env.get("CI", "").strip().lower() in ("true", "1", "yes") else "skip"


class PostgresDatabase:
    """A fresh, uniquely named database that Label Studio migrates into, dropped at the end."""

    def __init__(self, settings: PostgresSettings, *, name: str, user: str) -> None:
        self.settings = settings
        self.name = name
        self.user = user

    @classmethod
    def connect(cls, settings: PostgresSettings, *, name: str) -> PostgresDatabase:
        """Find a user that can log in; raises PostgresUnavailable saying what failed."""
        problems = []
        for user in settings.users:
            try:
                _connect(settings, user).close()
            except PostgresUnavailable as error:
                problems.append(f"as {user!r}: {error}")
                continue
            return cls(settings, name=name, user=user)
        raise PostgresUnavailable(
            f"cannot connect to PostgreSQL at {settings.host}:{settings.port} "
            + "; ".join(problems)
        )

    def __repr__(self) -> str:
        return f"PostgresDatabase({self.name!r} on {self.settings.host}:{self.settings.port})"

    def label_studio_env(self) -> dict[str, str]:
        """The variables Label Studio 1.23 reads (core/settings/base.py, via get_env)."""
        return {
            "DJANGO_DB": "default",
            "POSTGRE_NAME": self.name,
            "POSTGRE_USER": self.user,
            "POSTGRE_PASSWORD": self.settings.password,
            "POSTGRE_HOST": self.settings.host,
            "POSTGRE_PORT": str(self.settings.port),
        }

    @property
    def dsn(self) -> str:
        """How aldaemon's `[state] dsn` names it, with the password when one is set."""
        password = f":{urllib.parse.quote(self.settings.password, safe='')}"
        login = f"{self.user}{password if self.settings.password else ''}"
        return f"postgresql://{login}@{self.settings.host}:{self.settings.port}/{self.name}"

    def create(self) -> None:
        self._admin(f'CREATE DATABASE "{self.name}"')

    def reset(self) -> None:
        """Empty it: drop every table (with the public schema) and end other sessions."""
        with _connect(self.settings, self.user, dbname=self.name) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid != pg_backend_pid()"
            )
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")
            conn.execute("GRANT USAGE ON SCHEMA public TO PUBLIC")  # as a new database has it

    def drop(self) -> None:
        """Drop it even if a connection lingers (PostgreSQL 13+: WITH (FORCE))."""
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def _admin(self, statement: str) -> None:
        with _connect(self.settings, self.user) as conn:
            conn.execute(statement)


def _connect(settings: PostgresSettings, user: str, *, dbname: str = "postgres") -> Any:
    """An autocommit connection, by default to the `postgres` maintenance database."""
    try:
        import psycopg  # a dev dependency; imported here so its absence is a clear reason
    except ImportError as error:
        raise PostgresUnavailable(f"psycopg is not installed ({error})") from None
    try:
        return psycopg.connect(
            host=settings.host,
            port=settings.port,
            user=user,
            password=settings.password,
            dbname=dbname,
            autocommit=True,
            connect_timeout=5,
        )
    except psycopg.Error as error:
        lines = str(error).strip().splitlines()
        raise PostgresUnavailable(f"{type(error).__name__}: {lines[0] if lines else ''}") from None


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it when the test run dies.

    atexit and fixture teardown cover normal ends; this covers a `kill -9` of pytest, which
    would otherwise leave a Label Studio running in its own session.
    """
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


# ---- helpers that set up data through the plain HTTP API ------------------------------


class LabelStudioClient:
    """A tiny synchronous client for test setup, authenticated with the legacy token."""

    def __init__(self, server: LabelStudioServer) -> None:
        self.url = server.url
        self._token = server.legacy_token

    def call(self, method: str, path: str, body: object = None) -> Any:
        return http_json(method, f"{self.url}{path}", token=self._token, body=body)

    def server_clock(self) -> datetime:
        """Label Studio's own clock: the Date header of an answer (whole seconds, UTC)."""
        with urllib.request.urlopen(f"{self.url}/health", timeout=10) as response:
            return email.utils.parsedate_to_datetime(response.headers["Date"])

    def create_project(self, *, title: str, label_config: str = DEFAULT_LABEL_CONFIG) -> int:
        answer = self.call("POST", "/api/projects/", {"title": title, "label_config": label_config})
        return int(answer["id"])

    def import_tasks(self, project_id: int, tasks: Sequence[Mapping[str, object]]) -> list[int]:
        """Import task data dicts; return the new task ids in import order."""
        before = set(self.task_ids(project_id))
        self.call("POST", f"/api/projects/{project_id}/import", [{"data": t} for t in tasks])
        return sorted(set(self.task_ids(project_id)) - before)

    def task_ids(self, project_id: int) -> list[int]:
        query = "fields=all&include=id&page_size=100000&page=1"
        answer = self.call("GET", f"/api/tasks/?project={project_id}&{query}")
        return sorted(int(task["id"]) for task in answer["tasks"])

    def get_task(self, task_id: int) -> dict[str, Any]:
        task: dict[str, Any] = self.call("GET", f"/api/tasks/{task_id}/")
        return task

    def annotate(
        self,
        task_id: int,
        label: str | None,
        *,
        from_name: str = "sentiment",
        to_name: str = "text",
        was_cancelled: bool = False,
    ) -> int:
        """Create an annotation choosing `label` (None: an empty result); return its id."""
        result = (
            []
            if label is None
            else [
                {
                    "from_name": from_name,
                    "to_name": to_name,
                    "type": "choices",
                    "value": {"choices": [label]},
                }
            ]
        )
        answer = self.call(
            "POST",
            f"/api/tasks/{task_id}/annotations/",
            {"result": result, "was_cancelled": was_cancelled},
        )
        return int(answer["id"])

    def delete_annotation(self, annotation_id: int) -> None:
        self.call("DELETE", f"/api/annotations/{annotation_id}/")

    def predictions(self, project_id: int) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = self.call("GET", f"/api/predictions/?project={project_id}")
        return answer

    def get_project(self, project_id: int) -> dict[str, Any]:
        project: dict[str, Any] = self.call("GET", f"/api/projects/{project_id}/")
        return project
