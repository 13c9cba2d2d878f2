"""Audit log routes: owners and admins read their workspace's log."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse

from app.audit.schemas import AuditEntryRead, AuditFilterDep
from app.audit.service import AuditLog
from app.auth.dependencies import Principal, require_member_role
from app.core.db import SessionmakerDep
from app.core.errors import error_responses
from app.core.pagination import Page, PageParamsDep
from app.workspaces.roles import Role

router = APIRouter(
    prefix="/workspaces/{workspace_id}/audit-log",
    tags=["Audit log"],
    responses=error_responses(401, 403, 404, 422),
)


async def get_audit_log(
    maker: SessionmakerDep,
    principal: Annotated[Principal, Depends(require_member_role(Role.ADMIN))],
) -> AuditLog:
    return AuditLog(maker, principal.workspace_id)


AuditLogDep = Annotated[AuditLog, Depends(get_audit_log)]


@router.get("", response_model=Page[AuditEntryRead])
async def list_audit_log(
    workspace_id: uuid.UUID, log: AuditLogDep, where: AuditFilterDep, page: PageParamsDep
) -> Page[AuditEntryRead]:
    """Who changed what, newest first: configuration changes and security events, filtered by
    action (or an action prefix such as `project.`), actor, target and time (admin)."""
    items, next_cursor = await log.page(where, page)
    return Page[AuditEntryRead](items=items, next_cursor=next_cursor)


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "JSON Lines."}},
)
async def export_audit_log(
    workspace_id: uuid.UUID, log: AuditLogDep, where: AuditFilterDep
) -> StreamingResponse:
    """The matching entries as JSON Lines (one entry per line, newest first), streamed (admin)."""
    return StreamingResponse(
        log.export(where),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="audit-log.jsonl"'},
    )
