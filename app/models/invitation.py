"""Invitations to join a workspace: a one-time token, stored as its hash."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.types import utcnow
from app.models.base import Base, UUIDPrimaryKey, WorkspaceScoped


class Invitation(UUIDPrimaryKey, WorkspaceScoped, Base):
    __tablename__ = "invitations"

    # Normalised (lower case), like users.email: the invitee must sign in with this address.
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(20))
    # SHA-256 of the token (256 random bits, so a fast hash is safe); the token is never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    accepted_at: Mapped[datetime | None]
    accepted_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    revoked_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_invitations_workspace_id_created_at", "workspace_id", "created_at"),
        Index("ix_invitations_workspace_id_email", "workspace_id", "email"),
    )
