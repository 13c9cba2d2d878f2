"""The chat hot path's prebuilt statements, run on Postgres by asyncpg itself.

SQLAlchemy builds each of them once and compiles it once (the SQL is exactly what SQLAlchemy
would send). Running that SQL on the pooled connection's asyncpg driver skips what SQLAlchemy
does on every execution (the cache key, parameter and result processing, the execution
context): 14% of a chat turn's instructions (README, "Performance").

This is only safe where SQLAlchemy would not begin a transaction of its own first, so it
happens on connections in AUTOCOMMIT mode: a single statement outside any transaction, or
inside `transaction()`, whose BEGIN and COMMIT are asyncpg's. Anywhere else (SQLite, or a
session in an ordinary SQLAlchemy transaction) `run` executes the statement through
SQLAlchemy as usual. Either way the round trips are counted in `db_round_trips_total`, and
asyncpg's errors are raised as SQLAlchemy's (`DBAPIError`, parameters hidden, a lost connection
marked as such), so the rest of the app handles one kind: a lost database is a 503, as anywhere.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import asyncpg
from sqlalchemy import Executable
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from app.core.db import count_round_trip, engine_of

Params = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None

logger = logging.getLogger(__name__)

# InternalClientError: asyncpg's protocol state broke (seen when the server drops the connection
# in the middle of a statement); the connection is not to be used again.
_DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
    TimeoutError,
)
_CONNECTION_LOST = (
    asyncpg.exceptions.InternalClientError,
    OSError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,  # includes ConnectionDoesNotExistError
    asyncpg.exceptions.OperatorInterventionError,  # the server shut down or killed the backend
)


class Prebuilt:
    """A statement built once, with its SQL compiled once per dialect."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._compiled: dict[str, tuple[str, tuple[str, ...], dict[str, Any]]] = {}

    def compiled(self, dialect: Dialect) -> tuple[str, tuple[str, ...], dict[str, Any]]:
        """(SQL with positional parameters, the parameters' names in order, the values of the
        parameters the statement itself fixes)."""
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled = self.statement.compile(dialect=dialect)  # type: ignore[attr-defined]
            if "POSTCOMPILE" in compiled.string:
                raise ValueError("a prebuilt statement cannot have an expanding IN parameter")
            fixed = {
                name: bind.effective_value
                for name, bind in compiled.binds.items()
                if not bind.required
            }
            found = (compiled.string, tuple(compiled.positiontup or ()), fixed)
            self._compiled[dialect.name] = found
        return found


def on_driver(connection: AsyncConnection) -> bool:
    """Whether `run` hands this connection's statements to asyncpg directly: no SQLAlchemy
    type runs on their parameters then (a JSON value must be passed as its text)."""
    options = connection.sync_connection.get_execution_options()  # type: ignore[union-attr]
    return connection.dialect.name == "postgresql" and options.get("isolation_level") == (
        "AUTOCOMMIT"
    )


async def run(connection: AsyncConnection, prebuilt: Prebuilt, params: Params = None) -> list[Any]:
    """The rows the statement returns (none without RETURNING); a list of parameter sets runs
    it once per set in one round trip. Rows are read by column name."""
    if not on_driver(connection):
        result = await connection.execute(prebuilt.statement, params)
        return list(result.mappings()) if result.returns_rows else []
    sql, names, fixed = prebuilt.compiled(connection.dialect)
    driver = await _driver(connection)
    count_round_trip(connection, "statement")
    with _sqlalchemy_errors(driver, sql):
        if isinstance(params, Sequence):
            await driver.executemany(sql, [_values(names, fixed, values) for values in params])
            return []
        rows: list[Any] = await driver.fetch(sql, *_values(names, fixed, params or {}))
    return rows


def _values(names: tuple[str, ...], fixed: dict[str, Any], given: Mapping[str, Any]) -> list[Any]:
    return [given[name] if name in given else fixed[name] for name in names]


@asynccontextmanager
async def transaction(maker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session whose work is one transaction, committed at the end (rolled back on an
    error). On Postgres the BEGIN and COMMIT are asyncpg's, on a connection SQLAlchemy sees in
    AUTOCOMMIT mode: ORM statements and `run`'s prebuilt ones both go inside it."""
    if engine_of(maker).dialect.name != "postgresql":
        async with maker() as session, session.begin():
            yield session
        return
    async with maker() as session:  # autocommit_session's work, one context manager less
        connection = await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        driver = await _driver(connection)
        block = driver.transaction()
        count_round_trip(connection, "begin")
        with _sqlalchemy_errors(driver, "BEGIN"):
            await block.start()
        try:
            yield session
            await session.flush()  # ORM changes the caller left unflushed
        except BaseException:
            count_round_trip(connection, "rollback")
            try:
                with _sqlalchemy_errors(driver, "ROLLBACK"):
                    await block.rollback()
            except DBAPIError as exc:  # the error that got us here is the one to report
                logger.warning("rollback failed: %s", type(exc.orig).__name__)
            if driver.is_in_transaction() or driver.is_closed():
                await connection.invalidate()  # never back into the pool mid-transaction
            raise
        count_round_trip(connection, "commit")
        with _sqlalchemy_errors(driver, "COMMIT"):
            await block.commit()
        # SQLAlchemy did not see this commit: run its after-commit hooks (the wake-ups of
        # this process's relay and worker) as it would have.
        session.sync_session.dispatch.after_commit(session.sync_session)


async def _driver(connection: AsyncConnection) -> Any:
    """The asyncpg connection under `connection`."""
    driver = (await connection.get_raw_connection()).driver_connection
    assert driver is not None  # noqa: S101 - a checked-out connection has one
    return driver


@contextmanager
def _sqlalchemy_errors(driver: Any, statement: str) -> Iterator[None]:
    try:
        yield
    except _DRIVER_ERRORS as exc:
        lost = driver.is_closed() or isinstance(exc, _CONNECTION_LOST)
        raise DBAPIError(
            statement, None, exc, hide_parameters=True, connection_invalidated=lost
        ) from exc
