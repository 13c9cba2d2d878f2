"""Prebuilt statements and the hot path's transaction (app/core/driver.py), on SQLite and on
Postgres (where they run on asyncpg directly): one atomic transaction with the ORM's work,
counted round trips, and SQLAlchemy's own path wherever asyncpg cannot be used safely."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from fastapi import FastAPI
from sqlalchemy import bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.driver import Prebuilt, run, transaction
from app.models import Workspace
from tests.chat.test_round_trips import POSTGRES, round_trips

ADD = Prebuilt(insert(Workspace))
NAMED = Prebuilt(
    select(Workspace.id, Workspace.name).where(
        Workspace.name == bindparam("name"), Workspace.is_personal.is_(False)
    )
)


@pytest.fixture
async def maker(app: FastAPI) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    yield app.state.sessionmaker


def row(name: str) -> dict[str, object]:
    moment = datetime.now(UTC)
    return {
        "id": uuid.uuid4(),
        "name": name,
        "is_personal": False,
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
    if POSTGRES:  # BEGIN, the ORM's INSERT, the INSERT of both rows, the SELECT, COMMIT
        assert round_trips(app) - before == 5
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
