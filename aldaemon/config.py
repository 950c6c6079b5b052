"""TOML file -> one frozen, typed Config.

Every problem is collected (not just the first) and reported with its key path, e.g.
`projects[1].retrain.min_new_annotations: must be > 0, got 0`, so one run of
`aldaemon check-config` shows the operator everything to fix. Unknown keys are errors:
a typo such as `min_new_anotations` would otherwise silently fall back to a default.

The reader walks the document with a small `Section` helper (`config_section.py`) that
knows its own path and records errors instead of raising; `load_config` raises one
ConfigError at the end. Each block is read table-driven (`read_settings`): a setting's
default and limits are written once, on its dataclass field; the reader takes them from
there, and only what needs more than one key (secrets, the state dir) is read by hand.
"""

from __future__ import annotations

import importlib.util
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aldaemon.config_model import ML_BACKEND_MODEL, MLBackendConfig, read_controls
from aldaemon.config_section import Section, printable, read_settings
from aldaemon.config_team import LabelsConfig, StopConfig
from aldaemon.errors import SCALE_EXTRA_HINT, ConfigError
from aldaemon.model.protocol import DEFAULT_FACTORY
from aldaemon.secret import Secret
from aldaemon.sync.scoring import STRATEGIES

DEFAULT_CONFIG_PATH = "/etc/aldaemon/config.toml"
TOKEN_CREDENTIAL = "labelstudio-token"
TOKEN_ENV = "ALDAEMON_LABEL_STUDIO_TOKEN"
WEBHOOK_SECRET_CREDENTIAL = "webhook-secret"
WEBHOOK_SECRET_ENV = "ALDAEMON_WEBHOOK_SECRET"
STATE_DSN_CREDENTIAL = "state-dsn"
STATE_DSN_ENV = "ALDAEMON_STATE_DSN"
STATE_PASSWORD_CREDENTIAL = "state-password"
# `model = "ml-backend"`: the project's model is the ML backend connected to it in Label Studio.


SCHEDULER_SCHEMES = ("tcp", "tls")  # Dask's; tls:// takes its certificates from Dask's config
REPLICA_NAME_MAX = 40  # it travels in PostgreSQL's application_name (63 bytes)


def _url_problem(url: str) -> str | None:
    if url and not url.startswith(("http://", "https://")):
        return f"must start with http:// or https://, got {url!r}"
    return None


def _listen_problem(listen: str) -> str | None:
    try:
        parse_listen(listen)
    except ValueError:
        return f'must be "HOST:PORT" or "", got {listen!r}'
    return None


def _cron_problem(expression: str) -> str | None:
    """Exactly what the scheduler will accept, so `check-config` and `run` never disagree."""
    from apscheduler.triggers.cron import CronTrigger

    problem = f'must be a 5-field cron expression like "0 3 * * *", got {expression!r}'
    if len(expression.split()) != 5:
        return problem
    try:
        CronTrigger.from_crontab(expression, timezone="UTC")
    except ValueError:
        return problem
    return None


def _version_prefix_problem(prefix: str) -> str | None:
    if not prefix or not prefix.replace("-", "").replace("_", "").isalnum():
        return f"must be letters, digits, - or _, got {prefix!r}"
    return None


def _replica_problem(name: str) -> str | None:
    if not name or len(name) > REPLICA_NAME_MAX or not name.isprintable():
        return f"must be 1 to {REPLICA_NAME_MAX} printable characters, got {name!r}"
    return None


def _dask_scheduler_problem(address: str) -> str | None:
    try:
        parse_scheduler_address(address)
    except ValueError as exc:
        return str(exc)
    if importlib.util.find_spec("distributed") is None:
        return f"needs the Dask distributed package, which is not installed: {SCALE_EXTRA_HINT}"
    return None


def _model_problem(model: str) -> str | None:
    if ":" not in model and model != ML_BACKEND_MODEL:
        return f'must look like "package.module:factory" or be "{ML_BACKEND_MODEL}", got {model!r}'
    return None


@dataclass(frozen=True)
class LabelStudioConfig:
    url: str = field(metadata={"parse": lambda url: url.rstrip("/"), "check": _url_problem})
    token: Secret = field()
    timeout: float = field(default=30.0, metadata={"minimum": 1.0})
    max_attempts: int = field(default=5, metadata={"minimum": 1, "maximum": 20})


@dataclass(frozen=True)
class StateConfig:
    dir: Path  # the SQLite file and lock (without a DSN) and the model files
    dsn: Secret | None = None  # PostgreSQL instead of SQLite; may hold a password
    password: Secret | None = None  # the credential state-password, given to libpq apart


@dataclass(frozen=True)
class DaemonConfig:
    poll_interval: float = field(default=30.0, metadata={"minimum": 1.0})
    resync_interval: float = field(default=3600.0, metadata={"minimum": 10.0})
    listen: str = field(default="127.0.0.1:9090", metadata={"check": _listen_problem})
    webhook_secret: Secret | None = None
    cycle_timeout: float = field(default=1800.0, metadata={"minimum": 10.0})
    shutdown_grace: float = field(default=60.0, metadata={"minimum": 0.0})
    # /healthz: a last success older than this is unhealthy; 0 = auto
    stale_after: float = field(default=0.0, metadata={"minimum": 0.0})
    # this replica's name among those sharing one PostgreSQL; None = "HOST:PID"
    replica: str | None = field(default=None, metadata={"check": _replica_problem})
    # "tcp://HOST:PORT" of a Dask scheduler: model jobs run on its cluster; None = locally
    dask_scheduler: str | None = field(default=None, metadata={"check": _dask_scheduler_problem})

    @property
    def model_runner(self) -> str:
        """Where model jobs run, as `status` and `/healthz` name it."""
        return f"dask {self.dask_scheduler}" if self.dask_scheduler else "local"


@dataclass(frozen=True)
class RetrainConfig:
    min_new_annotations: int = field(default=10, metadata={"minimum": 1})
    min_interval: float = field(default=60.0, metadata={"minimum": 0.0})
    min_per_class: int = field(default=2, metadata={"minimum": 1})
    max_interval: float | None = field(default=None, metadata={"minimum": 1.0})
    cron: str | None = field(default=None, metadata={"check": _cron_problem})


@dataclass(frozen=True)
class PredictionsConfig:
    strategy: str = field(default="margin", metadata={"choices": STRATEGIES})
    keep_versions: int = field(default=2, metadata={"minimum": 1})
    version_prefix: str = field(default="aldaemon", metadata={"check": _version_prefix_problem})
    random_fraction: float = field(default=0.0, metadata={"minimum": 0.0, "maximum": 1.0})
    clusters: int = field(default=0, metadata={"minimum": 0, "maximum": 1000})
    # see README "queue_depth"; None (0 in the file): every task
    queue_depth: int | None = field(
        default=1000, metadata={"minimum": 0, "parse": lambda depth: depth or None}
    )
    show_predictions: bool = True
    batch_size: int = field(default=20_000, metadata={"minimum": 1, "maximum": 100_000})
    prune_per_cycle: int = field(default=1, metadata={"minimum": 0})


@dataclass(frozen=True)
class ViewConfig:
    title: str = field(default="Active learning queue", metadata={"blank_is_default": True})


@dataclass(frozen=True)
class ProjectConfig:
    id: int = field(metadata={"minimum": 1})
    model: str = field(default=DEFAULT_FACTORY, metadata={"check": _model_problem})
    ml_backend_id: int | None = field(default=None, metadata={"minimum": 1})
    ml_backend: MLBackendConfig = field(default_factory=MLBackendConfig)
    # names of the labeling config's controls to learn; None: all a classifier can serve
    controls: tuple[str, ...] | None = None
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    predictions: PredictionsConfig = field(default_factory=PredictionsConfig)
    view: ViewConfig = field(default_factory=ViewConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    stop: StopConfig = field(default_factory=StopConfig)

    @property
    def uses_ml_backend(self) -> bool:
        return self.model == ML_BACKEND_MODEL


@dataclass(frozen=True)
class Config:
    path: str
    labelstudio: LabelStudioConfig
    state: StateConfig
    daemon: DaemonConfig
    projects: tuple[ProjectConfig, ...]

    def project(self, project_id: int) -> ProjectConfig | None:
        return next((p for p in self.projects if p.id == project_id), None)


def default_config_path() -> str:
    return os.environ.get("ALDAEMON_CONFIG") or DEFAULT_CONFIG_PATH


def load_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the file; raise ConfigError listing every problem."""
    env = os.environ if env is None else env
    path_text = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(path_text, ["file not found"]) from None
    except OSError as exc:
        raise ConfigError(path_text, [f"cannot read: {exc.strerror}"]) from None
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(path_text, [f"not UTF-8 text (byte {exc.start})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path_text, [f"not valid TOML: {exc}"]) from None
    errors: list[str] = []
    config = _build_config(document, path=path_text, env=env, errors=errors)
    if errors or config is None:
        raise ConfigError(path_text, errors)
    return config


def _build_config(
    document: Mapping[str, Any], *, path: str, env: Mapping[str, str], errors: list[str]
) -> Config | None:
    root = Section(document, path="", errors=errors)
    labelstudio = _read_labelstudio(root.table("labelstudio"), env=env)
    state = _read_state(root.table("state"), env=env)
    daemon = _read_daemon(root.table("daemon"), env=env)
    projects = _read_projects(root, errors=errors)
    root.reject_unknown()
    if labelstudio is None:
        return None
    return Config(path=path, labelstudio=labelstudio, state=state, daemon=daemon, projects=projects)


def _read_labelstudio(section: Section, *, env: Mapping[str, str]) -> LabelStudioConfig | None:
    token = _read_secret(
        section,
        env=env,
        credential=TOKEN_CREDENTIAL,
        file_key="token_file",
        env_var=TOKEN_ENV,
        inline_key="token",
    )
    if token is None:
        section.error(
            "token",
            f"no API token: set token_file, or {TOKEN_ENV}, or the systemd "
            f"credential {TOKEN_CREDENTIAL}",
        )
    config = read_settings(section, LabelStudioConfig, token=token)
    return None if token is None else config


def _read_secret(
    section: Section,
    *,
    env: Mapping[str, str],
    credential: str,
    file_key: str,
    env_var: str,
    inline_key: str,
) -> Secret | None:
    """Look in the documented order: systemd credential, file, environment, inline."""
    file_path = section.optional_string(file_key)
    inline = section.optional_string(inline_key)
    credentials_dir = env.get("CREDENTIALS_DIRECTORY")
    if credentials_dir and (Path(credentials_dir) / credential).is_file():
        return _secret_from_file(section, file_key, Path(credentials_dir) / credential)
    if file_path:
        return _secret_from_file(section, file_key, Path(file_path))
    if env.get(env_var):
        return Secret(env[env_var].strip(), source=f"environment {env_var}")
    if inline:
        return Secret(inline.strip(), source=f"{section.key(inline_key)} (inline)")
    return None


def _secret_from_file(section: Section, key: str, path: Path) -> Secret | None:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        section.error(key, f"cannot read {printable(str(path))}: {exc.strerror}")
        return None
    if not value:
        section.error(key, f"{printable(str(path))} is empty")
        return None
    return Secret(value, source=str(path))


def _read_state(section: Section, *, env: Mapping[str, str]) -> StateConfig:
    default = env.get("STATE_DIRECTORY", "").split(":")[0] or "./.aldaemon"
    state_dir = section.string("dir", default) or default
    dsn = _read_secret(
        section,
        env=env,
        credential=STATE_DSN_CREDENTIAL,
        file_key="dsn_file",
        env_var=STATE_DSN_ENV,
        inline_key="dsn",
    )
    if dsn is not None and not dsn.reveal().startswith(("postgresql://", "postgres://")):
        section.error("dsn", f'must start with "postgresql://" (from {dsn.source})')
    credentials_dir = env.get("CREDENTIALS_DIRECTORY")
    password_path = Path(credentials_dir or ".") / STATE_PASSWORD_CREDENTIAL
    password = (
        _secret_from_file(section, "dsn", password_path)
        if credentials_dir and password_path.is_file()
        else None
    )
    # Absolute, taken against the working directory at load: model jobs open files under
    # it from other processes, and on a Dask cluster from other machines and directories.
    return read_settings(
        section,
        StateConfig,
        dir=Path(state_dir).expanduser().absolute(),
        dsn=dsn,
        password=password,
    )


def _read_daemon(section: Section, *, env: Mapping[str, str]) -> DaemonConfig:
    secret = _read_secret(
        section,
        env=env,
        credential=WEBHOOK_SECRET_CREDENTIAL,
        file_key="webhook_secret_file",
        env_var=WEBHOOK_SECRET_ENV,
        inline_key="webhook_secret",
    )
    return read_settings(section, DaemonConfig, webhook_secret=secret)


def parse_listen(listen: str) -> tuple[str, int] | None:
    """`"127.0.0.1:9090"` or `"[::1]:9090"` -> (host, port); `""` -> None (server off).

    Raises ValueError naming the problem. A host is required: binding every interface
    must be spelled out as "0.0.0.0:9090", never happen by leaving it out. The one parser:
    `check-config` validates with it and the HTTP server binds with it.
    """
    if listen == "":
        return None
    host, separator, port_text = listen.rpartition(":")
    if not separator or not host:
        raise ValueError(f"listen {listen!r}: expected HOST:PORT, e.g. 127.0.0.1:9090")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"listen {listen!r}: port must be a number from 0 to 65535")
    return host, int(port_text)


def parse_scheduler_address(address: str) -> tuple[str, str, int]:
    """`"tcp://10.0.0.5:8786"` (or `tls://`, or `tcp://[::1]:8786`) -> (scheme, host, port).

    Raises ValueError naming the problem. The port is required: Dask's default (8786)
    filled in silently would hide a typo'd address until the first job.
    """
    shape = f'must look like "tcp://HOST:PORT" or "tls://HOST:PORT", got {address!r}'
    scheme, separator, rest = address.partition("://")
    if not separator or scheme not in SCHEDULER_SCHEMES:
        raise ValueError(shape)
    host, separator, port_text = rest.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not separator or not host or any(c in host for c in "/@ ") or not port_text.isdigit():
        raise ValueError(shape)
    if not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number from 1 to 65535, got {address!r}")
    return scheme, host, int(port_text)


def _read_projects(root: Section, *, errors: list[str]) -> tuple[ProjectConfig, ...]:
    raw = root.get("projects")
    if raw is None:
        root.error("projects", "at least one [[projects]] table is required")
        return ()
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        root.error("projects", "must be an array of tables ([[projects]])")
        return ()
    if not raw:
        root.error("projects", "at least one [[projects]] table is required")
    projects: list[ProjectConfig] = []
    seen_ids: set[int] = set()
    for index, item in enumerate(raw):
        section = Section(item, path=f"projects[{index}]", errors=errors)
        project = _read_project(section)
        if project is None:
            continue
        if project.id in seen_ids:
            section.error("id", f"project {project.id} is configured twice")
        seen_ids.add(project.id)
        projects.append(project)
    return tuple(projects)


def _read_project(section: Section) -> ProjectConfig | None:
    project = read_settings(section, ProjectConfig, controls=read_controls(section))
    if not project.uses_ml_backend:
        for key in ("ml_backend_id", "ml_backend"):
            if section.has(key):
                section.error(key, f'applies only with model = "{ML_BACKEND_MODEL}"')
    return project if project.id >= 1 else None
