"""Intent queries, scoped to one workspace."""

from __future__ import annotations

import uuid

from app.core.pagination import Keyset, PageParams
from app.core.repository import WorkspaceRepository
from app.intents.matcher import IntentRule
from app.models import Intent

# The order intents are listed and tried in: highest priority first, then newest.
INTENT_KEYSET = Keyset((Intent.priority, Intent.created_at, Intent.id), descending=True)


class IntentRepository(WorkspaceRepository[Intent]):
    model = Intent

    async def get_in_project(self, project_id: uuid.UUID, intent_id: uuid.UUID) -> Intent | None:
        result = await self.session.execute(
            self.scoped().where(Intent.project_id == project_id, Intent.id == intent_id)
        )
        intent: Intent | None = result.scalar_one_or_none()
        return intent

    async def list_page(
        self, project_id: uuid.UUID, params: PageParams
    ) -> tuple[list[Intent], str | None]:
        statement = self.scoped().where(Intent.project_id == project_id)
        return await self.page(statement, INTENT_KEYSET, params)

    async def active_rules(self, project_id: uuid.UUID) -> list[IntentRule]:
        """The project's active intents in the order they are tried."""
        result = await self.session.execute(
            self.scoped()
            .where(Intent.project_id == project_id, Intent.active.is_(True))
            .order_by(*INTENT_KEYSET.order_by())
        )
        return [IntentRule.of(intent) for intent in result.scalars().all()]
