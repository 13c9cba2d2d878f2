"""Session and message queries, scoped to one workspace."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import update

from app.core.pagination import Keyset, PageParams
from app.core.repository import WorkspaceRepository
from app.models import ChatMessage, ChatSession, MessageStatus

SESSION_KEYSET = Keyset((ChatSession.last_activity_at, ChatSession.id), descending=True)
MESSAGE_KEYSET = Keyset((ChatMessage.seq,))
_CONTEXT_STATUSES = (MessageStatus.COMPLETE, MessageStatus.INCOMPLETE)


class SessionRepository(WorkspaceRepository[ChatSession]):
    model = ChatSession

    async def list_page(
        self, project_id: uuid.UUID, params: PageParams
    ) -> tuple[list[ChatSession], str | None]:
        statement = self.scoped().where(ChatSession.project_id == project_id)
        return await self.page(statement, SESSION_KEYSET, params)

    async def reserve_seqs(self, session_id: uuid.UUID, count: int, now: datetime) -> int:
        """Atomically claim `count` message positions; returns the last one claimed."""
        result = await self.session.execute(
            update(ChatSession)
            .where(ChatSession.workspace_id == self.workspace_id, ChatSession.id == session_id)
            .values(message_count=ChatSession.message_count + count, last_activity_at=now)
            .returning(ChatSession.message_count)
        )
        return int(result.scalar_one())

    async def touch(self, session_id: uuid.UUID, now: datetime) -> None:
        await self.session.execute(
            update(ChatSession)
            .where(ChatSession.workspace_id == self.workspace_id, ChatSession.id == session_id)
            .values(last_activity_at=now)
        )


class MessageRepository(WorkspaceRepository[ChatMessage]):
    model = ChatMessage

    async def list_page(
        self, session_id: uuid.UUID, params: PageParams
    ) -> tuple[list[ChatMessage], str | None]:
        statement = self.scoped().where(ChatMessage.chat_session_id == session_id)
        return await self.page(statement, MESSAGE_KEYSET, params)

    async def history_window(self, session_id: uuid.UUID, size: int) -> list[ChatMessage]:
        """The last `size` usable messages, oldest first. Reads only those rows."""
        if size <= 0:
            return []
        result = await self.session.execute(
            self.scoped()
            .where(
                ChatMessage.chat_session_id == session_id,
                ChatMessage.status.in_(_CONTEXT_STATUSES),
                ChatMessage.content != "",
            )
            .order_by(ChatMessage.seq.desc())
            .limit(size)
        )
        return list(reversed(result.scalars().all()))
