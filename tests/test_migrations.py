"""The migrations are the only way the schema is made: they must round-trip and match the models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from app.core.db import create_engine
from app.models import Base
from app.models.knowledge import include_name
from tests.conftest import alembic_config, make_settings


async def _inspect(url: str, fn: Callable[[Connection], Any]) -> Any:
    engine = create_engine(make_settings(url))
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(fn)
    finally:
        await engine.dispose()


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_name": include_name}
    )
    return list(compare_metadata(context, Base.metadata))


def _tables(connection: Connection) -> set[str]:
    names = set(inspect(connection).get_table_names()) - {"alembic_version"}
    return {name for name in names if include_name(name, "table", {})}


def test_upgrade_downgrade_upgrade(database_factory: Callable[[], str]) -> None:
    import asyncio

    url = database_factory()
    config = alembic_config(url)
    command.upgrade(config, "head")
    assert asyncio.run(_inspect(url, _tables)) == set(Base.metadata.tables)
    assert asyncio.run(_inspect(url, _diff)) == []
    command.downgrade(config, "base")
    assert asyncio.run(_inspect(url, _tables)) == set()
    command.upgrade(config, "head")
    assert asyncio.run(_inspect(url, _diff)) == []
