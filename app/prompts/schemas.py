"""Prompt request and response bodies."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Content = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20000)]
PromptName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Position = Annotated[int, Field(ge=0, le=10_000)]


class PromptCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"content": "You are a knowledgeable AI assistant. Provide clear, concise answers."}
            ]
        },
    )

    content: Content = Field(description="The system prompt text (1..20000 characters).")
    name: PromptName | None = None
    position: Position | None = Field(
        default=None, description="Order among the project's prompts; default: after the last."
    )
    is_active: bool = Field(default=True, description="Only active prompts are sent to the LLM.")


class PromptUpdate(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"is_active": False}]}
    )

    content: Content | None = None
    name: PromptName | None = None
    position: Position | None = None
    is_active: bool | None = None


class PromptRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    project_id: uuid.UUID
    content: str
    name: str | None
    position: int
    is_active: bool
    created_at: datetime
    updated_at: datetime
