"""Channel bodies. Secrets are write-only: `ChannelRead` says whether they are set, never what
they are; the one secret we generate is in `ChannelCreated`, once."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Secret = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)]
Url = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
Number = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^\+?[0-9][0-9 \-]{3,30}$")
]
Keyword = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
_BASE_URL_DOC = (
    "Overrides the provider's host (a proxy; a fake in tests). The same outbound guard as "
    "webhooks applies: private and loopback addresses are refused unless the deployment sets "
    "OUTBOUND_ALLOW_PRIVATE_NETWORKS."
)


class ChannelSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    handoff_keywords: list[Keyword] | None = Field(
        default=None,
        max_length=100,
        description="Words that hand the conversation to a human (whole words, any case). "
        "Default: human, agent, operator, customer service, cs, manusia, petugas, admin.",
    )
    handoff_message: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = (
        Field(default=None, description="Sent to the contact when a handoff happens.")
    )
    llm_handoff: bool | None = Field(
        default=None,
        description="Let the model ask for a human (`HANDOFF: <reason>`). Default true.",
    )


class MetaChannelCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "provider": "meta_cloud",
                    "name": "Support line",
                    "phone_number_id": "106540352242922",
                    "access_token": "EAAG...",
                    "app_secret": "0123456789abcdef0123456789abcdef",
                }
            ]
        },
    )

    provider: Literal["meta_cloud"]
    name: Name
    phone_number_id: Annotated[str, StringConstraints(pattern=r"^[0-9]{5,30}$")]
    display_phone_number: Annotated[str, StringConstraints(max_length=50)] | None = None
    access_token: Secret = Field(description="A system-user access token (write-only).")
    app_secret: Secret = Field(description="The Meta app's secret, to check signatures.")
    api_version: Annotated[str, StringConstraints(pattern=r"^v\d+\.\d+$")] | None = Field(
        default=None, description="Graph API version; default WHATSAPP_API_VERSION."
    )
    base_url: Url | None = Field(default=None, description=_BASE_URL_DOC)
    settings: ChannelSettings = Field(default_factory=ChannelSettings)


class WhapiChannelCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "provider": "whapi",
                    "name": "Sales",
                    "token": "your-whapi-token",
                    "admin_numbers": ["62811000111"],
                }
            ]
        },
    )

    provider: Literal["whapi"]
    name: Name
    token: Secret = Field(description="The Whapi channel token (write-only).")
    base_url: Url | None = Field(default=None, description=_BASE_URL_DOC)
    admin_numbers: list[Number] = Field(
        default_factory=list,
        max_length=50,
        description="Numbers whose messages are admin commands (assign, unassign, reply, "
        "pause, resume, status), the seed's WHAPI_ADMINS.",
    )
    settings: ChannelSettings = Field(default_factory=ChannelSettings)


ChannelCreate = Annotated[MetaChannelCreate | WhapiChannelCreate, Field(discriminator="provider")]


class ChannelUpdate(BaseModel):
    """Only the fields sent are changed. New credentials bring an `auth_error` channel back."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"status": "disabled"}]}
    )

    name: Name | None = None
    status: Literal["active", "disabled"] | None = None
    access_token: Secret | None = Field(
        default=None, description="Meta access token or Whapi token."
    )
    app_secret: Secret | None = None
    base_url: Url | None = Field(default=None, description=_BASE_URL_DOC)
    api_version: Annotated[str, StringConstraints(pattern=r"^v\d+\.\d+$")] | None = None
    admin_numbers: list[Number] | None = Field(default=None, max_length=50)
    settings: ChannelSettings | None = None


class ChannelRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    project_id: uuid.UUID
    provider: str
    name: str
    status: str
    phone_number_id: str | None
    display_phone_number: str | None
    base_url: str | None
    api_version: str | None
    webhook_url: str = Field(description="Where the provider must send this channel's webhooks.")
    has_access_token: bool
    has_app_secret: bool
    admin_numbers: list[str]
    settings: dict[str, Any]
    last_webhook_at: datetime | None
    last_error_code: str | None
    last_error_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ChannelCreated(ChannelRead):
    verify_token: str | None = Field(
        default=None,
        description="Meta: paste it as the Verify Token with `webhook_url`. Shown only now.",
    )
    webhook_secret: str | None = Field(
        default=None,
        description="Whapi: configure it as the webhook header `X-Webhook-Secret`. Shown only now.",
    )


class RotatedSecret(BaseModel):
    verify_token: str | None = None
    webhook_secret: str | None = None
