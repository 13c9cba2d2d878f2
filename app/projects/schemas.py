"""Project request and response bodies."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.core.config import LLMProviderName
from app.knowledge.schemas import KnowledgeSettings
from app.projects.slugs import SLUG_PATTERN

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Description = Annotated[str, StringConstraints(max_length=2000)]
ModelName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
MaxTokens = Annotated[int, Field(ge=1, le=32768)]
HistoryWindow = Annotated[int, Field(ge=0, le=200)]
Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
FallbackReply = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)
]

_PROVIDER_DOC = "LLM provider; null means the deployment's default (`/health` shows which)."
LLMTimeout = Annotated[float, Field(ge=1, le=600)]
Limit = Annotated[int, Field(ge=0, le=1_000_000_000)]
_LIMIT_DOC = "Null: the deployment's default; 0: unlimited."


class FallbackModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: LLMProviderName | None = Field(default=None, description=_PROVIDER_DOC)
    model: ModelName


FallbackModels = Annotated[list[FallbackModel], Field(max_length=3)]

_FALLBACK_MODELS_DOC = (
    "Up to 3 `{provider, model}` pairs tried in order when the project's own provider/model "
    "fails with a retryable error (unreachable, timeout, 429, 5xx) before any text was sent."
)
_LLM_TIMEOUT_DOC = (
    "The turn's deadline in seconds (1..600), every attempt and fallback included; null: "
    "the deployment's `LLM_TOTAL_TIMEOUT`."
)

_SLUG_DOC = (
    "Lowercase letters, digits and dashes, unique in your workspace; names the project as the "
    "`model` of `/v1/chat/completions`. Derived from the name when omitted."
)
_FALLBACK_DOC = (
    "Sent instead of an error when the LLM fails (flagged `fallback: true`; the failure is still "
    "recorded). Null: failures are reported as errors."
)


class ProjectLimits(BaseModel):
    """A project's own rate limits and token budgets (writable on create and update)."""

    rate_limit_per_minute: Limit | None = Field(
        default=None, description="Chat turns per minute for the project. " + _LIMIT_DOC
    )
    end_user_rate_limit_per_minute: Limit | None = Field(
        default=None, description="Chat turns per minute per end user. " + _LIMIT_DOC
    )
    tokens_per_day: Limit | None = Field(
        default=None, description="LLM tokens per 24 hours for the project. " + _LIMIT_DOC
    )
    end_user_tokens_per_day: Limit | None = Field(
        default=None, description="LLM tokens per 24 hours per end user. " + _LIMIT_DOC
    )


RetentionDays = Annotated[int, Field(ge=1, le=36500)]
_CONTENT_DOC = (
    "Include message text (the user's message, the reply, feedback comments, session titles) "
    "in events. Events leave for webhooks and Kafka; off, they carry ids and small facts only."
)
_TTL_DOC = (
    "Delete sessions idle for longer than this many days (a `session.expired` event each); "
    "null: the workspace's default (null there too: kept)."
)
_MESSAGE_RETENTION_DOC = (
    "Delete messages older than this many days (sessions stay); null: the workspace's "
    "default (null there too: kept)."
)


class ProjectRetention(BaseModel):
    """How long a project's conversations are kept."""

    session_ttl_days: RetentionDays | None = Field(default=None, description=_TTL_DOC)
    message_retention_days: RetentionDays | None = Field(
        default=None, description=_MESSAGE_RETENTION_DOC
    )


_KNOWLEDGE_DOC = (
    "The knowledge base in chat turns (retrieval and citations) and the project's own "
    "knowledge limits; the object sent replaces the stored one. Null: not used in turns, and "
    "the deployment's limits."
)


class ProjectCreate(ProjectRetention, ProjectLimits):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"name": "My Chatbot", "description": "A helpful assistant"}]
        },
    )

    name: Name
    slug: Slug | None = Field(default=None, description=_SLUG_DOC)
    description: Description | None = None
    provider: LLMProviderName | None = Field(default=None, description=_PROVIDER_DOC)
    model: ModelName | None = Field(default=None, description="Null: the provider's default.")
    temperature: Temperature | None = Field(default=None, description="0..2; null: default.")
    max_tokens: MaxTokens | None = Field(default=None, description="1..32768; null: default.")
    history_window: HistoryWindow = Field(
        default=20, description="How many stored messages each turn sends as context (0..200)."
    )
    fallback_reply: FallbackReply | None = Field(default=None, description=_FALLBACK_DOC)
    fallback_models: FallbackModels = Field(default_factory=list, description=_FALLBACK_MODELS_DOC)
    llm_timeout: LLMTimeout | None = Field(default=None, description=_LLM_TIMEOUT_DOC)
    events_include_content: bool = Field(default=False, description=_CONTENT_DOC)
    knowledge: KnowledgeSettings | None = Field(default=None, description=_KNOWLEDGE_DOC)


class ProjectUpdate(ProjectRetention, ProjectLimits):
    """Only the fields sent are changed; send null to reset an LLM setting to the default."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"temperature": 0.2, "model": None}]}
    )

    name: Name | None = None
    slug: Slug | None = Field(default=None, description=_SLUG_DOC)
    description: Description | None = None
    provider: LLMProviderName | None = Field(default=None, description=_PROVIDER_DOC)
    model: ModelName | None = None
    temperature: Temperature | None = None
    max_tokens: MaxTokens | None = None
    history_window: HistoryWindow | None = None
    fallback_reply: FallbackReply | None = Field(default=None, description=_FALLBACK_DOC)
    fallback_models: FallbackModels | None = Field(default=None, description=_FALLBACK_MODELS_DOC)
    llm_timeout: LLMTimeout | None = Field(default=None, description=_LLM_TIMEOUT_DOC)
    events_include_content: bool | None = Field(default=None, description=_CONTENT_DOC)
    knowledge: KnowledgeSettings | None = Field(default=None, description=_KNOWLEDGE_DOC)


class ProjectRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    slug: str
    description: str | None
    provider: str | None
    model: str | None
    temperature: float | None
    max_tokens: int | None
    history_window: int
    fallback_reply: str | None
    fallback_models: list[FallbackModel]
    llm_timeout: float | None
    rate_limit_per_minute: int | None
    end_user_rate_limit_per_minute: int | None
    tokens_per_day: int | None
    end_user_tokens_per_day: int | None
    events_include_content: bool
    session_ttl_days: int | None
    message_retention_days: int | None
    knowledge: KnowledgeSettings | None
    created_at: datetime
    updated_at: datetime
