"""Accounts: users, workspaces (the tenant), memberships and refresh tokens."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.types import utcnow
from app.models.base import Base, Timestamps, UUIDPrimaryKey


class User(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "users"

    # Stored normalised (lower case), so uniqueness is case-insensitive on every backend.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(default=True)


class Workspace(UUIDPrimaryKey, Timestamps, Base):
    """The tenant. Registration creates a personal workspace for the new user; `POST
    /workspaces` creates team workspaces. Requests without `X-Workspace-ID` act in the personal
    workspace its creator is a member of."""

    __tablename__ = "workspaces"

    name: Mapped[str] = mapped_column(String(200))
    is_personal: Mapped[bool] = mapped_column(default=True)
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    # Retention defaults for the workspace's projects (null: kept).
    session_ttl_days: Mapped[int | None]
    message_retention_days: Mapped[int | None]

    __table_args__ = (Index("ix_workspaces_created_by_id", "created_by_id"),)


class WorkspaceMember(Base):
    __tablename__ = "workspace_members"

    workspace_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(20), default="owner")  # app.workspaces.roles.Role
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_workspace_members_user_id", "user_id"),
        CheckConstraint("role IN ('owner', 'admin', 'agent', 'viewer')", name="role"),
    )


class RefreshToken(UUIDPrimaryKey, Base):
    """A rotating refresh token, stored as a SHA-256 hash. One family per login."""

    __tablename__ = "refresh_tokens"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    family_id: Mapped[uuid.UUID]
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_refresh_tokens_user_id", "user_id"),
        Index("ix_refresh_tokens_family_id", "family_id"),
    )


class PasswordResetToken(UUIDPrimaryKey, Base):
    """A single-use, short-lived password reset token, stored as a SHA-256 hash."""

    __tablename__ = "password_reset_tokens"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_password_reset_tokens_user_id", "user_id"),)
