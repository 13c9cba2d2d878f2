"""Workspaces and their members: who may change whom is decided here, in one place
(`_authorize_change`), beside the static role each route requires."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.cache import PrincipalCache
from app.auth.dependencies import Principal
from app.core.errors import ConflictError, NotFoundError
from app.core.pagination import PageParams
from app.core.patching import apply_patch
from app.core.types import utcnow
from app.models import Workspace
from app.workspaces.repository import MemberRepository, MembershipRepository
from app.workspaces.roles import Role, check_role
from app.workspaces.schemas import MemberRead, WorkspaceRead, WorkspaceUpdate


class WorkspaceService:
    """Built for the caller acting in `principal.workspace_id` (a member of it)."""

    def __init__(
        self, session: AsyncSession, principal: Principal, principals: PrincipalCache
    ) -> None:
        if principal.user_id is None:
            raise ValueError("workspace routes take signed-in users only")
        self.session = session
        self.principal = principal
        self.principals = principals
        self.memberships = MembershipRepository(session, principal.user_id)
        self.members = MemberRepository(session, principal.workspace_id)

    async def list_mine(self, params: PageParams) -> tuple[list[WorkspaceRead], str | None]:
        rows, cursor = await self.memberships.page(params)
        return [self._read(row, row.role) for row in rows], cursor

    async def create(self, name: str) -> WorkspaceRead:
        workspace = self.memberships.add_workspace(name)
        await self.session.flush()
        self.memberships.add_owner(workspace.id)
        await self.session.flush()
        return self._read(workspace, Role.OWNER)

    async def get(self) -> WorkspaceRead:
        return self._read(await self._workspace(), self.principal.role)

    async def update(self, data: WorkspaceUpdate) -> WorkspaceRead:
        """Rename the workspace, or set its projects' retention defaults (fields sent only)."""
        workspace = await self._workspace()
        apply_patch(workspace, data, not_null=("name",))
        workspace.updated_at = utcnow()
        await self.session.flush()
        return self._read(workspace, self.principal.role)

    async def delete(self) -> None:
        """Delete the workspace and everything it owns (its rows cascade)."""
        workspace = await self._workspace()
        if workspace.is_personal:
            raise ConflictError(
                "A personal workspace cannot be deleted: it is where requests without "
                "X-Workspace-ID act. Delete its projects instead.",
                code="personal_workspace",
            )
        await self.session.delete(workspace)
        await self.session.flush()
        self.principals.forget(lambda p: p.workspace_id == workspace.id)

    async def list_members(self, params: PageParams) -> tuple[list[MemberRead], str | None]:
        rows, cursor = await self.members.page(params)
        return [_member(row) for row in rows], cursor

    async def change_role(self, user_id: uuid.UUID, role: Role) -> MemberRead:
        await self.members.workspace(lock=True)
        member = await self._member(user_id)
        self._authorize_change(Role(member.role), role, user_id)
        if member.role == Role.OWNER and role != Role.OWNER:
            await self._keep_an_owner()
        member.role = role
        await self.session.flush()
        self._forget(user_id)
        return _member(await self.members.row(user_id))

    async def remove_member(self, user_id: uuid.UUID) -> None:
        """Remove a member; any member may leave, i.e. remove themselves."""
        await self.members.workspace(lock=True)
        member = await self._member(user_id)
        self._authorize_change(Role(member.role), None, user_id)
        if member.role == Role.OWNER:
            await self._keep_an_owner()
        await self.session.delete(member)
        await self.session.flush()
        self._forget(user_id)

    def _authorize_change(self, current: Role, new: Role | None, user_id: uuid.UUID) -> None:
        """Admins manage members; only owners touch an owner or make one. Anyone may leave."""
        leaving = new is None and user_id == self.principal.user_id
        if not leaving:
            check_role(
                self.principal.role, Role.OWNER if Role.OWNER in (current, new) else Role.ADMIN
            )

    async def _keep_an_owner(self) -> None:
        if await self.members.owner_count() <= 1:
            raise ConflictError(
                "A workspace keeps at least one owner: make another member owner first.",
                code="last_owner",
            )

    async def _workspace(self) -> Workspace:
        workspace = await self.members.workspace()
        if workspace is None:
            raise NotFoundError("Workspace not found.", code="workspace_not_found")
        return workspace

    async def _member(self, user_id: uuid.UUID) -> Any:
        member = await self.members.member(user_id)
        if member is None:
            raise NotFoundError("No such member in this workspace.", code="member_not_found")
        return member

    def _read(self, workspace: Any, role: str) -> WorkspaceRead:
        """`workspace`: a Workspace or a row with its columns. "Personal" is the caller's own:
        a member invited to someone's personal workspace sees it as a shared one."""
        return WorkspaceRead(
            id=workspace.id,
            name=workspace.name,
            is_personal=workspace.is_personal and workspace.created_by_id == self.principal.user_id,
            role=Role(role),
            session_ttl_days=workspace.session_ttl_days,
            message_retention_days=workspace.message_retention_days,
            created_at=workspace.created_at,
            updated_at=workspace.updated_at,
        )

    def _forget(self, user_id: uuid.UUID) -> None:
        # Other API processes see the change within AUTH_CACHE_SECONDS.
        workspace_id = self.principal.workspace_id
        self.principals.forget(lambda p: p.user_id == user_id and p.workspace_id == workspace_id)


def _member(row: Any) -> MemberRead:
    return MemberRead(user_id=row.user_id, email=row.email, role=row.role, joined_at=row.created_at)
