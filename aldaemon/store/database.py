"""What the table classes need from a database, and the base class they share.

The tables (annotations.py, versions.py, meta.py, backend.py, team.py) are written once,
in the SQL that SQLite and PostgreSQL both speak, with `?` placeholders. A backend
(sqlite.py, postgres.py) provides a `Database`: short transactions that yield a
`Connection` (`execute`, `executemany`), and the translation of its own errors into ours.
What the two dialects spell differently lives in the backends and in `migrations.py`:

    placeholders      `?` everywhere; the PostgreSQL connection rewrites them to `%s`
    durability        SQLite: synchronous FULL/NORMAL per transaction; PostgreSQL:
                      synchronous_commit on/off per transaction (same promise)
    exclusive writes  SQLite: BEGIN IMMEDIATE; PostgreSQL: row locks, and an advisory
                      transaction lock around migrations
    schema types      migrations.py: INTEGER -> BIGINT, REAL -> DOUBLE PRECISION, TEXT
                      -> TEXT COLLATE "C" (byte order, as SQLite compares)
    rowid             SQLite's implicit insertion order; PostgreSQL tables get an
                      explicit `rowid` identity column of the same name
    JSON              stored as TEXT, encoded in Python on both; the one SQL JSON call
                      (migration 3) is spelled per dialect
    errors            each backend's integrity error -> ConstraintViolation; an unusable
                      database -> StateError naming it (never a password)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, Self, TypeVar

from aldaemon.errors import StateError
from aldaemon.secret import Secret


class ConstraintViolation(Exception):
    """A write broke a key or a check of the schema (a bug in the caller, never retried)."""


@dataclass(frozen=True)
class DriverErrors:
    """A driver's exception classes: a broken key or check, an unusable database."""

    integrity: type[Exception]
    unusable: tuple[type[Exception], ...]  # gone, locked, full, refused: an operator fixes it


@contextmanager
def driver_errors(
    kinds: DriverErrors, location: str, verb: str, detail: Callable[[Exception], str] = str
) -> Iterator[None]:
    """The driver's errors as ours (ConstraintViolation, StateError), naming the database.

    `detail` is what of the driver's text a message keeps; the driver's exception is not
    chained (its text may hold what `detail` left out, such as a password).
    """
    try:
        yield
    except kinds.integrity as exc:
        raise ConstraintViolation(f"{location}: {detail(exc)}") from None
    except kinds.unusable as exc:
        raise StateError(f"cannot {verb} {location}: {detail(exc)}") from None


@dataclass(frozen=True)
class StoreAddress:
    """Where a store is, to open it again in another process (a model job): a SQLite
    state directory, or a PostgreSQL DSN with its password (both Secrets: never shown)."""

    state_dir: Path | None = None
    dsn: Secret | None = None
    password: Secret | None = None


class Rows(Protocol):
    """What a statement returns: its rows, and how many rows it changed."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """A connection inside one transaction, taking `?` placeholders."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Rows: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> object: ...


class Database(Protocol):
    """One backend's plumbing: its transactions, its name in messages, closing."""

    @property
    def location(self) -> str:
        """What messages call it: a file path, or a DSN without its password."""
        ...

    @property
    def address(self) -> StoreAddress:
        """How another process opens this same database."""
        ...

    def transaction(self, *, durable: bool) -> AbstractContextManager[Connection]:
        """One short write transaction; `durable` waits for the disk before returning."""
        ...

    def reading(self) -> AbstractContextManager[Connection]:
        """A consistent snapshot for multi-query reads."""
        ...

    def refresh_statistics(self, tables: Sequence[str]) -> list[str]:
        """Bring the query planner's statistics of `tables` up to date where they are
        missing or stale; the names of the tables it refreshed."""
        ...

    def close(self) -> None: ...


class Tables:
    """The base of every table class: a `Database` and the helpers they share."""

    def __init__(self, database: Database) -> None:
        """Use `Store.open` or `Store.connect`; this only wires an opened database."""
        self._database = database
        self.address: StoreAddress = database.address  # how another process opens it

    @property
    def location(self) -> str:
        return self._database.location

    def close(self) -> None:
        """Close the database and release its lock; closing twice is harmless."""
        self._database.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"

    def _transaction(self, *, durable: bool = False) -> AbstractContextManager[Connection]:
        return self._database.transaction(durable=durable)

    def _reading(self) -> AbstractContextManager[Connection]:
        return self._database.reading()

    def _version_rows(
        self, table: VersionTable[_Record], *, project_id: int, version: str
    ) -> list[_Record]:
        """The records of a per-version table, in the table's order."""
        columns = [spec.name for spec in fields(table.record)]
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(columns)} FROM {table.name} "
                f"WHERE project_id = ? AND version = ? ORDER BY {table.order_by}",
                (project_id, version),
            ).fetchall()
        return [
            table.record(
                **{
                    column: table.decoders.get(column, _stored_as_is)(value)
                    for column, value in zip(columns, row, strict=True)
                }
            )
            for row in rows
        ]

    def _drop_version_rows(
        self, table: VersionTable[Any], *, project_id: int, version: str
    ) -> None:
        """Delete a version's rows from a per-version table, durably."""
        with self._transaction(durable=True) as conn:
            conn.execute(
                f"DELETE FROM {table.name} WHERE project_id = ? AND version = ?",
                (project_id, version),
            )


if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_Record = TypeVar("_Record", bound="DataclassInstance")


@dataclass(frozen=True)
class VersionTable(Generic[_Record]):
    """A per-version table (predictions, backend_predictions) read back as records: its
    columns are the fields of `record`, in order, and `decoders` turn the columns stored
    encoded (JSON) back into the fields' values."""

    name: str
    record: type[_Record]
    order_by: str
    decoders: Mapping[str, Callable[[Any], Any]]


def _stored_as_is(value: Any) -> Any:
    return value


_IDS_PER_QUERY = 500  # well under SQLite's bound-parameter limit on every version


def chunks(ids: Sequence[int], size: int = _IDS_PER_QUERY) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def placeholders(count: int) -> str:
    return ", ".join("?" * count)
