"""TOML file -> one frozen, typed Config.

Every problem is collected (not just the first) and reported with its key path, e.g.
`projects[1].retrain.min_new_annotations: must be > 0, got 0`, so one run of
`aldaemon check-config` shows the operator everything to fix. Unknown keys are errors:
a typo such as `min_new_anotations` would otherwise silently fall back to a default.

The reader walks the document with a small `Section` helper (`config_section.py`) that
knows its own path and records errors instead of raising; `load_config` raises one
ConfigError at the end. Each default is written once, on its dataclass field; the reader
takes it from there.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from aldaemon.config_model import ML_BACKEND_MODEL, MLBackendConfig, read_controls, read_ml_backend
from aldaemon.config_section import Section, printable
from aldaemon.config_team import LabelsConfig, StopConfig, read_labels, read_stop
from aldaemon.errors import ConfigError
from aldaemon.model.protocol import DEFAULT_FACTORY
from aldaemon.secret import Secret
from aldaemon.sync.scoring import STRATEGIES

DEFAULT_CONFIG_PATH = "/etc/aldaemon/config.toml"
TOKEN_CREDENTIAL = "labelstudio-token"
TOKEN_ENV = "ALDAEMON_LABEL_STUDIO_TOKEN"
WEBHOOK_SECRET_CREDENTIAL = "webhook-secret"
WEBHOOK_SECRET_ENV = "ALDAEMON_WEBHOOK_SECRET"
# `model = "ml-backend"`: the project's model is the ML backend connected to it in Label Studio.


@dataclass(frozen=True)
class LabelStudioConfig:
    url: str
    token: Secret
    timeout: float = 30.0
    max_attempts: int = 5


@dataclass(frozen=True)
class StateConfig:
    dir: Path


@dataclass(frozen=True)
class DaemonConfig:
    poll_interval: float = 30.0
    resync_interval: float = 3600.0
    listen: str = "127.0.0.1:9090"
    webhook_secret: Secret | None = None
    cycle_timeout: float = 1800.0
    shutdown_grace: float = 60.0
    stale_after: float = 0.0  # /healthz: a last success older than this is unhealthy; 0 = auto


@dataclass(frozen=True)
class RetrainConfig:
    min_new_annotations: int = 10
    min_interval: float = 60.0
    min_per_class: int = 2
    max_interval: float | None = None
    cron: str | None = None


@dataclass(frozen=True)
class PredictionsConfig:
    strategy: str = "margin"
    keep_versions: int = 2
    version_prefix: str = "aldaemon"
    random_fraction: float = 0.0
    clusters: int = 0
    queue_depth: int | None = 1000  # see README "queue_depth"; None (0 in the file): every task
    show_predictions: bool = True
    batch_size: int = 20_000
    prune_per_cycle: int = 1


@dataclass(frozen=True)
class ViewConfig:
    title: str = "Active learning queue"


@dataclass(frozen=True)
class ProjectConfig:
    id: int
    model: str = DEFAULT_FACTORY
    ml_backend_id: int | None = None
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


# The defaults the reader falls back to: the dataclasses' own, never written again here.
_DAEMON = DaemonConfig()
_RETRAIN = RetrainConfig()
_PREDICTIONS = PredictionsConfig()
_VIEW = ViewConfig()


def _field_default(cls: type[Any], name: str) -> Any:
    """The default of one field of a dataclass that cannot be built without arguments."""
    return next(f.default for f in fields(cls) if f.name == name)


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
    url = section.string("url", required=True).rstrip("/")
    if url and not url.startswith(("http://", "https://")):
        section.error("url", f"must start with http:// or https://, got {url!r}")
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
    timeout = section.number("timeout", _field_default(LabelStudioConfig, "timeout"), minimum=1.0)
    max_attempts = section.integer(
        "max_attempts", _field_default(LabelStudioConfig, "max_attempts"), minimum=1, maximum=20
    )
    section.reject_unknown()
    if token is None:
        return None
    return LabelStudioConfig(url=url, token=token, timeout=timeout, max_attempts=max_attempts)


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
    section.reject_unknown()
    return StateConfig(dir=Path(state_dir).expanduser())


def _read_daemon(section: Section, *, env: Mapping[str, str]) -> DaemonConfig:
    poll_interval = section.number("poll_interval", _DAEMON.poll_interval, minimum=1.0)
    resync_interval = section.number("resync_interval", _DAEMON.resync_interval, minimum=10.0)
    listen = section.string("listen", _DAEMON.listen)
    try:
        parse_listen(listen)
    except ValueError:
        section.error("listen", f'must be "HOST:PORT" or "", got {listen!r}')
    secret = _read_secret(
        section,
        env=env,
        credential=WEBHOOK_SECRET_CREDENTIAL,
        file_key="webhook_secret_file",
        env_var=WEBHOOK_SECRET_ENV,
        inline_key="webhook_secret",
    )
    cycle_timeout = section.number("cycle_timeout", _DAEMON.cycle_timeout, minimum=10.0)
    shutdown_grace = section.number("shutdown_grace", _DAEMON.shutdown_grace, minimum=0.0)
    stale_after = section.number("stale_after", _DAEMON.stale_after, minimum=0.0)
    section.reject_unknown()
    return DaemonConfig(
        poll_interval=poll_interval,
        resync_interval=resync_interval,
        listen=listen,
        webhook_secret=secret,
        cycle_timeout=cycle_timeout,
        shutdown_grace=shutdown_grace,
        stale_after=stale_after,
    )


def _valid_cron(expression: str) -> bool:
    """Exactly what the scheduler will accept, so `check-config` and `run` never disagree."""
    from apscheduler.triggers.cron import CronTrigger

    if len(expression.split()) != 5:
        return False
    try:
        CronTrigger.from_crontab(expression, timezone="UTC")
    except ValueError:
        return False
    return True


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
    if not section.has("id"):
        section.error("id", "is required")
    project_id = section.integer("id", 0, minimum=1)
    model = section.string("model", DEFAULT_FACTORY)
    if ":" not in model and model != ML_BACKEND_MODEL:
        section.error(
            "model",
            f'must look like "package.module:factory" or be "{ML_BACKEND_MODEL}", got {model!r}',
        )
    ml_backend_id = (
        section.integer("ml_backend_id", 0, minimum=1) if section.has("ml_backend_id") else None
    )
    ml_backend = read_ml_backend(section.table("ml_backend"))
    controls = read_controls(section)
    if model != ML_BACKEND_MODEL:
        for key in ("ml_backend_id", "ml_backend"):
            if section.has(key):
                section.error(key, f'applies only with model = "{ML_BACKEND_MODEL}"')
    retrain = _read_retrain(section.table("retrain"))
    predictions = _read_predictions(section.table("predictions"))
    view_section = section.table("view")
    view = ViewConfig(title=view_section.string("title", _VIEW.title) or _VIEW.title)
    view_section.reject_unknown()
    labels = read_labels(section.table("labels"))
    stop = read_stop(section.table("stop"))
    section.reject_unknown()
    if project_id < 1:
        return None
    return ProjectConfig(
        id=project_id,
        model=model,
        ml_backend_id=ml_backend_id,
        ml_backend=ml_backend,
        controls=controls,
        retrain=retrain,
        predictions=predictions,
        view=view,
        labels=labels,
        stop=stop,
    )


def _read_retrain(section: Section) -> RetrainConfig:
    cron = section.optional_string("cron")
    if cron is not None and not _valid_cron(cron):
        section.error("cron", f'must be a 5-field cron expression like "0 3 * * *", got {cron!r}')
    config = RetrainConfig(
        min_new_annotations=section.integer(
            "min_new_annotations", _RETRAIN.min_new_annotations, minimum=1
        ),
        min_interval=section.number("min_interval", _RETRAIN.min_interval, minimum=0.0),
        min_per_class=section.integer("min_per_class", _RETRAIN.min_per_class, minimum=1),
        max_interval=section.optional_number("max_interval", minimum=1.0),
        cron=cron,
    )
    section.reject_unknown()
    return config


def _read_predictions(section: Section) -> PredictionsConfig:
    strategy = section.string("strategy", _PREDICTIONS.strategy)
    if strategy not in STRATEGIES:
        section.error("strategy", f"must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    prefix = section.string("version_prefix", _PREDICTIONS.version_prefix)
    if not prefix or not prefix.replace("-", "").replace("_", "").isalnum():
        section.error("version_prefix", f"must be letters, digits, - or _, got {prefix!r}")
    queue_depth = section.integer("queue_depth", _PREDICTIONS.queue_depth or 0, minimum=0)
    config = PredictionsConfig(
        strategy=strategy,
        keep_versions=section.integer("keep_versions", _PREDICTIONS.keep_versions, minimum=1),
        version_prefix=prefix,
        random_fraction=section.number(
            "random_fraction", _PREDICTIONS.random_fraction, minimum=0.0, maximum=1.0
        ),
        clusters=section.integer("clusters", _PREDICTIONS.clusters, minimum=0, maximum=1000),
        queue_depth=queue_depth or None,  # 0 in the file means "no limit"
        show_predictions=section.boolean("show_predictions", _PREDICTIONS.show_predictions),
        batch_size=section.integer(
            "batch_size", _PREDICTIONS.batch_size, minimum=1, maximum=100_000
        ),
        prune_per_cycle=section.integer("prune_per_cycle", _PREDICTIONS.prune_per_cycle, minimum=0),
    )
    section.reject_unknown()
    return config
