"""Which replica owns which project: one session advisory lock per project in PostgreSQL.

Replicas (`aldaemon run` processes sharing one `[state] dsn`) split the projects. A
replica owns a project while its ownership session holds the advisory lock
`(OWNERSHIP_LOCK_CLASS, project id)`; it takes locks with `pg_try_advisory_lock`, never
waiting, and lets them go with `pg_advisory_unlock`. The session is a connection of its
own (not the store's, which reconnects under load), named `aldaemon replica NAME`, so:

- a replica that dies, is killed, or loses its network loses its session, and
  PostgreSQL frees all its locks at once: nothing expires on a clock of ours;
- who is alive is who has such a session (`pg_stat_activity`), and who owns a project is
  who holds its lock (`pg_locks`): `status` reads both, nothing is written;
- before each write to Label Studio, `confirm` asks PostgreSQL whether THIS session still
  holds the project's lock: a replica whose session was ended (partition, long pause:
  the server terminated it, or an operator did) finds out there, before the write,
  because its connection is gone or its locks are.

Why not lease rows (`FOR UPDATE SKIP LOCKED` on an expiry column): a lease needs a
duration, renewals, and clocks that agree; a dead replica's projects wait for the lease
to run out, and a paused one may write after its lease ran out unless every write also
compares the lease. The session lock ends exactly when the session does, and the check
before a write is one indexed read of `pg_locks`.

The decisions (fair share, what to release) are `sync.replicas`'; this module only does
the I/O, and `service/replicas.py` runs a round every poll.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog

from aldaemon.errors import StateError
from aldaemon.secret import Secret
from aldaemon.store.postgres import open_session, public_dsn, scrubbed
from aldaemon.sync.replicas import plan_ownership

log = structlog.get_logger(__name__)

OWNERSHIP_LOCK_CLASS = 0x616C6470  # "aldp": the first key of every project's lock
APPLICATION_PREFIX = "aldaemon replica "
# A write to a partitioned PostgreSQL fails after this long instead of TCP's minutes.
_SESSION_OPTIONS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,  # milliseconds
}
_THIS_DATABASE = "(SELECT oid FROM pg_database WHERE datname = current_database())"
_PROJECT_LOCK = (
    "l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
    f"AND l.classid::bigint = {OWNERSHIP_LOCK_CLASS} AND l.database = {_THIS_DATABASE}"
)


@dataclass(frozen=True)
class OwnershipRound:
    """What one round changed, and how many replicas it counted."""

    acquired: tuple[int, ...] = ()
    released: tuple[int, ...] = ()
    replicas: int = 0


class ProjectOwnership:
    """This replica's ownership session and the projects it holds."""

    def __init__(self, dsn: Secret, *, password: Secret | None, replica: str) -> None:
        self.replica = replica
        self._dsn = dsn
        self._password = password
        self._location = public_dsn(dsn.reveal())
        self._conn: psycopg.Connection[Any] | None = None
        self._held: frozenset[int] = frozenset()
        self.problem: str | None = "no ownership round yet"
        self.owners: dict[int, str] = {}  # every replica's projects, as of the last round
        self._mutex = threading.Lock()

    @property
    def held(self) -> frozenset[int]:
        """The projects the last round (or check) found this replica holding."""
        return self._held

    def holds(self, project_id: int) -> bool:
        return project_id in self._held

    def rebalance(self, configured: Iterable[int], *, busy: Collection[int]) -> OwnershipRound:
        """Release what is over the fair share, then try to take up to it; never waits."""
        with self._mutex:
            try:
                conn = self._session()
                held = {row[0] for row in conn.execute(_HELD_BY_ME).fetchall()}
                counted = conn.execute(_LIVE_REPLICAS, (f"{APPLICATION_PREFIX}%",)).fetchone()
                replicas = int(counted[0]) if counted else 1
                plan = plan_ownership(
                    configured=configured, held=held, busy=busy, replicas=replicas
                )
                for project_id in plan.release:
                    conn.execute(
                        "SELECT pg_advisory_unlock(%s::integer, %s::integer)", _key(project_id)
                    )
                    held.discard(project_id)
                acquired: list[int] = []
                for project_id in plan.candidates:
                    if len(acquired) >= plan.room:
                        break
                    taken = conn.execute(
                        "SELECT pg_try_advisory_lock(%s::integer, %s::integer)", _key(project_id)
                    ).fetchone()
                    if taken is not None and taken[0]:
                        acquired.append(project_id)
                self.owners = _owners(conn)
            except psycopg.Error as exc:
                self._lose(exc)
                return OwnershipRound()
            self._held = frozenset(held | set(acquired))
            self.problem = None
        changed = OwnershipRound(acquired=tuple(acquired), released=plan.release, replicas=replicas)
        if acquired or plan.release:
            log.info(
                "ownership.changed",
                replica=self.replica,
                acquired=list(acquired),
                released=list(plan.release),
                owned=sorted(self._held),
                replicas=replicas,
            )
        return changed

    def confirm(self, project_id: int) -> bool:
        """Does this replica's session, right now, still hold the project's lock?"""
        with self._mutex:
            if self._conn is None or self._conn.closed:
                self._held = frozenset()
                return False
            try:
                row = self._conn.execute(
                    f"SELECT count(*) FROM pg_locks l WHERE {_PROJECT_LOCK} "
                    "AND l.pid = pg_backend_pid() AND l.objid::bigint = %s",
                    (project_id,),
                ).fetchone()
            except psycopg.Error as exc:
                self._lose(exc)
                return False
            if row is None or not row[0]:
                self._held = self._held - {project_id}
                return False
            return True

    def close(self) -> None:
        """End the session: every lock it holds is released with it."""
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._held = frozenset()

    def _session(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = open_session(
                self._dsn,
                self._password,
                application_name=APPLICATION_PREFIX + self.replica,
                **_SESSION_OPTIONS,
            )
        return self._conn

    def _lose(self, exc: psycopg.Error) -> None:
        """The session broke: own nothing until a round opens a new one."""
        self.problem = (
            f"no PostgreSQL at {self._location}: {scrubbed(exc, self._dsn, self._password)}"
        )
        if self._held or self._conn is not None:
            log.error(
                "ownership.lost",
                replica=self.replica,
                projects=sorted(self._held),
                error=self.problem,
                action="no writes to these projects until this replica owns them again",
            )
        self._held = frozenset()
        self.owners = {}
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def project_owners(dsn: Secret, *, password: Secret | None) -> dict[int, str]:
    """Which replica owns which project now (projects nobody owns are absent)."""
    try:
        with open_session(dsn, password, application_name="aldaemon status") as conn:
            return _owners(conn)
    except psycopg.Error as exc:
        raise StateError(
            f"cannot read the project owners from {public_dsn(dsn.reveal())}: "
            f"{scrubbed(exc, dsn, password)}"
        ) from None


def _owners(conn: psycopg.Connection[Any]) -> dict[int, str]:
    rows = conn.execute(
        "SELECT l.objid::bigint, a.application_name FROM pg_locks l "
        f"JOIN pg_stat_activity a ON a.pid = l.pid WHERE {_PROJECT_LOCK}"
    ).fetchall()
    return {int(pid): str(name).removeprefix(APPLICATION_PREFIX) for pid, name in rows}


def _key(project_id: int) -> tuple[int, int]:
    return (OWNERSHIP_LOCK_CLASS, project_id)


_HELD_BY_ME = (
    f"SELECT l.objid::bigint FROM pg_locks l WHERE {_PROJECT_LOCK} AND l.pid = pg_backend_pid()"
)
_LIVE_REPLICAS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND application_name LIKE %s"
)
