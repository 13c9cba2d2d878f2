"""Intent routes, nested under a project."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from app.auth.dependencies import RequireAdmin
from app.core.errors import error_responses
from app.core.pagination import Page, PageParamsDep
from app.intents.dependencies import IntentServiceDep
from app.intents.schemas import IntentCreate, IntentRead, IntentUpdate

router = APIRouter(
    prefix="/projects/{project_id}/intents",
    tags=["Intents"],
    responses=error_responses(401, 403, 404, 422),
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=IntentRead,
    dependencies=[RequireAdmin],
)
async def create_intent(
    project_id: uuid.UUID, body: IntentCreate, intents: IntentServiceDep
) -> object:
    """Add an intent: messages matching one of its patterns get its canned reply, without an
    LLM call. Active intents are tried by priority (highest first, then newest); the first
    match answers."""
    return await intents.create(project_id, body)


@router.get("", response_model=Page[IntentRead])
async def list_intents(
    project_id: uuid.UUID, intents: IntentServiceDep, page: PageParamsDep
) -> object:
    """The project's intents in the order they are tried."""
    items, next_cursor = await intents.list_page(project_id, page)
    return Page[IntentRead](
        items=[IntentRead.model_validate(i) for i in items], next_cursor=next_cursor
    )


@router.get("/{intent_id}", response_model=IntentRead)
async def get_intent(
    project_id: uuid.UUID, intent_id: uuid.UUID, intents: IntentServiceDep
) -> object:
    """One intent."""
    return await intents.get(project_id, intent_id)


@router.patch(
    "/{intent_id}",
    response_model=IntentRead,
    dependencies=[RequireAdmin],
)
async def update_intent(
    project_id: uuid.UUID, intent_id: uuid.UUID, body: IntentUpdate, intents: IntentServiceDep
) -> object:
    """Change an intent (only the fields sent)."""
    return await intents.update(project_id, intent_id, body)


@router.delete(
    "/{intent_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[RequireAdmin],
)
async def delete_intent(
    project_id: uuid.UUID, intent_id: uuid.UUID, intents: IntentServiceDep
) -> Response:
    """Delete an intent."""
    await intents.delete(project_id, intent_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
