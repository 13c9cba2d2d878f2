"""Workspace and membership queries. A workspace's members are scoped by its id, like every
tenant-owned row; the caller's own list of workspaces is scoped by their user id."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.pagination import Keyset, PageParams
from app.models import User, Workspace, WorkspaceMember
from app.workspaces.roles import Role

# Oldest workspace first; the rows carry the workspace's columns by their names.
WORKSPACE_KEYSET = Keyset((Workspace.created_at, Workspace.id))
MEMBER_KEYSET = Keyset((WorkspaceMember.created_at, WorkspaceMember.user_id))


def _workspace_with_role() -> Select[*tuple[Any, ...]]:
    return select(
        Workspace.id,
        Workspace.name,
        Workspace.is_personal,
        Workspace.created_by_id,
        Workspace.session_ttl_days,
        Workspace.message_retention_days,
        Workspace.created_at,
        Workspace.updated_at,
        WorkspaceMember.role,
    ).join(WorkspaceMember, WorkspaceMember.workspace_id == Workspace.id)


class MembershipRepository:
    """The workspaces one user belongs to."""

    def __init__(self, session: AsyncSession, user_id: uuid.UUID) -> None:
        self.session = session
        self.user_id = user_id

    async def page(self, params: PageParams) -> tuple[list[Any], str | None]:
        statement = _workspace_with_role().where(WorkspaceMember.user_id == self.user_id)
        result = await self.session.execute(WORKSPACE_KEYSET.paginate(statement, params))
        return WORKSPACE_KEYSET.page(list(result.all()), params)

    def add_workspace(self, name: str) -> Workspace:
        workspace = Workspace(
            id=uuid.uuid4(), name=name, is_personal=False, created_by_id=self.user_id
        )
        self.session.add(workspace)
        return workspace

    def add_owner(self, workspace_id: uuid.UUID) -> None:
        self.session.add(
            WorkspaceMember(workspace_id=workspace_id, user_id=self.user_id, role=Role.OWNER)
        )


class MemberRepository:
    """One workspace and its members."""

    def __init__(self, session: AsyncSession, workspace_id: uuid.UUID) -> None:
        self.session = session
        self.workspace_id = workspace_id

    async def workspace(self, *, lock: bool = False) -> Workspace | None:
        statement = select(Workspace).where(Workspace.id == self.workspace_id)
        if lock:  # serialises membership changes, so "the last owner" is decided once
            statement = statement.with_for_update()
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def member(self, user_id: uuid.UUID) -> WorkspaceMember | None:
        return await self.session.get(WorkspaceMember, (self.workspace_id, user_id))

    async def owner_count(self) -> int:
        statement = select(func.count()).where(
            WorkspaceMember.workspace_id == self.workspace_id, WorkspaceMember.role == Role.OWNER
        )
        return int((await self.session.execute(statement)).scalar_one())

    def _rows(self) -> Select[*tuple[Any, ...]]:
        return (
            select(
                WorkspaceMember.user_id,
                User.email,
                WorkspaceMember.role,
                WorkspaceMember.created_at,
            )
            .join(User, User.id == WorkspaceMember.user_id)
            .where(WorkspaceMember.workspace_id == self.workspace_id)
        )

    async def page(self, params: PageParams) -> tuple[list[Any], str | None]:
        result = await self.session.execute(MEMBER_KEYSET.paginate(self._rows(), params))
        return MEMBER_KEYSET.page(list(result.all()), params)

    async def row(self, user_id: uuid.UUID) -> Any:
        """One member with their email (the member list's row)."""
        statement = self._rows().where(WorkspaceMember.user_id == user_id)
        return (await self.session.execute(statement)).one()
