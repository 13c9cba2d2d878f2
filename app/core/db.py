"""Engine and session factory (built in the lifespan) and the per-request session dependency."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any
from weakref import WeakKeyDictionary

from fastapi import Depends, Request
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import AppError
from app.core.metrics import Metrics

# A pooled connection unused for this long is pinged before it is handed out.
PING_IDLE_SECONDS = 10.0


def create_engine(settings: Settings, metrics: Metrics | None = None) -> AsyncEngine:
    """An engine for `DATABASE_URL`: SQLite gets foreign keys, WAL and a busy timeout.

    With `metrics`, every round trip to the database is counted (`db_round_trips_total`).
    """
    url = make_url(settings.DATABASE_URL.get_secret_value())
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        # hide_parameters: a statement's values (messages, emails) never reach an error's text,
        # and so never a log line.
        engine = create_async_engine(url, connect_args={"timeout": 30}, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    else:
        # No pool_pre_ping: it costs a round trip per checkout, several per chat turn. A
        # connection the server closed is dropped at checkout without asking the server
        # (asyncpg notices the closed socket); one idle for a while is pinged first.
        engine = create_async_engine(
            url,
            hide_parameters=True,
            pool_size=settings.DATABASE_POOL_SIZE,
            max_overflow=settings.DATABASE_MAX_OVERFLOW,
        )
        event.listen(engine.sync_engine.pool, "checkout", _check_out)
        event.listen(engine.sync_engine.pool, "checkin", _check_in)
    if metrics is not None:
        _count_round_trips(engine, metrics)
    return engine


def _check_in(_: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _check_out(dbapi_connection: Any, record: Any, _: Any) -> None:
    """Refuse a connection the server has closed (the pool then takes or opens another); ping
    one that sat idle long enough for the server to have restarted meanwhile."""
    is_closed = getattr(getattr(dbapi_connection, "_connection", None), "is_closed", None)
    if callable(is_closed) and is_closed():
        raise DisconnectionError("the database closed this connection")
    idle_since = record.info.get("idle_since")
    if idle_since is not None and time.monotonic() - idle_since > PING_IDLE_SECONDS:
        try:
            dbapi_connection.ping()
        except Exception as exc:
            raise DisconnectionError("the idle connection did not answer a ping") from exc


# Each counted engine's db_round_trips_total children, by kind, for the round trips that do
# not pass through SQLAlchemy's events (app/core/driver.py).
_ROUND_TRIPS: WeakKeyDictionary[Engine, dict[str, Any]] = WeakKeyDictionary()


def count_round_trip(connection: AsyncConnection, kind: str) -> None:
    """Count a round trip made on `connection`'s driver directly (kind: statement, begin,
    commit, rollback)."""
    counters = _ROUND_TRIPS.get(connection.sync_engine)
    if counters is not None:
        counters[kind].inc()


def _count_round_trips(engine: AsyncEngine, metrics: Metrics) -> None:
    counter = metrics.db_round_trips
    statements, begins = counter.labels("statement"), counter.labels("begin")
    commits, rollbacks = counter.labels("commit"), counter.labels("rollback")
    sync_engine = engine.sync_engine
    _ROUND_TRIPS[sync_engine] = {
        "statement": statements,
        "begin": begins,
        "commit": commits,
        "rollback": rollbacks,
    }
    event.listen(sync_engine, "before_cursor_execute", lambda *_: statements.inc())
    for name, count in (("begin", begins), ("commit", commits), ("rollback", rollbacks)):
        event.listen(sync_engine, name, _unless_autocommit(count.inc))


def _unless_autocommit(count: Callable[[], None]) -> Callable[..., None]:
    """A transaction event's handler: in autocommit mode no BEGIN/COMMIT goes to the server."""

    def handler(connection: Connection, *_: Any) -> None:
        if connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            count()

    return handler


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@asynccontextmanager
async def autocommit_session(
    maker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session whose statements each commit on their own: no BEGIN and COMMIT round trips
    around a single read or a single-statement write."""
    async with maker() as session:
        await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        yield session


def engine_of(maker: async_sessionmaker[AsyncSession]) -> AsyncEngine:
    """The engine a session factory binds its sessions to."""
    engine: AsyncEngine = maker.kw["bind"]
    return engine


def create_sessionmaker(
    engine: AsyncEngine, session_class: type[Session] = Session
) -> async_sessionmaker[AsyncSession]:
    """`session_class`: the sync session under each AsyncSession (the app passes the audit
    log's `AuditedSession`)."""
    return async_sessionmaker(
        engine, expire_on_commit=False, autoflush=False, sync_session_class=session_class
    )


async def get_sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    maker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    return maker


SessionmakerDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessionmaker)]


async def get_session(maker: SessionmakerDep) -> AsyncIterator[AsyncSession]:
    """One session and one commit per request, committed before the response is sent."""
    async with maker() as session:
        try:
            yield session
        except AppError as exc:
            await (session.commit() if exc.keep_writes else session.rollback())
            raise
        except BaseException:
            await session.rollback()
            raise
        await session.commit()


# scope="function": the commit runs when the endpoint returns, before the response goes out,
# so a failed commit is reported instead of being hidden behind a 2xx.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
