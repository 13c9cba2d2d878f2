"""System prompt routes, nested under a project."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from app.auth.dependencies import RequireAdmin
from app.core.errors import error_responses
from app.core.pagination import Page, PageParamsDep
from app.prompts.dependencies import PromptServiceDep
from app.prompts.schemas import PromptCreate, PromptRead, PromptUpdate

router = APIRouter(
    prefix="/projects/{project_id}/prompts",
    tags=["Prompts"],
    responses=error_responses(401, 403, 404, 422),
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=PromptRead,
    dependencies=[RequireAdmin],
)
async def create_prompt(
    project_id: uuid.UUID, body: PromptCreate, prompts: PromptServiceDep
) -> object:
    """Add a system prompt. Active prompts form the system message(s), in `position` order."""
    return await prompts.create(project_id, body)


@router.get("", response_model=Page[PromptRead])
async def list_prompts(
    project_id: uuid.UUID, prompts: PromptServiceDep, page: PageParamsDep
) -> object:
    """The project's prompts in the order they are sent (by position)."""
    items, next_cursor = await prompts.list_page(project_id, page)
    return Page[PromptRead](
        items=[PromptRead.model_validate(p) for p in items], next_cursor=next_cursor
    )


@router.get("/{prompt_id}", response_model=PromptRead)
async def get_prompt(
    project_id: uuid.UUID, prompt_id: uuid.UUID, prompts: PromptServiceDep
) -> object:
    """One prompt."""
    return await prompts.get(project_id, prompt_id)


@router.patch(
    "/{prompt_id}",
    response_model=PromptRead,
    dependencies=[RequireAdmin],
)
async def update_prompt(
    project_id: uuid.UUID, prompt_id: uuid.UUID, body: PromptUpdate, prompts: PromptServiceDep
) -> object:
    """Change a prompt's content, name, position or active flag (only the fields sent)."""
    return await prompts.update(project_id, prompt_id, body)


@router.delete(
    "/{prompt_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[RequireAdmin],
)
async def delete_prompt(
    project_id: uuid.UUID, prompt_id: uuid.UUID, prompts: PromptServiceDep
) -> Response:
    """Delete a prompt."""
    await prompts.delete(project_id, prompt_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
