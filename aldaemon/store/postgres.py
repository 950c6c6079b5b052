"""The PostgreSQL backend (psycopg 3): the same tables and migrations, in a shared database.

Chosen by `[state] dsn`. This module is the backend's plumbing (see database.py): the
connection, its lock, the short transactions the table classes write in, and the
translation of `?` placeholders and of psycopg's errors.

One daemon per database, or replicas. A daemon's store takes a session-level advisory lock
(`pg_try_advisory_lock`) when it connects and holds it while its connection lives;
PostgreSQL releases it when the session ends, even when the process is killed, so a
stale lock never blocks a restart. A second daemon on the same database is refused
with StateLockedError naming the holder (its application_name says pid and host).
Replicas (`aldaemon run`, any number) take the same lock in shared mode and split the
projects with per-project locks (ownership.py).
Read-only commands (`status`, `report`) connect without the lock, as they open a SQLite
file beside the daemon. A connection that broke (PostgreSQL restarted) is replaced at
the next call, and the lock is taken again first: if another daemon took it meanwhile,
this one stops with StateLockedError instead of writing beside it.

Durability: a write that precedes a Label Studio call commits with
`synchronous_commit = on` (the default: it waits for the WAL flush); the others with
`off`, which, like SQLite's `synchronous=NORMAL`, can lose the last commits on a server
crash but never corrupts.

The password never reaches a message: `location` is the DSN without it, and psycopg's
error texts are scrubbed of it before they become ours.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import lru_cache
from typing import Any, Self

import psycopg
import psycopg.conninfo
import psycopg.errors
import structlog
from psycopg.pq import TransactionStatus

from aldaemon.errors import StateError, StateLockedError
from aldaemon.secret import Secret
from aldaemon.store.database import DriverErrors, StoreAddress, driver_errors
from aldaemon.store.migrations import apply_migrations

log = structlog.get_logger(__name__)

# Advisory lock keys, per database: "aldaemon" and "aldaemon migrations" in ASCII.
DAEMON_LOCK_KEY = 0x616C6461656D6F6E
_MIGRATION_LOCK_KEY = 0x616C646D69677261
_PSYCOPG_ERRORS = DriverErrors(
    integrity=psycopg.IntegrityError,
    unusable=(
        psycopg.OperationalError,
        psycopg.errors.InsufficientPrivilege,  # may not create tables, say
        psycopg.errors.InvalidSchemaName,  # no schema on its search_path to create them in
    ),
)
# Without parameters, several statements travel in one round trip.
_BEGIN_DURABLE = "BEGIN"
_BEGIN_WRITE = "BEGIN; SET LOCAL synchronous_commit = off"
_BEGIN_READ = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
# A table's statistics are stale when the planner has none (reltuples -1: never analyzed)
# or when more rows changed since its last analysis than autovacuum's default threshold
# would let pass (50 rows + a tenth of the table), counted at least in thousands.
_STALE_STATISTICS = (
    "SELECT c.relname FROM pg_class c "
    "JOIN pg_stat_user_tables s ON s.relid = c.oid "
    "WHERE s.schemaname = current_schema() AND c.relname = ANY(?) "
    "AND (c.reltuples < 0 OR s.n_mod_since_analyze > GREATEST(1000, c.reltuples / 10)) "
    "ORDER BY c.relname"
)
_CONNECT_TIMEOUT = 10  # seconds; libpq's default is to wait forever


def public_dsn(dsn: str) -> str:
    """The DSN as messages show it: `postgresql://user@host:port/dbname`, no password.

    libpq's own parse error is left out: it quotes the text it choked on, which may be
    the password.
    """
    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise StateError(
            "[state] dsn is not a PostgreSQL connection string; write it as "
            '"postgresql://USER@HOST:PORT/DBNAME"'
        ) from None
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host') or ''}{port}/{parts.get('dbname') or ''}"


def open_session(
    dsn: Secret, password: Secret | None, *, application_name: str, **options: Any
) -> psycopg.Connection[Any]:
    """A new autocommit session named `application_name` (libpq `options` added)."""
    return psycopg.connect(
        dsn.reveal(),
        password=None if password is None else password.reveal(),
        autocommit=True,
        connect_timeout=_CONNECT_TIMEOUT,
        application_name=application_name[:63],
        **options,
    )


@lru_cache(maxsize=512)
def _psycopg_sql(sql: str) -> str:
    """Our `?` placeholders as psycopg's `%s` (a literal % doubled first)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _Statements:
    """A psycopg connection that takes the table classes' `?` statements."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> psycopg.Cursor[Any]:
        return self._conn.execute(_psycopg_sql(sql), tuple(parameters))

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> None:
        rows = [tuple(row) for row in parameters]
        if rows:
            with self._conn.cursor() as cursor:
                cursor.executemany(_psycopg_sql(sql), rows)


class PostgresDatabase:
    """One psycopg connection, its advisory lock, and the short transactions on it."""

    def __init__(
        self, *, dsn: Secret, password: Secret | None, lock: bool, shared: bool = False
    ) -> None:
        """Use `connect`, which also checks and migrates."""
        self._dsn = dsn
        self._password = password
        self._lock = lock
        self._shared = shared
        self._location = public_dsn(dsn.reveal())
        self._conn: psycopg.Connection[Any] | None = None
        self._closed = False
        self._mutex = threading.RLock()

    @classmethod
    def connect(
        cls,
        dsn: Secret,
        *,
        password: Secret | None = None,
        lock: bool = True,
        shared: bool = False,
    ) -> Self:
        """Connect, take the daemon lock (`lock=True`), and migrate the schema.

        `shared=True` takes the lock in shared mode: replicas (`aldaemon run`) hold it
        together, each owning its projects (store/ownership.py), and any of them keeps a
        command that wants the database alone (`once`, say) out, and the other way round.
        """
        database = cls(dsn=dsn, password=password, lock=lock, shared=shared)
        with database._postgres_errors("connect to"):
            database._conn = database._open()
            try:
                with database._conn.transaction():
                    database._conn.execute(
                        "SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,)
                    )
                    applied = apply_migrations(
                        _Statements(database._conn),
                        dialect="postgresql",
                        location=database.location,
                    )
            except BaseException:
                database.close()
                raise
        if applied:
            log.info("store.migrated", dsn=database.location, applied=applied)
        log.debug("store.opened", dsn=database.location, locked=lock)
        return database

    @property
    def location(self) -> str:
        return self._location

    @property
    def address(self) -> StoreAddress:
        return StoreAddress(dsn=self._dsn, password=self._password)

    def close(self) -> None:
        """Close the connection, which ends the session and so releases its lock."""
        with self._mutex:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def transaction(self, *, durable: bool) -> AbstractContextManager[_Statements]:
        return self._within("write", _BEGIN_DURABLE if durable else _BEGIN_WRITE)

    def reading(self) -> AbstractContextManager[_Statements]:
        return self._within("read", _BEGIN_READ)

    def refresh_statistics(self, tables: Sequence[str]) -> list[str]:
        """ANALYZE the tables whose planner statistics are missing or stale.

        Autovacuum does this on its own within a minute (its default); with autovacuum off,
        or before it came round after a bulk first sync, PostgreSQL plans the pool's reads
        as if every table held one row: a sort of every task after the cursor for each
        chunk (BENCHMARKS.md, "The pool chunk read with and without fresh statistics").
        """
        with self._within("analyze", _BEGIN_WRITE) as conn:
            stale = [str(row[0]) for row in conn.execute(_STALE_STATISTICS, (list(tables),))]
            for table in stale:
                conn.execute(f"ANALYZE {table}")  # a name from pg_class, one of `tables`
        return stale

    # --- plumbing -----------------------------------------------------------------------

    @contextmanager
    def _within(self, verb: str, begin: str) -> Iterator[_Statements]:
        """One transaction opened by `begin` (one round trip, settings included)."""
        with self._mutex, self._postgres_errors(verb):
            conn = self._live_connection()
            conn.execute(begin)
            try:
                yield _Statements(conn)
                conn.execute("COMMIT")
            except BaseException:
                if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
                    conn.execute("ROLLBACK")
                raise

    def _open(self) -> psycopg.Connection[Any]:
        """A new session, holding the daemon lock when this store is the daemon's."""
        conn = open_session(
            self._dsn,
            self._password,
            application_name=f"aldaemon pid {os.getpid()} on {socket.gethostname()}",
        )
        if self._lock:
            try:
                self._take_lock(conn)
            except BaseException:
                conn.close()
                raise
        return conn

    def _take_lock(self, conn: psycopg.Connection[Any]) -> None:
        take = "pg_try_advisory_lock_shared" if self._shared else "pg_try_advisory_lock"
        row = conn.execute(f"SELECT {take}(%s)", (DAEMON_LOCK_KEY,)).fetchone()
        if row is not None and row[0]:
            return
        holder = conn.execute(
            "SELECT a.application_name, a.pid FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
            "AND l.granted AND l.database = (SELECT oid FROM pg_database "
            "WHERE datname = current_database()) "
            "AND ((l.classid::bigint << 32) | l.objid::bigint) = %s",
            (DAEMON_LOCK_KEY,),
        ).fetchone()
        who = f"{holder[0] or 'unknown'}, PostgreSQL backend {holder[1]}" if holder else "unknown"
        if self._shared:
            raise StateLockedError(
                f"an aldaemon that is not a replica ({who}) holds the lock on "
                f"{self.location}; replicas start once it has finished"
            )
        raise StateLockedError(
            f"another aldaemon ({who}) holds the lock on {self.location}; stop it first, "
            "or give this one its own database"
        )

    def _live_connection(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise StateError(f"the store at {self.location} is closed")
        if self._conn is None or self._conn.closed:
            if self._conn is not None:
                log.warning("store.reconnecting", dsn=self.location)
            self._conn = None
            self._conn = self._open()
        return self._conn

    def _postgres_errors(self, verb: str) -> AbstractContextManager[None]:
        """psycopg's errors as ours, naming the database, never its password."""
        return driver_errors(_PSYCOPG_ERRORS, self.location, verb, self._scrub)

    def _scrub(self, exc: Exception) -> str:
        return scrubbed(exc, self._dsn, self._password)


def scrubbed(exc: Exception, dsn: Secret, password: Secret | None) -> str:
    """The first line of an error, with the password (if libpq echoed it) masked."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    for secret in (password, dsn):
        if secret is not None and secret.reveal():
            text = text.replace(secret.reveal(), "***")
    in_dsn = psycopg.conninfo.conninfo_to_dict(dsn.reveal()).get("password")
    return text.replace(str(in_dsn), "***") if in_dsn else text
