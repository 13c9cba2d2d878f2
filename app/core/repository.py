"""The tenant-scoped repository base: it cannot be built without a workspace id."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.driver import Params, Prebuilt, run
from app.core.pagination import Keyset, PageParams
from app.models.base import Base

ModelT = TypeVar("ModelT", bound=Base)


class WorkspaceRepository(Generic[ModelT]):
    """Every statement starts from `scoped()`, so a foreign row is indistinguishable from none."""

    model: ClassVar[type[Any]]

    def __init__(self, session: AsyncSession, workspace_id: uuid.UUID) -> None:
        if workspace_id is None:
            raise ValueError("a tenant-scoped repository needs a workspace id")
        self.session = session
        self.workspace_id = workspace_id

    def scoped(self) -> Select[Any]:
        return select(self.model).where(self.model.workspace_id == self.workspace_id)

    async def core(self, statement: Prebuilt, params: Params = None) -> list[Any]:
        """Run one of the hot path's prebuilt statements on the session's connection (no ORM
        processing; on Postgres by asyncpg itself, see app/core/driver.py); its rows."""
        return await run(await self.session.connection(), statement, params)

    async def get(self, entity_id: uuid.UUID) -> ModelT | None:
        result = await self.session.execute(self.scoped().where(self.model.id == entity_id))
        entity: ModelT | None = result.scalar_one_or_none()
        return entity

    def add(self, entity: ModelT) -> ModelT:
        entity.workspace_id = self.workspace_id  # type: ignore[attr-defined]
        self.session.add(entity)
        return entity

    async def delete(self, entity: ModelT) -> None:
        await self.session.delete(entity)

    async def page(
        self, statement: Select[Any], keyset: Keyset, params: PageParams
    ) -> tuple[list[ModelT], str | None]:
        result = await self.session.execute(keyset.paginate(statement, params))
        return keyset.page(result.scalars().all(), params)
