"""Account queries. Users are global (not tenant-owned); their data lives in workspaces."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import RefreshToken, User, Workspace, WorkspaceMember


@dataclass(frozen=True)
class Membership:
    user: User
    workspace_id: uuid.UUID
    role: str


class AccountRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get_user_by_email(self, email: str) -> User | None:
        result = await self.session.execute(select(User).where(User.email == email))
        return result.scalar_one_or_none()

    async def get_membership(
        self, user_id: uuid.UUID, workspace_id: uuid.UUID | None = None
    ) -> Membership | None:
        """The active user with their membership of `workspace_id` (default: their personal
        workspace), in one query; None if either is missing."""
        statement = (
            select(User, WorkspaceMember.workspace_id, WorkspaceMember.role)
            .join(WorkspaceMember, WorkspaceMember.user_id == User.id)
            .where(User.id == user_id, User.is_active.is_(True))
        )
        if workspace_id is None:
            statement = statement.join(
                Workspace, Workspace.id == WorkspaceMember.workspace_id
            ).where(Workspace.is_personal.is_(True), Workspace.created_by_id == User.id)
        else:
            statement = statement.where(WorkspaceMember.workspace_id == workspace_id)
        result = await self.session.execute(statement)
        row = result.first()
        return Membership(row[0], row[1], row[2]) if row else None

    async def workspace_ids(self, user_id: uuid.UUID) -> list[uuid.UUID]:
        statement = select(WorkspaceMember.workspace_id).where(WorkspaceMember.user_id == user_id)
        return list((await self.session.execute(statement)).scalars())

    async def add_user_with_workspace(self, email: str, password_hash: str) -> User:
        user = User(id=uuid.uuid4(), email=email, password_hash=password_hash)
        workspace = Workspace(
            id=uuid.uuid4(), name=f"{email}'s workspace", is_personal=True, created_by_id=user.id
        )
        self.session.add_all([user, workspace])
        await self.session.flush()
        self.session.add(WorkspaceMember(workspace_id=workspace.id, user_id=user.id, role="owner"))
        await self.session.flush()
        return user

    def add_refresh_token(self, token: RefreshToken) -> None:
        self.session.add(token)

    async def get_refresh_token(self, token_hash: str) -> RefreshToken | None:
        result = await self.session.execute(
            select(RefreshToken).where(RefreshToken.token_hash == token_hash)
        )
        return result.scalar_one_or_none()

    async def consume_refresh_token(self, token_id: uuid.UUID, now: datetime) -> bool:
        """Atomically revoke an unrevoked token; False if someone else already used it."""
        result = await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.id == token_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def revoke_family(self, family_id: uuid.UUID, now: datetime) -> None:
        await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )
