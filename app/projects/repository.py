"""Project queries, scoped to one workspace."""

from __future__ import annotations

from app.core.pagination import Keyset, PageParams
from app.core.repository import WorkspaceRepository
from app.models import Project

# Newest first; id breaks ties so the order is total.
PROJECT_KEYSET = Keyset((Project.created_at, Project.id), descending=True)


class ProjectRepository(WorkspaceRepository[Project]):
    model = Project

    async def get_by_slug(self, slug: str) -> Project | None:
        result = await self.session.execute(self.scoped().where(Project.slug == slug))
        project: Project | None = result.scalar_one_or_none()
        return project

    async def list_page(self, params: PageParams) -> tuple[list[Project], str | None]:
        return await self.page(self.scoped(), PROJECT_KEYSET, params)
