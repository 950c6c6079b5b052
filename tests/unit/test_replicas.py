"""Project ownership among replicas: the fair-share rules, and the locks in a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from aldaemon.config import load_config
from aldaemon.errors import StateLockedError
from aldaemon.secret import Secret
from aldaemon.store import Store
from aldaemon.store.ownership import ProjectOwnership, project_owners
from aldaemon.sync.replicas import fair_share, plan_ownership
from aldaemon.views import status

PROJECTS = [11, 12, 13, 14, 15]


@pytest.mark.parametrize(
    ("projects", "replicas", "share"), [(12, 3, 4), (5, 2, 3), (1, 4, 1), (0, 2, 0), (3, 0, 3)]
)
def test_fair_share_is_the_ceiling_of_projects_per_live_replica(
    projects: int, replicas: int, share: int
) -> None:
    assert fair_share(projects=projects, replicas=replicas) == share


def test_a_replica_over_its_share_releases_idle_projects_from_the_top() -> None:
    plan = plan_ownership(configured=PROJECTS, held={11, 12, 13, 14, 15}, busy={15}, replicas=2)
    assert (plan.release, plan.candidates, plan.room) == ((13, 14), (), 0)


def test_a_replica_under_its_share_tries_every_project_it_lacks() -> None:
    plan = plan_ownership(configured=PROJECTS, held={12, 99}, busy=set(), replicas=2)
    assert (plan.release, plan.candidates, plan.room) == ((99,), (11, 13, 14, 15), 2)


@pytest.fixture
def replicas(state_dsn: Secret) -> Iterator[list[ProjectOwnership]]:
    opened = [ProjectOwnership(state_dsn, password=None, replica=f"r{i}") for i in (1, 2)]
    try:
        yield opened
    finally:
        for replica in opened:
            replica.close()


def _settle(replicas: list[ProjectOwnership], rounds: int = 3) -> None:
    for _ in range(rounds):
        for replica in replicas:
            replica.rebalance(PROJECTS, busy=())


@pytest.mark.postgres
def test_two_replicas_split_the_projects_and_never_own_one_together(
    replicas: list[ProjectOwnership], state_dsn: Secret
) -> None:
    first, second = replicas
    first.rebalance(PROJECTS, busy=())  # alone so far: it takes them all
    alone = first.held
    _settle(replicas)
    owners = project_owners(state_dsn, password=None)
    assert (
        alone,
        first.held & second.held,
        first.held | second.held,
        sorted([len(first.held), len(second.held)]),
        {pid: name for pid, name in owners.items() if pid in PROJECTS},
        [first.confirm(pid) for pid in sorted(first.held)],
        [second.confirm(pid) for pid in sorted(first.held)],
    ) == (
        frozenset(PROJECTS),
        frozenset(),
        frozenset(PROJECTS),
        [2, 3],
        {pid: ("r1" if pid in first.held else "r2") for pid in PROJECTS},
        [True] * len(first.held),
        [False] * len(first.held),
    )


@pytest.mark.postgres
def test_a_replica_whose_session_ends_loses_its_projects_to_the_other(
    replicas: list[ProjectOwnership], state_dsn: Secret
) -> None:
    first, second = replicas
    _settle(replicas)
    lost = sorted(first.held)
    with psycopg.connect(state_dsn.reveal(), autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'aldaemon replica r1'"
        )
    # The partitioned replica finds out at its next check, before any write.
    confirmed = [first.confirm(pid) for pid in lost]
    second.rebalance(PROJECTS, busy=())
    assert (confirmed, first.held, first.problem is not None, second.held) == (
        [False] * len(lost),
        frozenset(),
        True,
        frozenset(PROJECTS),
    )


@pytest.mark.postgres
def test_replica_stores_share_the_database_and_keep_a_lone_writer_out(state_dsn: Secret) -> None:
    first = Store.connect(state_dsn, shared=True)
    try:
        second = Store.connect(state_dsn, shared=True)
        second.close()
        with pytest.raises(StateLockedError, match="another aldaemon"):
            Store.connect(state_dsn)  # `once` beside running replicas
    finally:
        first.close()
    lone = Store.connect(state_dsn)
    try:
        with pytest.raises(StateLockedError, match="not a replica"):
            Store.connect(state_dsn, shared=True)
    finally:
        lone.close()


@pytest.mark.postgres
def test_status_shows_each_projects_owner(
    tmp_path: Path, replicas: list[ProjectOwnership], state_dsn: Secret
) -> None:
    config_path = tmp_path / "config.toml"
    projects = "".join(f"\n[[projects]]\nid = {pid}\n" for pid in (11, 12, 99))
    config_path.write_text(
        f'[labelstudio]\nurl = "http://127.0.0.1:9"\ntoken = "not-used-here"\n'
        f'[state]\ndir = "{tmp_path / "state"}"\ndsn = "{state_dsn.reveal()}"\n{projects}'
    )
    first, second = replicas
    first.rebalance([11], busy=())
    second.rebalance([12], busy=())
    report = status.collect(load_config(config_path, env={}))
    shown = status.render_text(report)
    assert ([p["owner"] for p in report["projects"]], "project 11  owned by r1" in shown) == (
        ["r1", "r2", None],
        True,
    )
