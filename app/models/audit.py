"""The audit log: one row per change to a workspace's configuration or security event.

Append-only: nothing in the API updates or deletes a row, and on Postgres a trigger refuses
UPDATE and DELETE except for the retention purge (see the migration). `workspace_id` has no
foreign key on purpose: the log of a deleted workspace, its deletion included, outlives it until
the retention purge.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.types import utcnow
from app.models.base import Base, UUIDPrimaryKey


class AuditEntry(UUIDPrimaryKey, Base):
    __tablename__ = "audit_log"

    workspace_id: Mapped[uuid.UUID]
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    actor_type: Mapped[str] = mapped_column(String(20))  # user | api_key | system
    actor_id: Mapped[uuid.UUID | None]
    actor_label: Mapped[str | None] = mapped_column(String(320))  # the user's email then
    action: Mapped[str] = mapped_column(String(100))  # project.updated, member.role_changed, ...
    target_type: Mapped[str] = mapped_column(String(50))
    target_id: Mapped[str | None] = mapped_column(String(100))
    # {"field": {"before": ..., "after": ...}}, secrets redacted.
    changes: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    request_id: Mapped[str | None] = mapped_column(String(128))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_audit_log_workspace_id_occurred_at", "workspace_id", "occurred_at"),
        Index("ix_audit_log_occurred_at", "occurred_at"),
    )
