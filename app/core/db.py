"""Engine and session factory (built in the lifespan) and the per-request session dependency."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.core.config import Settings
from app.core.errors import AppError


def create_engine(settings: Settings) -> AsyncEngine:
    """An engine for `DATABASE_URL`: SQLite gets foreign keys, WAL and a busy timeout."""
    url = make_url(settings.DATABASE_URL.get_secret_value())
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        # hide_parameters: a statement's values (messages, emails) never reach an error's text,
        # and so never a log line.
        engine = create_async_engine(url, connect_args={"timeout": 30}, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url,
        hide_parameters=True,
        pool_pre_ping=True,
        pool_size=settings.DATABASE_POOL_SIZE,
        max_overflow=settings.DATABASE_MAX_OVERFLOW,
    )


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def get_sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
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
