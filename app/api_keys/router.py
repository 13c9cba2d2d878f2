"""Project API key routes (for signed-in users; keys cannot manage keys)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from app.api_keys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from app.api_keys.service import ApiKeyService, to_read
from app.auth.dependencies import CurrentPrincipal, PrincipalCacheDep, RequireAdmin
from app.core.db import SessionDep
from app.core.errors import error_responses
from app.core.pagination import Page, PageParamsDep

router = APIRouter(
    prefix="/projects/{project_id}/api-keys",
    tags=["API keys"],
    responses=error_responses(401, 403, 404, 422),
)


async def get_api_key_service(session: SessionDep, principal: CurrentPrincipal) -> ApiKeyService:
    return ApiKeyService(session, principal.workspace_id)


ApiKeyServiceDep = Annotated[ApiKeyService, Depends(get_api_key_service)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreated,
    dependencies=[RequireAdmin],
)
async def create_api_key(
    project_id: uuid.UUID, body: ApiKeyCreate, keys: ApiKeyServiceDep, principal: CurrentPrincipal
) -> ApiKeyCreated:
    """Issue a key for your backend to call this project's chat and sessions.

    The secret (`cbp_…`) is in this response only; we store a hash. Send it as
    `Authorization: Bearer cbp_…` or `X-API-Key: cbp_…`, with `X-End-User-ID` naming the end user
    you act for.
    """
    return await keys.create(project_id, body, created_by=principal.user_id)  # type: ignore[arg-type]


@router.get(
    "",
    response_model=Page[ApiKeyRead],
    dependencies=[RequireAdmin],
)
async def list_api_keys(
    project_id: uuid.UUID, keys: ApiKeyServiceDep, page: PageParamsDep
) -> Page[ApiKeyRead]:
    """The project's live keys (prefix, name, scopes, dates; never the secret), newest first."""
    items, next_cursor = await keys.list_page(project_id, page)
    return Page[ApiKeyRead](items=[to_read(k) for k in items], next_cursor=next_cursor)


@router.delete(
    "/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[RequireAdmin],
)
async def revoke_api_key(
    project_id: uuid.UUID,
    key_id: uuid.UUID,
    keys: ApiKeyServiceDep,
    principals: PrincipalCacheDep,
) -> Response:
    """Revoke a key. It stops working at once; with several API processes, the others may
    accept it for up to `AUTH_CACHE_SECONDS` more (5 by default)."""
    await keys.revoke(project_id, key_id)
    principals.forget_api_key(key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
