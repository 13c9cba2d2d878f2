"""Chat sessions and their messages."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.types import utcnow
from app.models.base import Base, UUIDPrimaryKey, WorkspaceScoped


class MessageRole(enum.StrEnum):
    USER = "user"
    ASSISTANT = "assistant"


class MessageStatus(enum.StrEnum):
    PENDING = "pending"  # the reply is being generated
    COMPLETE = "complete"
    INCOMPLETE = "incomplete"  # the reply stopped part-way; what arrived is kept
    FAILED = "failed"  # the LLM call failed; see error_code / error_message
    SUPERSEDED = "superseded"  # replaced by a regenerated reply; kept for the record
    # A bot reply generated after a human took the conversation over: kept, never sent.
    SUPPRESSED = "suppressed"


class FeedbackRating(enum.StrEnum):
    UP = "up"
    DOWN = "down"


class ChatSession(UUIDPrimaryKey, WorkspaceScoped, Base):
    __tablename__ = "chat_sessions"

    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    # The caller's own user reference (API-key calls); null for sessions made without one.
    end_user_id: Mapped[str | None] = mapped_column(String(200))
    title: Mapped[str | None] = mapped_column(String(200))
    # Also the source of each message's `seq`: incremented atomically per new message.
    message_count: Mapped[int] = mapped_column(default=0)
    # Token totals of every reply in the session (kept up to date as replies finish).
    prompt_tokens: Mapped[int] = mapped_column(default=0, server_default="0")
    completion_tokens: Mapped[int] = mapped_column(default=0, server_default="0")
    total_tokens: Mapped[int] = mapped_column(default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_activity_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The turn being answered (its reply's id) and until when it may hold the session: turns
    # of one session run one after another, across processes, without a transaction held.
    turn_owner: Mapped[uuid.UUID | None]
    turn_until: Mapped[datetime | None]
    # The last event sequence number given to one of the session's events (app/events/).
    event_seq: Mapped[int] = mapped_column(default=0, server_default="0")

    __table_args__ = (
        Index(
            "ix_chat_sessions_workspace_id_project_id_last_activity_at",
            "workspace_id",
            "project_id",
            "last_activity_at",
        ),
        Index("ix_chat_sessions_project_id", "project_id"),
        Index(
            "ix_chat_sessions_workspace_id_project_id_end_user_id",
            "workspace_id",
            "project_id",
            "end_user_id",
        ),
    )


class ChatMessage(UUIDPrimaryKey, WorkspaceScoped, Base):
    __tablename__ = "chat_messages"

    chat_session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("chat_sessions.id", ondelete="CASCADE")
    )
    # Position in the session (1, 2, ...): the order of history and of message pagination.
    seq: Mapped[int]
    role: Mapped[str] = mapped_column(String(20))
    content: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(20), default=MessageStatus.COMPLETE)
    provider: Mapped[str | None] = mapped_column(String(50))
    model: Mapped[str | None] = mapped_column(String(200))
    prompt_tokens: Mapped[int | None]
    completion_tokens: Mapped[int | None]
    total_tokens: Mapped[int | None]
    latency_ms: Mapped[int | None]
    finish_reason: Mapped[str | None] = mapped_column(String(50))
    error_code: Mapped[str | None] = mapped_column(String(100))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]
    # Written by the process generating a pending reply as it goes; a pending reply whose
    # heartbeat stops is treated as interrupted.
    heartbeat_at: Mapped[datetime | None]
    # Set by `POST .../cancel`; the generating process (any of them) sees it and stops.
    cancel_requested_at: Mapped[datetime | None]
    # LLM calls made for this reply (retries and fallbacks included).
    attempts: Mapped[int | None]
    # The intent whose canned reply this is (null: the LLM answered).
    intent: Mapped[str | None] = mapped_column(String(100))
    feedback_rating: Mapped[str | None] = mapped_column(String(10))
    feedback_comment: Mapped[str | None] = mapped_column(Text)
    feedback_at: Mapped[datetime | None]
    # The session sequence number of this message's event: `message.created` for a user's
    # message, the reply's final `reply.completed` / `reply.failed`.
    event_seq: Mapped[int | None]
    # Channel conversations (app/conversations/): who wrote it, `contact | bot | operator |
    # device | system` (null elsewhere), and the operator's user id. Operators' messages are
    # `assistant` messages, so the bot sees what they said.
    author_type: Mapped[str | None] = mapped_column(String(20))
    author_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    # A reply grounded in the project's knowledge base: the numbered sources its prompt was
    # given, which `[n]` in its text refers to (app/knowledge/grounding.py); null otherwise.
    citations: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON(none_as_null=True))

    __table_args__ = (
        UniqueConstraint("chat_session_id", "seq", name="uq_chat_messages_chat_session_id_seq"),
        Index("ix_chat_messages_workspace_id_chat_session_id", "workspace_id", "chat_session_id"),
    )
