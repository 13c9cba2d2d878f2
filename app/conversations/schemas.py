"""Operator API bodies."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.knowledge.schemas import CitationRead

ReplyText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=16384)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=30)]


class Contact(BaseModel):
    id: str = Field(description="The WhatsApp id (digits) we send to.")
    name: str | None


class ConversationRead(BaseModel):
    id: uuid.UUID
    project_id: uuid.UUID
    channel_id: uuid.UUID
    provider: str
    chat_session_id: uuid.UUID = Field(
        description="Its messages, usage and export: /sessions/{id}."
    )
    contact: Contact
    mode: Literal["bot", "human", "paused"] = Field(
        description="Who answers: the bot, a human (the bot is silent), or nobody (paused)."
    )
    status: Literal["open", "pending_human", "resolved"]
    assignee_user_id: uuid.UUID | None
    handoff_reason: str | None
    handoff_requested_at: datetime | None
    waiting_since: datetime | None = Field(description="In the queue since (pending_human).")
    last_inbound_at: datetime | None
    window_expires_at: datetime | None = Field(
        description="Meta channels: free text can be sent until then (24 hours after the "
        "contact's last message)."
    )
    can_reply: bool
    unread_count: int
    version: int
    created_at: datetime
    updated_at: datetime


class Author(BaseModel):
    type: str = Field(description="contact | bot | operator | device | system")
    user_id: uuid.UUID | None = None


class DeliveryError(BaseModel):
    code: str
    title: str | None


class ConversationMessage(BaseModel):
    id: uuid.UUID
    seq: int
    role: str
    author: Author
    content: str
    status: str = Field(
        description="The message's own status; `suppressed`: the bot's reply "
        "was generated after a human took over, and never sent."
    )
    delivery_status: str | None = Field(
        description="Outbound: queued | accepted | sent | delivered | read | failed | "
        "suppressed (the least advanced of its parts); inbound: received."
    )
    error: DeliveryError | None = None
    citations: list[CitationRead] = Field(
        default_factory=list,
        description="A bot reply grounded in the project's knowledge base: the sources it was "
        "given, numbered as `[n]` in its text.",
    )
    created_at: datetime


class HandoffBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason | None = None


class AssignBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    assignee_id: uuid.UUID | None = Field(default=None, description="Default: yourself.")
    force: bool = Field(default=False, description="Take it from another operator (admins).")


class ReplyBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"text": "Halo, saya bantu ya."}]}
    )

    text: ReplyText = Field(
        description="Sent to the contact (split into parts over 4,096 characters)."
    )


class ReplyAccepted(BaseModel):
    message: ConversationMessage
    conversation: ConversationRead
