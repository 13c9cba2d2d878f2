"""Project CRUD."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import NotFoundError
from app.core.pagination import PageParams
from app.core.patching import apply_patch
from app.models import Project
from app.projects.repository import ProjectRepository
from app.projects.schemas import ProjectCreate, ProjectUpdate


class ProjectService:
    def __init__(self, session: AsyncSession, workspace_id: uuid.UUID) -> None:
        self.projects = ProjectRepository(session, workspace_id)
        self.session = session

    async def create(self, data: ProjectCreate) -> Project:
        project = self.projects.add(Project(id=uuid.uuid4(), **data.model_dump()))
        await self.session.flush()
        return project

    async def list_page(self, params: PageParams) -> tuple[list[Project], str | None]:
        return await self.projects.list_page(params)

    async def get(self, project_id: uuid.UUID) -> Project:
        """The project, or 404 if it does not exist in this workspace."""
        project = await self.projects.get(project_id)
        if project is None:
            raise NotFoundError("Project not found.", code="project_not_found")
        return project

    async def update(self, project_id: uuid.UUID, data: ProjectUpdate) -> Project:
        project = await self.get(project_id)
        apply_patch(project, data, not_null=("name", "history_window"))
        await self.session.flush()
        await self.session.refresh(project)
        return project

    async def delete(self, project_id: uuid.UUID) -> None:
        """Delete the project with its prompts, sessions and messages."""
        await self.projects.delete(await self.get(project_id))
        await self.session.flush()
