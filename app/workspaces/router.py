"""Workspace and member routes. The workspace in the path is the one acted in: a workspace you
are not a member of answers 404, and your role there decides the rest (403 `insufficient_role`)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from app.auth.dependencies import (
    CurrentPrincipal,
    Principal,
    PrincipalCacheDep,
    get_current_principal,
    get_workspace_member,
    require_member_role,
)
from app.core.db import SessionDep
from app.core.dependencies import SettingsDep
from app.core.errors import error_responses
from app.core.pagination import Page, PageParamsDep
from app.workspaces.invitations import InvitationService, accept
from app.workspaces.roles import Role
from app.workspaces.schemas import (
    InvitationAccept,
    InvitationCreate,
    InvitationCreated,
    InvitationRead,
    MemberRead,
    MemberUpdate,
    WorkspaceCreate,
    WorkspaceRead,
    WorkspaceUpdate,
)
from app.workspaces.service import WorkspaceService

router = APIRouter(
    prefix="/workspaces", tags=["Workspaces"], responses=error_responses(401, 403, 404, 422)
)


def _service(
    caller: Callable[..., Awaitable[Principal]],
) -> Callable[..., Awaitable[WorkspaceService]]:
    """The service for the caller `caller` resolves (and authorizes)."""

    async def build(
        session: SessionDep,
        principals: PrincipalCacheDep,
        principal: Principal = Depends(caller),  # a default: see require_scope
    ) -> WorkspaceService:
        return WorkspaceService(session, principal, principals)

    return build


async def get_invitation_service(
    session: SessionDep,
    principal: Annotated[Principal, Depends(require_member_role(Role.ADMIN))],
    settings: SettingsDep,
) -> InvitationService:
    return InvitationService(session, principal, settings)


InvitationsDep = Annotated[InvitationService, Depends(get_invitation_service)]
# The caller's own workspaces; then the one in the path, as any member, an admin, an owner.
OwnWorkspaces = Annotated[WorkspaceService, Depends(_service(get_current_principal))]
AsMember = Annotated[WorkspaceService, Depends(_service(get_workspace_member))]
AsAdmin = Annotated[WorkspaceService, Depends(_service(require_member_role(Role.ADMIN)))]
AsOwner = Annotated[WorkspaceService, Depends(_service(require_member_role(Role.OWNER)))]


@router.get("", response_model=Page[WorkspaceRead])
async def list_workspaces(workspaces: OwnWorkspaces, page: PageParamsDep) -> Page[WorkspaceRead]:
    """The workspaces you are a member of, with your role in each (oldest first)."""
    items, next_cursor = await workspaces.list_mine(page)
    return Page[WorkspaceRead](items=items, next_cursor=next_cursor)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=WorkspaceRead)
async def create_workspace(body: WorkspaceCreate, workspaces: OwnWorkspaces) -> WorkspaceRead:
    """Create a team workspace, with you as its owner. Act in it with `X-Workspace-ID`."""
    return await workspaces.create(body.name)


@router.get("/{workspace_id}", response_model=WorkspaceRead)
async def get_workspace(workspace_id: uuid.UUID, workspace: AsMember) -> WorkspaceRead:
    """One workspace you are a member of."""
    return await workspace.get()


@router.patch("/{workspace_id}", response_model=WorkspaceRead)
async def update_workspace(
    workspace_id: uuid.UUID, body: WorkspaceUpdate, workspace: AsAdmin
) -> WorkspaceRead:
    """Rename a workspace or set its retention defaults (admin)."""
    return await workspace.update(body)


@router.delete(
    "/{workspace_id}", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(409)
)
async def delete_workspace(workspace_id: uuid.UUID, workspace: AsOwner) -> Response:
    """Delete a team workspace with everything it owns: projects, prompts, intents, API keys,
    sessions and messages (owner). A personal workspace cannot be deleted (409)."""
    await workspace.delete()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{workspace_id}/members", response_model=Page[MemberRead])
async def list_members(
    workspace_id: uuid.UUID, workspace: AsMember, page: PageParamsDep
) -> Page[MemberRead]:
    """The workspace's members and their roles, in the order they joined."""
    items, next_cursor = await workspace.list_members(page)
    return Page[MemberRead](items=items, next_cursor=next_cursor)


@router.patch(
    "/{workspace_id}/members/{user_id}",
    response_model=MemberRead,
    responses=error_responses(409),
)
async def change_member_role(
    workspace_id: uuid.UUID, user_id: uuid.UUID, body: MemberUpdate, workspace: AsAdmin
) -> MemberRead:
    """Change a member's role (admin; owner to touch an owner or make one). Transfer ownership
    by making another member owner, then stepping down; the last owner cannot (409)."""
    return await workspace.change_role(user_id, body.role)


@router.delete(
    "/{workspace_id}/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(409),
)
async def remove_member(
    workspace_id: uuid.UUID, user_id: uuid.UUID, workspace: AsMember
) -> Response:
    """Remove a member (admin; owner to remove an owner), or leave: remove yourself. The last
    owner cannot leave (409)."""
    await workspace.remove_member(user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{workspace_id}/invitations",
    status_code=status.HTTP_201_CREATED,
    response_model=InvitationCreated,
    responses=error_responses(409),
)
async def create_invitation(
    workspace_id: uuid.UUID, body: InvitationCreate, invitations: InvitationsDep
) -> InvitationCreated:
    """Invite someone by email with a role (admin; owner to invite an owner). The token and its
    link are in this response only; a pending invitation to the same address is replaced."""
    return await invitations.invite(body)


@router.get("/{workspace_id}/invitations", response_model=Page[InvitationRead])
async def list_invitations(
    workspace_id: uuid.UUID, invitations: InvitationsDep, page: PageParamsDep
) -> Page[InvitationRead]:
    """The workspace's invitations, newest first, with their status (admin)."""
    items, next_cursor = await invitations.list_page(page)
    return Page[InvitationRead](items=items, next_cursor=next_cursor)


@router.delete(
    "/{workspace_id}/invitations/{invitation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(409),
)
async def revoke_invitation(
    workspace_id: uuid.UUID, invitation_id: uuid.UUID, invitations: InvitationsDep
) -> Response:
    """Revoke a pending invitation: its token stops working (admin)."""
    await invitations.revoke(invitation_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


invitations_router = APIRouter(
    prefix="/invitations", tags=["Workspaces"], responses=error_responses(401, 403, 404, 422)
)


@invitations_router.post(
    "/accept", response_model=InvitationRead, responses=error_responses(409, 410)
)
async def accept_invitation(
    body: InvitationAccept, session: SessionDep, principal: CurrentPrincipal
) -> InvitationRead:
    """Join the workspace an invitation names, signed in with the invited email address. A
    token works once: used, revoked or expired, it answers 410."""
    return await accept(session, principal, body.token)
