"""Shared fixtures: one real Label Studio per test session, a fresh project per test.

Set ALDAEMON_TEST_LS_URL, ALDAEMON_TEST_LS_TOKEN (legacy token) and ALDAEMON_TEST_LS_PAT to
reuse a server that is already running; otherwise the session starts its own (about 40 s
of migrations on first start) and stops it at the end.

`label_studio_pg` is a second server on PostgreSQL (a fresh database, dropped at the end),
for the behaviours that differ by database (commit order, NULL ordering). `any_store` is
a store on each of aldaemon's own backends (SQLite, then PostgreSQL in a fresh database,
`state_database`). Without a usable PostgreSQL those tests skip, except in CI
(`CI=true`), where they fail: CI must run them.
ALDAEMON_TEST_PG_HOST/_PORT/_USER/_PASSWORD say where PostgreSQL is (127.0.0.1:5432, user
postgres or root, trust auth by default); ALDAEMON_TEST_LS_PG_URL with
ALDAEMON_TEST_LS_PG_TOKEN and ALDAEMON_TEST_LS_PG_PAT reuse a running one.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest
from hypothesis import settings

from aldaemon.secret import Secret
from aldaemon.store import Store
from tests.daskcluster import DaskCluster, require_distributed
from tests.lsserver import (
    DEFAULT_LABEL_CONFIG,
    ExternalLabelStudioServer,
    LabelStudioClient,
    LabelStudioServer,
    PostgresDatabase,
    PostgresSettings,
    PostgresUnavailable,
    missing_postgres_outcome,
)

MakeProject = Callable[..., int]

# No per-example deadline: on a shared, loaded machine a 200 ms stall is scheduling, not a
# slow property (Hypothesis already drops the deadline when CI=true; this makes laptops
# behave the same).
settings.register_profile("aldaemon", parent=settings.default, deadline=None)
settings.load_profile("aldaemon")


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    """The Label Studio server every `labelstudio` test talks to."""
    external_url = os.environ.get("ALDAEMON_TEST_LS_URL")
    if external_url:
        yield ExternalLabelStudioServer(
            url=external_url,
            legacy_token=os.environ["ALDAEMON_TEST_LS_TOKEN"],
            pat=os.environ["ALDAEMON_TEST_LS_PAT"],
        )
        return
    data_dir: Path = tmp_path_factory.mktemp("label-studio-data")
    server = LabelStudioServer(data_dir=data_dir)
    server.start()
    try:
        _ = server.pat  # create it now, so a failure shows at setup and not mid-test
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def label_studio_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    """A second Label Studio, on PostgreSQL; first start migrates a fresh database."""
    external_url = os.environ.get("ALDAEMON_TEST_LS_PG_URL")
    if external_url:
        yield ExternalLabelStudioServer(
            url=external_url,
            legacy_token=os.environ["ALDAEMON_TEST_LS_PG_TOKEN"],
            pat=os.environ["ALDAEMON_TEST_LS_PG_PAT"],
        )
        return
    database = fresh_postgres_database("ls", purpose="Label Studio on PostgreSQL")
    server = LabelStudioServer(
        data_dir=tmp_path_factory.mktemp("label-studio-pg-data"),
        extra_env=database.label_studio_env(),
    )
    try:
        server.start()
        _ = server.pat
        yield server
    finally:
        server.stop()
        database.drop()


def fresh_postgres_database(prefix: str, *, purpose: str) -> PostgresDatabase:
    """A new, uniquely named database; skips (fails when CI=true) without PostgreSQL."""
    settings = PostgresSettings.from_env(os.environ)
    name = f"aldaemon_test_{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        database = PostgresDatabase.connect(settings, name=name)
        database.create()
    except PostgresUnavailable as error:
        reason = f"{purpose} needs a usable PostgreSQL: {error}"
        if missing_postgres_outcome(os.environ) == "fail":
            pytest.fail(f"{reason} (CI=true: PostgreSQL tests must not be skipped)")
        pytest.skip(reason)
    return database


@pytest.fixture(scope="session")
def state_database() -> Iterator[PostgresDatabase]:
    """A fresh database for the store's PostgreSQL backend, dropped at the end."""
    database = fresh_postgres_database("state", purpose="the PostgreSQL store")
    try:
        yield database
    finally:
        database.drop()


@pytest.fixture
def state_dsn(state_database: PostgresDatabase) -> Secret:
    """The DSN of an empty schema: each test starts from a database nothing migrated yet."""
    state_database.reset()
    return Secret(state_database.dsn)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A new, locked store on each backend: SQLite in a temporary dir, then PostgreSQL."""
    if request.param == "sqlite":
        opened = Store.open(tmp_path / "state")
    else:
        opened = Store.connect(request.getfixturevalue("state_dsn"))
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """A Dask scheduler and 2 single-threaded workers on loopback, for the whole session.

    Skips without the distributed package, except with CI=true (then it fails)."""
    require_distributed()
    cluster = DaskCluster(tmp_path_factory.mktemp("dask"), workers=2)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def ls_client(label_studio: LabelStudioServer) -> LabelStudioClient:
    """A plain synchronous client for setting up data, independent of the gateway."""
    return LabelStudioClient(label_studio)


_project_numbers = itertools.count(1)


@pytest.fixture
def make_project(ls_client: LabelStudioClient, request: pytest.FixtureRequest) -> MakeProject:
    """Factory: `make_project(tasks=[{"text": ...}], label_config=...) -> project id`."""
    return project_factory(ls_client, request)


def project_factory(ls_client: LabelStudioClient, request: pytest.FixtureRequest) -> MakeProject:
    """`make_project` for any server: a module that swaps the server reuses it."""

    def make(
        tasks: Sequence[Mapping[str, object]] = (),
        *,
        label_config: str = DEFAULT_LABEL_CONFIG,
        title: str | None = None,
    ) -> int:
        number = next(_project_numbers)
        project_title = title or f"{request.node.name[:40]} #{number}"
        project_id = ls_client.create_project(title=project_title, label_config=label_config)
        if tasks:
            ls_client.import_tasks(project_id, tasks)
        return project_id

    return make
