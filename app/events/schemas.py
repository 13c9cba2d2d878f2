"""Webhook and event feed bodies."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

EVENT_TYPE_PATTERN = r"^([a-z_]+(\.[a-z_]+)*(\.\*)?|\*)$"
EventType = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=EVENT_TYPE_PATTERN, max_length=100)
]
Url = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
Description = Annotated[str, StringConstraints(max_length=2000)]

_TYPES_DOC = (
    "The event types to deliver: exact types (`reply.completed`) or `prefix.*` patterns "
    "(`session.*`); empty or omitted: every event."
)
_URL_DOC = (
    "An http(s) URL. Addresses that resolve to loopback, private, link-local or metadata "
    "networks are refused (unless the deployment sets OUTBOUND_ALLOW_PRIVATE_NETWORKS)."
)


class WebhookCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "url": "https://example.com/hooks/chatbot",
                    "event_types": ["reply.completed", "session.*"],
                    "description": "CRM sync",
                }
            ]
        },
    )

    url: Url = Field(description=_URL_DOC)
    event_types: list[EventType] = Field(
        default_factory=list, max_length=50, description=_TYPES_DOC
    )
    description: Description | None = None


class WebhookUpdate(BaseModel):
    """Only the fields sent are changed."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"is_enabled": True}]}
    )

    url: Url | None = Field(default=None, description=_URL_DOC)
    event_types: list[EventType] | None = Field(default=None, max_length=50, description=_TYPES_DOC)
    description: Description | None = None
    is_enabled: bool | None = Field(
        default=None,
        description="false pauses deliveries; true turns a (possibly auto-)disabled webhook on.",
    )


class WebhookRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    project_id: uuid.UUID
    url: str
    event_types: list[str]
    description: str | None
    is_enabled: bool
    disabled_at: datetime | None
    disabled_reason: str | None
    failing_since: datetime | None = Field(
        description="The first failed attempt since the last success; null when healthy."
    )
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookRead):
    signing_secret: str = Field(
        description="Verify each delivery's `webhook-signature` with it (Standard Webhooks). "
        "Shown only now: store it."
    )


class DeliveryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    webhook_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    attempt: int
    status: str = Field(description="`succeeded` (a 2xx answer) or `failed`.")
    response_status: int | None = Field(description="The endpoint's HTTP status, if it answered.")
    latency_ms: int
    error: str | None
    created_at: datetime


class ResendAccepted(BaseModel):
    delivery_id: uuid.UUID
    event_id: uuid.UUID
    status: str = "queued"


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 envelope (JSON format)."""

    model_config = ConfigDict(extra="allow")

    specversion: str = "1.0"
    id: str
    source: str
    type: str
    time: str
    subject: str | None = None
    datacontenttype: str = "application/json"
    workspaceid: str
    projectid: str | None = None
    sessionid: str | None = None
    sequence: int | None = Field(default=None, description="1, 2, ... per session.")
    data: dict[str, Any]
