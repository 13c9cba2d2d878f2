"""Projects (chatbot agents) and their system prompts."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, Timestamps, UUIDPrimaryKey, WorkspaceScoped


class Project(UUIDPrimaryKey, WorkspaceScoped, Timestamps, Base):
    __tablename__ = "projects"

    name: Mapped[str] = mapped_column(String(200))
    # Unique in the workspace; how the OpenAI-compatible endpoint's `model` can name the project.
    slug: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(Text)
    # Null LLM settings mean "the deployment's default".
    provider: Mapped[str | None] = mapped_column(String(50))
    model: Mapped[str | None] = mapped_column(String(200))
    temperature: Mapped[float | None]
    max_tokens: Mapped[int | None]
    history_window: Mapped[int] = mapped_column(default=20)
    # Tried in order when the provider/model above fails with a retryable error:
    # [{"provider": "openrouter", "model": "..."}]; provider null means the default one.
    fallback_models: Mapped[list[dict[str, Any]]] = mapped_column(
        JSON, default=list, server_default="[]"
    )
    # The turn's deadline in seconds (every attempt and fallback); null: LLM_TOTAL_TIMEOUT.
    llm_timeout: Mapped[float | None]
    # Limits; null: the deployment's RATE_LIMIT_* / QUOTA_* defaults, 0: unlimited.
    rate_limit_per_minute: Mapped[int | None]
    end_user_rate_limit_per_minute: Mapped[int | None]
    tokens_per_day: Mapped[int | None]
    end_user_tokens_per_day: Mapped[int | None]
    # Sent instead of an error when the LLM fails (the failure is still recorded).
    fallback_reply: Mapped[str | None] = mapped_column(Text)
    # Raised by every change to the project, its prompts or its intents (app/projects/config.py):
    # what chat turns check before using the settings they cached.
    revision: Mapped[int] = mapped_column(default=1, server_default="1")
    # Events leave our trust boundary (webhooks, Kafka): message text is in them only if set.
    events_include_content: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Retention; null: the workspace's default (null there too: kept).
    session_ttl_days: Mapped[int | None]
    message_retention_days: Mapped[int | None]
    # Knowledge base use and limits (app/knowledge/grounding.py `KnowledgeSettings`); null: off,
    # with the deployment's KNOWLEDGE_* limits.
    knowledge: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))

    __table_args__ = (
        Index("ix_projects_workspace_id_created_at", "workspace_id", "created_at"),
        UniqueConstraint("workspace_id", "slug", name="uq_projects_workspace_id_slug"),
    )


class Prompt(UUIDPrimaryKey, WorkspaceScoped, Timestamps, Base):
    __tablename__ = "prompts"

    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str | None] = mapped_column(String(200))
    content: Mapped[str] = mapped_column(Text)
    position: Mapped[int] = mapped_column(default=0)
    is_active: Mapped[bool] = mapped_column(default=True)

    __table_args__ = (
        Index(
            "ix_prompts_workspace_id_project_id_position", "workspace_id", "project_id", "position"
        ),
        Index("ix_prompts_project_id", "project_id"),
    )
