"""Project CRUD."""

from __future__ import annotations

import uuid

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import ConflictError, project_not_found
from app.core.pagination import PageParams
from app.core.patching import apply_patch
from app.models import Project
from app.projects.repository import ProjectRepository
from app.projects.schemas import ProjectCreate, ProjectUpdate
from app.projects.slugs import slugify, with_suffix


class ProjectService:
    def __init__(self, session: AsyncSession, workspace_id: uuid.UUID) -> None:
        self.projects = ProjectRepository(session, workspace_id)
        self.session = session

    async def create(self, data: ProjectCreate) -> Project:
        values = data.model_dump()
        if data.slug is not None:
            await self._check_slug_free(data.slug)
        else:
            values["slug"] = slugify(data.name)
            if await self.projects.get_by_slug(values["slug"]) is not None:
                values["slug"] = with_suffix(values["slug"])
        project = self.projects.add(Project(id=uuid.uuid4(), **values))
        try:
            await self.session.flush()
        except IntegrityError as exc:  # a concurrent create took the slug first
            raise _slug_taken(values["slug"]) from exc
        return project

    async def get_by_id_or_slug(self, reference: str) -> Project | None:
        """The project a `model` field names: its id, or its slug."""
        try:
            return await self.projects.get(uuid.UUID(reference))
        except ValueError:
            return await self.projects.get_by_slug(reference)

    async def _check_slug_free(self, slug: str, project_id: uuid.UUID | None = None) -> None:
        owner = await self.projects.get_by_slug(slug)
        if owner is not None and owner.id != project_id:
            raise _slug_taken(slug)

    async def list_page(self, params: PageParams) -> tuple[list[Project], str | None]:
        return await self.projects.list_page(params)

    async def get(self, project_id: uuid.UUID) -> Project:
        """The project, or 404 if it does not exist in this workspace."""
        project = await self.projects.get(project_id)
        if project is None:
            raise project_not_found()
        return project

    async def update(self, project_id: uuid.UUID, data: ProjectUpdate) -> Project:
        project = await self.get(project_id)
        if data.slug is not None:
            await self._check_slug_free(data.slug, project.id)
        apply_patch(
            project,
            data,
            not_null=(
                "name",
                "slug",
                "history_window",
                "fallback_models",
                "events_include_content",
            ),
        )
        await self.session.flush()
        await self.session.refresh(project)
        return project

    async def delete(self, project_id: uuid.UUID) -> None:
        """Delete the project with its prompts, sessions and messages."""
        await self.projects.delete(await self.get(project_id))
        await self.session.flush()


def _slug_taken(slug: str) -> ConflictError:
    return ConflictError(
        f"Another project in your workspace already has the slug '{slug}'.", code="slug_taken"
    )
