"""Idempotency keys: a request retried with the same key gets the first one's result."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UUIDPrimaryKey, WorkspaceScoped


class IdempotencyKey(UUIDPrimaryKey, WorkspaceScoped, Base):
    __tablename__ = "idempotency_keys"

    # Who sent it ("user:<id>" or "key:<id>"): keys are per caller.
    caller: Mapped[str] = mapped_column(String(80))
    key: Mapped[str] = mapped_column(String(255))
    # sha256 of the request (method, path, body, end user): the same key with another request
    # is refused.
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(10))  # running | done
    response_status: Mapped[int | None]
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    response_headers: Mapped[dict[str, str] | None] = mapped_column(JSON)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint(
            "workspace_id", "caller", "key", name="uq_idempotency_keys_workspace_id_caller_key"
        ),
        Index("ix_idempotency_keys_workspace_id_expires_at", "workspace_id", "expires_at"),
    )
