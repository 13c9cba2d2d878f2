"""Project API keys: how our users' backends call the API on behalf of their end users."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.types import utcnow
from app.models.base import Base, UUIDPrimaryKey, WorkspaceScoped


class ApiKey(UUIDPrimaryKey, WorkspaceScoped, Base):
    __tablename__ = "api_keys"

    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    # The first characters of the secret, shown in lists so a key can be recognised.
    prefix: Mapped[str] = mapped_column(String(16))
    # SHA-256 of the whole secret (high-entropy, so a fast hash is safe); the secret itself is
    # never stored.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(200))  # space-separated
    # Limits; null: RATE_LIMIT_API_KEY_PER_MINUTE / QUOTA_API_KEY_TOKENS_PER_DAY, 0: unlimited.
    rate_limit_per_minute: Mapped[int | None]
    tokens_per_day: Mapped[int | None]
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_api_keys_workspace_id_project_id", "workspace_id", "project_id"),
        Index("ix_api_keys_project_id", "project_id"),
    )
