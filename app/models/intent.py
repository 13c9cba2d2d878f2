"""Intents: per-project rules that answer matching messages with a canned reply, no LLM call."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, Timestamps, UUIDPrimaryKey, WorkspaceScoped


class Intent(UUIDPrimaryKey, WorkspaceScoped, Timestamps, Base):
    __tablename__ = "intents"

    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    # [{"type": "keyword" | "regex", "value": "..."}]; any one matching selects the intent.
    patterns: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    reply: Mapped[str] = mapped_column(Text)
    # [{"text": "...", "url": "..."}], returned with the reply (seed 000's `links`).
    links: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    requires_login: Mapped[bool] = mapped_column(default=False)
    # Higher first; ties go to the newer intent.
    priority: Mapped[int] = mapped_column(default=0)
    active: Mapped[bool] = mapped_column(default=True)
    # `reply` (send the reply) or `handoff` (on a channel: hand the conversation to a human).
    action: Mapped[str] = mapped_column(String(20), default="reply", server_default="reply")

    __table_args__ = (
        Index("ix_intents_workspace_id_project_id", "workspace_id", "project_id"),
        Index("ix_intents_project_id", "project_id"),
    )
