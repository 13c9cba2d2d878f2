"""Project (chatbot agent) routes."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from app.auth.dependencies import RequireAdmin
from app.core.dependencies import SettingsDep
from app.core.errors import error_responses
from app.core.pagination import Page, PageParamsDep
from app.knowledge.limits import check_overrides
from app.projects.dependencies import ProjectServiceDep
from app.projects.schemas import ProjectCreate, ProjectRead, ProjectUpdate

router = APIRouter(
    prefix="/projects", tags=["Projects"], responses=error_responses(401, 403, 404, 422)
)


@router.post(
    "",
    dependencies=[RequireAdmin],
    status_code=status.HTTP_201_CREATED,
    response_model=ProjectRead,
    responses=error_responses(409),
)
async def create_project(
    body: ProjectCreate, projects: ProjectServiceDep, settings: SettingsDep
) -> object:
    """Create a project: a chatbot agent with its own prompts, sessions and LLM settings."""
    check_overrides(settings, body.knowledge)
    return await projects.create(body)


@router.get("", response_model=Page[ProjectRead])
async def list_projects(projects: ProjectServiceDep, page: PageParamsDep) -> object:
    """Your projects, newest first."""
    items, next_cursor = await projects.list_page(page)
    return Page[ProjectRead](
        items=[ProjectRead.model_validate(p) for p in items], next_cursor=next_cursor
    )


@router.get("/{project_id}", response_model=ProjectRead, responses=error_responses(404))
async def get_project(project_id: uuid.UUID, projects: ProjectServiceDep) -> object:
    """One project."""
    return await projects.get(project_id)


@router.patch(
    "/{project_id}",
    response_model=ProjectRead,
    responses=error_responses(404, 409),
    dependencies=[RequireAdmin],
)
async def update_project(
    project_id: uuid.UUID, body: ProjectUpdate, projects: ProjectServiceDep, settings: SettingsDep
) -> object:
    """Change a project's name, description or LLM settings (only the fields sent)."""
    check_overrides(settings, body.knowledge)
    return await projects.update(project_id, body)


@router.delete(
    "/{project_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(404),
    dependencies=[RequireAdmin],
)
async def delete_project(project_id: uuid.UUID, projects: ProjectServiceDep) -> Response:
    """Delete a project with all its prompts, sessions and messages."""
    await projects.delete(project_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
