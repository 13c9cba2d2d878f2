"""Prompt CRUD within a project."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import NotFoundError
from app.core.pagination import PageParams
from app.core.patching import apply_patch
from app.models import Prompt
from app.projects.service import ProjectService
from app.prompts.repository import PromptRepository
from app.prompts.schemas import PromptCreate, PromptUpdate


class PromptService:
    def __init__(self, session: AsyncSession, workspace_id: uuid.UUID) -> None:
        self.prompts = PromptRepository(session, workspace_id)
        self.projects = ProjectService(session, workspace_id)
        self.session = session

    async def create(self, project_id: uuid.UUID, data: PromptCreate) -> Prompt:
        await self.projects.get(project_id)
        values = data.model_dump()
        if values["position"] is None:
            values["position"] = await self.prompts.next_position(project_id)
        prompt = self.prompts.add(Prompt(id=uuid.uuid4(), project_id=project_id, **values))
        await self.session.flush()
        return prompt

    async def list_page(
        self, project_id: uuid.UUID, params: PageParams
    ) -> tuple[list[Prompt], str | None]:
        await self.projects.get(project_id)
        return await self.prompts.list_page(project_id, params)

    async def get(self, project_id: uuid.UUID, prompt_id: uuid.UUID) -> Prompt:
        """The prompt, or 404 if the project or prompt is not in this workspace."""
        prompt = await self.prompts.get_in_project(project_id, prompt_id)
        if prompt is None:
            await self.projects.get(project_id)  # says which one is missing
            raise NotFoundError("Prompt not found.", code="prompt_not_found")
        return prompt

    async def update(
        self, project_id: uuid.UUID, prompt_id: uuid.UUID, data: PromptUpdate
    ) -> Prompt:
        prompt = await self.get(project_id, prompt_id)
        apply_patch(prompt, data, not_null=("content", "position", "is_active"))
        await self.session.flush()
        await self.session.refresh(prompt)
        return prompt

    async def delete(self, project_id: uuid.UUID, prompt_id: uuid.UUID) -> None:
        await self.prompts.delete(await self.get(project_id, prompt_id))
        await self.session.flush()
