"""Intent CRUD within a project."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import NotFoundError
from app.core.pagination import PageParams
from app.core.patching import apply_patch
from app.intents.repository import IntentRepository
from app.intents.schemas import IntentCreate, IntentUpdate
from app.models import Intent
from app.projects.service import ProjectService


class IntentService:
    def __init__(self, session: AsyncSession, workspace_id: uuid.UUID) -> None:
        self.intents = IntentRepository(session, workspace_id)
        self.projects = ProjectService(session, workspace_id)
        self.session = session

    async def create(self, project_id: uuid.UUID, data: IntentCreate) -> Intent:
        await self.projects.get(project_id)
        intent = self.intents.add(
            Intent(id=uuid.uuid4(), project_id=project_id, **data.model_dump(mode="json"))
        )
        await self.session.flush()
        return intent

    async def list_page(
        self, project_id: uuid.UUID, params: PageParams
    ) -> tuple[list[Intent], str | None]:
        await self.projects.get(project_id)
        return await self.intents.list_page(project_id, params)

    async def get(self, project_id: uuid.UUID, intent_id: uuid.UUID) -> Intent:
        """The intent, or 404 if the project or intent is not in this workspace."""
        intent = await self.intents.get_in_project(project_id, intent_id)
        if intent is None:
            await self.projects.get(project_id)  # says which one is missing
            raise NotFoundError("Intent not found.", code="intent_not_found")
        return intent

    async def update(
        self, project_id: uuid.UUID, intent_id: uuid.UUID, data: IntentUpdate
    ) -> Intent:
        intent = await self.get(project_id, intent_id)
        apply_patch(
            intent,
            data,
            not_null=(
                "name",
                "patterns",
                "reply",
                "links",
                "requires_login",
                "action",
                "priority",
                "active",
            ),
        )
        await self.session.flush()
        await self.session.refresh(intent)
        return intent

    async def delete(self, project_id: uuid.UUID, intent_id: uuid.UUID) -> None:
        await self.intents.delete(await self.get(project_id, intent_id))
        await self.session.flush()
