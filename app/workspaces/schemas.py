"""Workspace and member API schemas."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from app.workspaces.roles import Role

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class WorkspaceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "Support"}]})

    name: Name


RetentionDays = Annotated[int, Field(ge=1, le=36500)]
_TTL_DOC = (
    "The default for the workspace's projects: delete sessions idle longer than this many days "
    "(a project's own `session_ttl_days` wins); null: kept."
)
_MESSAGES_DOC = (
    "The default for the workspace's projects: delete messages older than this many days (a "
    "project's own `message_retention_days` wins); null: kept."
)


class WorkspaceUpdate(BaseModel):
    """Only the fields sent are changed."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "Customer support", "session_ttl_days": 90}]},
    )

    name: Name | None = None
    session_ttl_days: RetentionDays | None = Field(default=None, description=_TTL_DOC)
    message_retention_days: RetentionDays | None = Field(default=None, description=_MESSAGES_DOC)


class WorkspaceRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    is_personal: bool = Field(
        description="Your personal workspace: where requests without `X-Workspace-ID` act."
    )
    role: Role = Field(description="Your role in this workspace.")
    session_ttl_days: int | None = Field(default=None, description=_TTL_DOC)
    message_retention_days: int | None = Field(default=None, description=_MESSAGES_DOC)
    created_at: datetime
    updated_at: datetime


class MemberRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    user_id: uuid.UUID
    email: EmailStr
    role: Role
    joined_at: datetime


class MemberUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"role": "agent"}]})

    role: Role = Field(
        description="owner, admin, agent or viewer. Only owners grant or take away `owner` "
        "(that is how ownership is transferred); a workspace keeps at least one owner."
    )


class InvitationCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"email": "agent@example.com", "role": "agent"}]},
    )

    email: EmailStr
    role: Role = Field(
        default=Role.AGENT, description="The role the invitee gets (owner: owners only)."
    )


class InvitationRead(BaseModel):
    id: uuid.UUID
    workspace_id: uuid.UUID
    email: str
    role: Role
    status: str = Field(description="pending, accepted, revoked or expired.")
    invited_by_id: uuid.UUID | None
    created_at: datetime
    expires_at: datetime
    accepted_at: datetime | None


class InvitationCreated(InvitationRead):
    token: str = Field(
        description="The one-time token, in this response only (we store its hash). The "
        "invitee accepts with `POST /invitations/accept`."
    )
    accept_url: str = Field(description="`{PUBLIC_BASE_URL}/accept-invitation?token=...`")


class InvitationAccept(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"token": "the-token-from-the-link"}]}
    )

    token: str = Field(min_length=1, max_length=200)
