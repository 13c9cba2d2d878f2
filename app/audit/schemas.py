"""Audit log API schemas."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Query
from pydantic import BaseModel, ConfigDict, Field


class AuditActor(BaseModel):
    type: str = Field(description="user, api_key or system.")
    id: uuid.UUID | None
    label: str | None = Field(description="The user's email when the entry was written.")


class AuditEntryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    workspace_id: uuid.UUID
    occurred_at: datetime
    actor: AuditActor
    action: str = Field(examples=["project.updated", "member.role_changed"])
    target_type: str
    target_id: str | None
    changes: dict[str, Any] | None = Field(
        description='`{"field": {"before": ..., "after": ...}}`; secrets are "[redacted]".'
    )
    request_id: str | None
    ip: str | None
    user_agent: str | None


@dataclass(frozen=True)
class AuditFilter:
    action: str | None
    actor_id: uuid.UUID | None
    target_type: str | None
    target_id: str | None
    since: datetime | None
    until: datetime | None


def audit_filter(
    action: Annotated[
        str | None,
        Query(
            max_length=100, description="An action (`project.updated`) or a prefix (`project.`)."
        ),
    ] = None,
    actor_id: Annotated[uuid.UUID | None, Query(description="The acting user or API key.")] = None,
    target_type: Annotated[str | None, Query(max_length=50)] = None,
    target_id: Annotated[str | None, Query(max_length=100)] = None,
    since: Annotated[datetime | None, Query(description="From this time (inclusive).")] = None,
    until: Annotated[datetime | None, Query(description="Before this time.")] = None,
) -> AuditFilter:
    return AuditFilter(action, actor_id, target_type, target_id, since, until)


AuditFilterDep = Annotated[AuditFilter, Depends(audit_filter)]
