"""Invitations: an admin invites an email address with a role; the person who signs in with
that address accepts once, with the token from the link, and becomes a member."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta
from urllib.parse import urlencode

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.recorder import new_entry
from app.auth.dependencies import Principal
from app.core.config import Settings
from app.core.errors import AppError, ConflictError, ForbiddenError, NotFoundError
from app.core.pagination import Keyset, PageParams
from app.core.repository import WorkspaceRepository
from app.core.security import sha256_hex
from app.core.types import as_utc, utcnow
from app.models import Invitation, User, WorkspaceMember
from app.notifications.email import Email, queue_email
from app.workspaces.roles import Role, check_role
from app.workspaces.schemas import InvitationCreate, InvitationCreated, InvitationRead

INVITATION_KEYSET = Keyset((Invitation.created_at, Invitation.id), descending=True)


class InvitationGoneError(AppError):
    status_code = 410
    code = "invitation_gone"


class InvitationRepository(WorkspaceRepository[Invitation]):
    model = Invitation

    async def pending_for(self, email: str, now: datetime) -> list[Invitation]:
        statement = self.scoped().where(
            Invitation.email == email,
            Invitation.accepted_at.is_(None),
            Invitation.revoked_at.is_(None),
            Invitation.expires_at > now,
        )
        return list((await self.session.execute(statement)).scalars())

    async def list_page(self, params: PageParams) -> tuple[list[Invitation], str | None]:
        return await self.page(self.scoped(), INVITATION_KEYSET, params)


def status_of(invitation: Invitation, now: datetime) -> str:
    if invitation.accepted_at is not None:
        return "accepted"
    if invitation.revoked_at is not None:
        return "revoked"
    return "expired" if as_utc(invitation.expires_at) <= now else "pending"


def to_read(invitation: Invitation, now: datetime | None = None) -> InvitationRead:
    return InvitationRead(
        id=invitation.id,
        workspace_id=invitation.workspace_id,
        email=invitation.email,
        role=Role(invitation.role),
        status=status_of(invitation, now or utcnow()),
        invited_by_id=invitation.invited_by_id,
        created_at=invitation.created_at,
        expires_at=invitation.expires_at,
        accepted_at=invitation.accepted_at,
    )


class InvitationService:
    def __init__(self, session: AsyncSession, principal: Principal, settings: Settings) -> None:
        self.session = session
        self.principal = principal
        self.settings = settings
        self.invitations = InvitationRepository(session, principal.workspace_id)

    async def invite(self, data: InvitationCreate) -> InvitationCreated:
        """Invite `data.email`; a pending invitation to the same address is replaced."""
        if data.role == Role.OWNER:
            check_role(self.principal.role, Role.OWNER)
        email = data.email.lower()
        now = utcnow()
        if await self._is_member(email):
            raise ConflictError(f"{email} is already a member.", code="already_member")
        for old in await self.invitations.pending_for(email, now):
            old.revoked_at = now
        token = secrets.token_urlsafe(32)
        invitation = self.invitations.add(
            Invitation(
                id=uuid.uuid4(),
                email=email,
                role=data.role,
                token_hash=sha256_hex(token),
                invited_by_id=self.principal.user_id,
                created_at=now,
                expires_at=now + timedelta(days=self.settings.INVITATION_EXPIRE_DAYS),
            )
        )
        await self.session.flush()
        link = f"{self.settings.PUBLIC_BASE_URL.rstrip('/')}/accept-invitation?"
        link += urlencode({"token": token})
        await queue_email(
            self.session,
            Email(
                email,
                "You are invited to a Chatbot Platform workspace",
                _invitation_text(
                    self.principal.email, data.role, link, self.settings.INVITATION_EXPIRE_DAYS
                ),
            ),
            workspace_id=self.principal.workspace_id,
        )
        return InvitationCreated(
            **to_read(invitation, now).model_dump(), token=token, accept_url=link
        )

    async def list_page(self, params: PageParams) -> tuple[list[InvitationRead], str | None]:
        items, cursor = await self.invitations.list_page(params)
        now = utcnow()
        return [to_read(item, now) for item in items], cursor

    async def revoke(self, invitation_id: uuid.UUID) -> None:
        invitation = await self.invitations.get(invitation_id)
        if invitation is None:
            raise NotFoundError("Invitation not found.", code="invitation_not_found")
        if status_of(invitation, utcnow()) != "pending":
            raise ConflictError(
                f"The invitation is {status_of(invitation, utcnow())}, not pending.",
                code="invitation_not_pending",
            )
        invitation.revoked_at = utcnow()
        await self.session.flush()

    async def _is_member(self, email: str) -> bool:
        statement = (
            select(WorkspaceMember.user_id)
            .join(User, User.id == WorkspaceMember.user_id)
            .where(WorkspaceMember.workspace_id == self.principal.workspace_id, User.email == email)
        )
        return (await self.session.execute(statement)).first() is not None


def _invitation_text(inviter: str, role: str, link: str, days: int) -> str:
    return (
        f"{inviter} invited you to their workspace on Chatbot Platform, as {role}.\n\n"
        f"Sign in (or register) with this email address, then accept here (the link works "
        f"once, for {days} days):\n\n{link}\n"
    )


async def accept(session: AsyncSession, principal: Principal, token: str) -> InvitationRead:
    """Make the signed-in caller a member through the invitation `token` names (once)."""
    invitation = (
        await session.execute(select(Invitation).where(Invitation.token_hash == sha256_hex(token)))
    ).scalar_one_or_none()
    if invitation is None:
        raise NotFoundError("No invitation has this token.", code="invitation_not_found")
    now = utcnow()
    state = status_of(invitation, now)
    if state == "accepted":
        raise InvitationGoneError("This invitation was already accepted.", code="invitation_used")
    if state == "revoked":
        raise InvitationGoneError("This invitation was revoked.", code="invitation_revoked")
    if state == "expired":
        raise InvitationGoneError("This invitation has expired.", code="invitation_expired")
    if invitation.email != principal.email.lower():
        raise ForbiddenError(
            "This invitation is for another email address: sign in with the invited one.",
            code="invitation_email_mismatch",
        )
    claimed = await session.execute(
        update(Invitation)
        .where(Invitation.id == invitation.id, Invitation.accepted_at.is_(None))
        .values(accepted_at=now, accepted_by_id=principal.user_id)
    )
    if not claimed.rowcount:  # type: ignore[attr-defined]
        raise InvitationGoneError("This invitation was already accepted.", code="invitation_used")
    # A bulk UPDATE, so recorded here (the flush hook sees ORM changes only).
    session.add(
        new_entry(
            invitation.workspace_id,
            "invitation.accepted",
            "invitation",
            str(invitation.id),
            {"accepted_at": {"before": None, "after": now.isoformat()}},
        )
    )
    existing = await session.get(WorkspaceMember, (invitation.workspace_id, principal.user_id))
    if existing is not None:
        raise ConflictError("You are already a member of this workspace.", code="already_member")
    session.add(
        WorkspaceMember(
            workspace_id=invitation.workspace_id, user_id=principal.user_id, role=invitation.role
        )
    )
    await session.flush()
    return to_read(invitation, now)
