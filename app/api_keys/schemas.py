"""API key bodies."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

Scope = Literal["chat", "sessions:read", "sessions:write", "events:read", "knowledge:read"]
ALL_SCOPES: tuple[str, ...] = (
    "chat",
    "sessions:read",
    "sessions:write",
    "events:read",
    "knowledge:read",
)
DEFAULT_SCOPES: tuple[Scope, ...] = ("chat", "sessions:read")


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "Laravel backend", "scopes": ["chat"]}]},
    )

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    scopes: list[Scope] = Field(
        default_factory=lambda: list(DEFAULT_SCOPES),
        min_length=1,
        description="`chat` (send messages, follow and cancel replies, rate them), "
        "`sessions:read` (list and read sessions, messages, exports), `sessions:write` (rename "
        "and delete sessions), `events:read` (the project's event feed), `knowledge:read` "
        "(retrieval from the project's knowledge base). Default: `chat` and `sessions:read`.",
    )
    expires_at: datetime | None = Field(
        default=None, description="When the key stops working (must be in the future)."
    )
    rate_limit_per_minute: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description="Chat turns per minute with this key; null: RATE_LIMIT_API_KEY_PER_MINUTE, "
        "0: unlimited.",
    )
    tokens_per_day: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description="LLM tokens per 24 hours with this key; null: QUOTA_API_KEY_TOKENS_PER_DAY, "
        "0: unlimited.",
    )

    @field_validator("scopes")
    @classmethod
    def _dedupe(cls, value: list[Scope]) -> list[Scope]:
        return sorted(set(value), key=ALL_SCOPES.index)


class ApiKeyRead(BaseModel):
    id: uuid.UUID
    project_id: uuid.UUID
    name: str
    prefix: str = Field(description="The key's first characters, to recognise it.")
    scopes: list[Scope]
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    rate_limit_per_minute: int | None
    tokens_per_day: int | None


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The secret. Shown only now: store it safely.")
