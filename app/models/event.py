"""Events (the transactional outbox, app/events/) and the webhooks they are delivered to."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.types import utcnow
from app.models.base import Base, Timestamps, UUIDPrimaryKey, WorkspaceScoped

UNDISPATCHED = "position IS NULL"


class Event(UUIDPrimaryKey, WorkspaceScoped, Base):
    """One CloudEvent, written in the transaction of the change it describes."""

    __tablename__ = "events"

    # No foreign keys: a project's or session's last events (`*.deleted`) outlive it.
    project_id: Mapped[uuid.UUID | None]
    session_id: Mapped[uuid.UUID | None]
    # Per session: 1, 2, ... in the order the session's events happened.
    sequence: Mapped[int | None]
    type: Mapped[str] = mapped_column(String(100))
    subject: Mapped[str | None] = mapped_column(String(200))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Given by the relay (one at a time), in commit order: the feed's cursor. Null until then.
    position: Mapped[int | None] = mapped_column(BigInteger, unique=True)

    __table_args__ = (
        Index(
            "ix_events_undispatched",
            "created_at",
            sqlite_where=text(UNDISPATCHED),
            postgresql_where=text(UNDISPATCHED),
        ),
        Index("ix_events_project_id_position", "project_id", "position"),
        Index("ix_events_created_at", "created_at"),
    )


class Webhook(UUIDPrimaryKey, WorkspaceScoped, Timestamps, Base):
    __tablename__ = "webhooks"

    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str | None] = mapped_column(Text)
    # Event types (or `prefix.*` patterns) delivered; empty: all of them.
    event_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    # `whsec_` + base64 (Standard Webhooks); shown once, when the webhook is created.
    signing_secret: Mapped[str] = mapped_column(String(100))
    is_enabled: Mapped[bool] = mapped_column(default=True)
    disabled_at: Mapped[datetime | None]
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    # The first failed attempt since the last success (null: healthy).
    failing_since: Mapped[datetime | None]

    __table_args__ = (Index("ix_webhooks_workspace_id_project_id", "workspace_id", "project_id"),)


class WebhookDelivery(UUIDPrimaryKey, WorkspaceScoped, Base):
    """One delivery attempt of one event to one webhook."""

    __tablename__ = "webhook_deliveries"

    webhook_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[uuid.UUID]
    event_type: Mapped[str] = mapped_column(String(100))
    attempt: Mapped[int]
    status: Mapped[str] = mapped_column(String(20))  # succeeded | failed
    response_status: Mapped[int | None]
    latency_ms: Mapped[int]
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_webhook_deliveries_webhook_id_created_at", "webhook_id", "created_at"),
        Index("ix_webhook_deliveries_created_at", "created_at"),
    )
