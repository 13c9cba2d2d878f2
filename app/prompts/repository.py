"""Prompt queries, scoped to one workspace."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from app.core.pagination import Keyset, PageParams
from app.core.repository import WorkspaceRepository
from app.models import Prompt

PROMPT_KEYSET = Keyset((Prompt.position, Prompt.created_at, Prompt.id))


class PromptRepository(WorkspaceRepository[Prompt]):
    model = Prompt

    async def get_in_project(self, project_id: uuid.UUID, prompt_id: uuid.UUID) -> Prompt | None:
        result = await self.session.execute(
            self.scoped().where(Prompt.project_id == project_id, Prompt.id == prompt_id)
        )
        prompt: Prompt | None = result.scalar_one_or_none()
        return prompt

    async def list_page(
        self, project_id: uuid.UUID, params: PageParams
    ) -> tuple[list[Prompt], str | None]:
        statement = self.scoped().where(Prompt.project_id == project_id)
        return await self.page(statement, PROMPT_KEYSET, params)

    async def active_contents(self, project_id: uuid.UUID) -> list[str]:
        """The active prompts' texts in order: the project's system message(s)."""
        result = await self.session.execute(
            select(Prompt.content)
            .where(
                Prompt.workspace_id == self.workspace_id,
                Prompt.project_id == project_id,
                Prompt.is_active.is_(True),
            )
            .order_by(*PROMPT_KEYSET.order_by())
        )
        return list(result.scalars().all())

    async def next_position(self, project_id: uuid.UUID) -> int:
        result = await self.session.execute(
            select(func.max(Prompt.position)).where(
                Prompt.workspace_id == self.workspace_id, Prompt.project_id == project_id
            )
        )
        current = result.scalar_one_or_none()
        return 0 if current is None else current + 1
