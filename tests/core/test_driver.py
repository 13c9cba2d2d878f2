"""Prebuilt statements and the hot path's transaction (app/core/driver.py), on SQLite and on
Postgres (where they run on asyncpg directly): one atomic transaction with the ORM's work,
counted round trips, and SQLAlchemy's own path wherever asyncpg cannot be used safely."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from fastapi import FastAPI
from sqlalchemy import bindparam, func, insert, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.db import create_engine
from app.core.driver import Prebuilt, _sqlalchemy_errors, run, transaction
from app.core.errors import database_unreachable
from app.models import Workspace
from tests.chat.test_round_trips import POSTGRES, round_trips
from tests.conftest import make_settings
from tests.core.test_recovery import postgres_only

ADD = Prebuilt(insert(Workspace))
NAMED = Prebuilt(
    select(Workspace.id, Workspace.name).where(
        Workspace.name == bindparam("name"), Workspace.is_personal.is_(False)
    )
)


@pytest.fixture
def settings(database_url: str, clean_database: None) -> Settings:
    """No in-process job worker: its polls would be counted among the round trips."""
    return make_settings(database_url, WORKERS_IN_API=False)


@pytest.fixture
async def maker(app: FastAPI) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    yield app.state.sessionmaker


def row(name: str) -> dict[str, object]:
    moment = datetime.now(UTC)
    return {
        "id": uuid.uuid4(),
        "name": name,
        "is_personal": False,
        "created_by_id": None,
        "session_ttl_days": None,
        "message_retention_days": None,
        "created_at": moment,
        "updated_at": moment,
    }


async def names(maker: async_sessionmaker[AsyncSession], *wanted: str) -> set[str]:
    async with maker() as session:
        result = await session.execute(select(Workspace.name).where(Workspace.name.in_(wanted)))
        return set(result.scalars())


async def test_a_transaction_commits_orm_and_prebuilt_work_together(
    app: FastAPI, maker: async_sessionmaker[AsyncSession]
) -> None:
    before = round_trips(app)
    async with transaction(maker) as session:
        session.add(Workspace(name="orm-side", is_personal=False))
        await session.flush()
        connection = await session.connection()
        await run(connection, ADD, [row("prebuilt-1"), row("prebuilt-2")])
        found = await run(connection, NAMED, {"name": "prebuilt-2"})
        assert [r["name"] for r in found] == ["prebuilt-2"]  # read by column name
    if POSTGRES:  # BEGIN, the ORM's INSERT and its audit entry's, the INSERT of both rows,
        # the SELECT, COMMIT
        assert round_trips(app) - before == 6
    assert await names(maker, "orm-side", "prebuilt-1", "prebuilt-2") == {
        "orm-side",
        "prebuilt-1",
        "prebuilt-2",
    }


async def test_a_failed_transaction_leaves_nothing(
    app: FastAPI, maker: async_sessionmaker[AsyncSession]
) -> None:
    with pytest.raises(RuntimeError):
        async with transaction(maker) as session:
            session.add(Workspace(name="orm-gone", is_personal=False))
            await session.flush()
            await run(await session.connection(), ADD, [row("prebuilt-gone")])
            raise RuntimeError("the turn failed")
    assert await names(maker, "orm-gone", "prebuilt-gone") == set()


async def test_inside_a_sqlalchemy_transaction_prebuilt_statements_stay_in_it(
    maker: async_sessionmaker[AsyncSession],
) -> None:
    """Where SQLAlchemy runs the transaction, `run` goes through SQLAlchemy (a statement sent
    to asyncpg first would otherwise run outside the transaction it has not begun yet)."""
    async with maker() as session, session.begin():
        await run(await session.connection(), ADD, [row("rolled-back")])
        await session.rollback()
    assert await names(maker, "rolled-back") == set()


def test_an_expanding_in_cannot_be_prebuilt(app: FastAPI) -> None:
    statement = Prebuilt(select(Workspace.id).where(Workspace.name.in_(["a", "b"])))
    with pytest.raises(ValueError, match="expanding IN"):
        statement.compiled(app.state.engine.dialect)


async def test_a_driver_error_is_raised_as_sqlalchemys_without_the_values(
    maker: async_sessionmaker[AsyncSession],
) -> None:
    """A constraint violation from asyncpg arrives as SQLAlchemy's DBAPIError, as everywhere
    else in the app, with the statement's values hidden; the transaction is rolled back."""
    taken = row("taken-name")
    async with transaction(maker) as session:
        await run(await session.connection(), ADD, [taken])
    with pytest.raises(DBAPIError) as info:
        async with transaction(maker) as session:
            await run(await session.connection(), ADD, [row("not-kept")])
            await run(await session.connection(), ADD, [taken])  # the same id again
    assert "taken-name" not in str(info.value)
    assert not database_unreachable(info.value)
    assert await names(maker, "not-kept") == set()


@postgres_only
async def test_a_lost_connection_is_reported_as_the_database_being_unreachable(
    maker: async_sessionmaker[AsyncSession], database_url: str
) -> None:
    with pytest.raises(DBAPIError) as info:
        async with transaction(maker) as session:
            connection = await session.connection()
            [backend] = await run(connection, BACKEND)
            await terminate(database_url, backend["pid"])
            await run(connection, NAMED, {"name": "anything"})
    assert database_unreachable(info.value)  # a 503, not a 500
    async with transaction(maker) as session:  # the dead connection did not go back
        assert await run(await session.connection(), NAMED, {"name": "anything"}) == []


BACKEND = Prebuilt(select(func.pg_backend_pid().label("pid")))


async def terminate(database_url: str, pid: int) -> None:
    admin = create_engine(make_settings(database_url))
    try:
        async with admin.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            for _ in range(100):  # at most 5 s
                gone = not await connection.scalar(
                    text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"), {"p": pid}
                )
                if gone:
                    break
                await asyncio.sleep(0.05)
    finally:
        await admin.dispose()
    await asyncio.sleep(0.2)  # the client's event loop sees the closed socket


def test_a_broken_driver_protocol_state_is_a_lost_connection() -> None:
    """asyncpg's InternalClientError (its protocol state broke when the server dropped the
    connection mid-statement) is a lost connection, reported as a 503, never a 500."""

    class Driver:
        def is_closed(self) -> bool:
            return False

    with pytest.raises(DBAPIError) as info, _sqlalchemy_errors(Driver(), "SELECT 1"):
        raise asyncpg.exceptions.InternalClientError("cannot switch to state 12")
    assert info.value.connection_invalidated
    assert database_unreachable(info.value)
