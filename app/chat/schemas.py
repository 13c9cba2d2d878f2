"""Chat, session and message bodies."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.chat.templates import Context
from app.intents.schemas import Link
from app.knowledge.schemas import CitationRead
from app.models import ChatMessage, ChatSession


class ChatRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "project_id": "0b6f1c2e-6a8e-4f0e-9b1e-2f1f0c9a7d11",
                    "message": "What is machine learning?",
                }
            ]
        }
    )

    project_id: uuid.UUID
    message: str = Field(
        min_length=1, description="1..MAX_MESSAGE_CHARS characters (4000 by default)."
    )
    session_id: uuid.UUID | None = Field(
        default=None, description="Continue this session; omit to start a new one."
    )
    stream: bool | None = Field(
        default=None,
        description="`true`: answer with Server-Sent Events (see the Chat tag). Omitted: stream "
        "when the request sends `Accept: text/event-stream`.",
    )
    end_user_id: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
        | None
    ) = Field(
        default=None,
        description="Your own id for the end user this message is from (same as the "
        "`X-End-User-ID` header). A new session belongs to them; with an API key, only their "
        "sessions can be continued.",
    )
    context: Context | None = None


class RegenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"stream": True}]})

    stream: bool | None = Field(
        default=None,
        description="`true`: answer with Server-Sent Events. Omitted: stream when the request "
        "sends `Accept: text/event-stream`.",
    )


class UsageRead(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class MessageError(BaseModel):
    code: str
    message: str


class FeedbackRead(BaseModel):
    rating: Literal["up", "down"] | None
    comment: str | None
    updated_at: datetime


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"rating": "up", "comment": "Clear and correct."}]},
    )

    rating: Literal["up", "down"] | None = Field(
        description="`up`, `down`, or null to withdraw the rating."
    )
    comment: Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)] | None = (
        Field(default=None, description="Optional, up to 2000 characters.")
    )


class MessageRead(BaseModel):
    id: uuid.UUID
    chat_session_id: uuid.UUID
    role: Literal["user", "assistant"]
    content: str
    timestamp: datetime = Field(description="When the message was stored (a reply: finished).")
    status: Literal["pending", "complete", "incomplete", "failed", "superseded"] = Field(
        description="`complete`, `failed` (see `error`), `incomplete` (stopped part-way; see "
        "`error`), `pending` (being generated) or `superseded` (replaced by a regenerated reply)."
    )
    provider: str | None = Field(default=None, description="The provider that answered.")
    model: str | None = Field(default=None, description="The model that answered.")
    attempts: int | None = Field(
        default=None, description="LLM calls made for this reply, retries and fallbacks included."
    )
    usage: UsageRead | None = None
    latency_ms: int | None = Field(default=None, description="Time the LLM took to answer.")
    finish_reason: str | None = None
    intent: str | None = Field(
        default=None, description="The intent whose canned reply this is (null: the LLM's)."
    )
    error: MessageError | None = None
    feedback: FeedbackRead | None = None
    citations: list[CitationRead] = Field(
        default_factory=list,
        description="The knowledge-base sources the reply was given, numbered as `[n]` in its "
        "text (empty when the project's knowledge is off or nothing matched).",
    )

    @classmethod
    def from_model(cls, message: ChatMessage) -> MessageRead:
        usage = None
        if message.total_tokens is not None:
            usage = UsageRead(
                prompt_tokens=message.prompt_tokens or 0,
                completion_tokens=message.completion_tokens or 0,
                total_tokens=message.total_tokens,
            )
        error = None
        if message.error_code:
            error = MessageError(code=message.error_code, message=message.error_message or "")
        feedback = None
        if message.feedback_at is not None:
            feedback = FeedbackRead(
                rating=message.feedback_rating,
                comment=message.feedback_comment,
                updated_at=message.feedback_at,
            )
        return cls(
            id=message.id,
            chat_session_id=message.chat_session_id,
            role=message.role,
            content=message.content,
            timestamp=message.completed_at or message.created_at,
            status=message.status,
            provider=message.provider,
            model=message.model,
            attempts=message.attempts,
            usage=usage,
            latency_ms=message.latency_ms,
            finish_reason=message.finish_reason,
            intent=message.intent,
            error=error,
            feedback=feedback,
            citations=message.citations or [],
        )


class ChatResponse(BaseModel):
    session_id: uuid.UUID
    message: MessageRead = Field(description="Your message, as stored.")
    assistant_message: MessageRead = Field(description="The reply, as stored.")
    usage: UsageRead | None = Field(description="Tokens used by this turn, when reported.")
    reply: str = Field(
        description="The text to show: the reply, or the project's fallback reply when "
        "`fallback` is true."
    )
    intent: str | None = Field(description="The intent that answered (no LLM call), if any.")
    links: list[Link] = Field(description="The intent's links (empty otherwise).")
    requires_login: bool = Field(description="The intent's `requires_login` (false otherwise).")
    fallback: bool = Field(
        description="True when the LLM failed and `reply` is the project's fallback reply; "
        "`assistant_message` then holds the recorded failure."
    )
    citations: list[CitationRead] = Field(
        description="The knowledge-base sources `[n]` in `reply` refers to (as on "
        "`assistant_message`)."
    )


Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class SessionUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"title": "Orders"}]})

    title: Title


class SessionRead(BaseModel):
    id: uuid.UUID
    project_id: uuid.UUID
    end_user_id: str | None = Field(description="The end user the session belongs to, if any.")
    title: str | None
    message_count: int
    usage: UsageRead = Field(description="Tokens used by every reply in the session.")
    created_at: datetime
    last_activity_at: datetime

    @classmethod
    def from_model(cls, chat_session: ChatSession) -> SessionRead:
        return cls(
            id=chat_session.id,
            project_id=chat_session.project_id,
            end_user_id=chat_session.end_user_id,
            title=chat_session.title,
            message_count=chat_session.message_count,
            usage=UsageRead(
                prompt_tokens=chat_session.prompt_tokens,
                completion_tokens=chat_session.completion_tokens,
                total_tokens=chat_session.total_tokens,
            ),
            created_at=chat_session.created_at,
            last_activity_at=chat_session.last_activity_at,
        )
