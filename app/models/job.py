"""Durable background jobs: enqueued in the transaction of the change that causes them, claimed
by workers under a lease. See app/jobs/."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.types import utcnow
from app.models.base import Base, UUIDPrimaryKey

UNFINISHED = "status IN ('queued', 'running')"
ORDERED = f"ordering_key IS NOT NULL AND {UNFINISHED}"


class Job(UUIDPrimaryKey, Base):
    __tablename__ = "jobs"

    # Null for the deployment's own work; a workspace's jobs go with it.
    workspace_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(10), default="queued")  # queued running done dead
    run_at: Mapped[datetime] = mapped_column(default=utcnow)
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int]
    locked_by: Mapped[str | None] = mapped_column(String(100))
    locked_until: Mapped[datetime | None]
    dedupe_key: Mapped[str | None] = mapped_column(String(200))
    # Jobs with the same key run one at a time, oldest (created_at, then id) first.
    ordering_key: Mapped[str | None] = mapped_column(String(200))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_jobs_status_run_at", "status", "run_at"),
        # One unfinished job per dedupe key.
        Index(
            "uq_jobs_dedupe_key_unfinished",
            "dedupe_key",
            unique=True,
            sqlite_where=text(UNFINISHED),
            postgresql_where=text(UNFINISHED),
        ),
        Index(
            "ix_jobs_ordering_key_created_at",
            "ordering_key",
            "created_at",
            sqlite_where=text(ORDERED),
            postgresql_where=text(ORDERED),
        ),
    )
