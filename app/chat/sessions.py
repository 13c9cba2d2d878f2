"""Chat session browsing and management (the turns themselves are in `service.py`)."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.chat.repository import MessageRepository, SessionRepository
from app.chat.service import session_not_found
from app.core.pagination import PageParams
from app.models import ChatMessage, ChatSession
from app.projects.service import ProjectService


class SessionService:
    def __init__(self, session: AsyncSession, workspace_id: uuid.UUID) -> None:
        self.sessions = SessionRepository(session, workspace_id)
        self.messages = MessageRepository(session, workspace_id)
        self.projects = ProjectService(session, workspace_id)
        self.session = session

    async def list_page(
        self, project_id: uuid.UUID, params: PageParams
    ) -> tuple[list[ChatSession], str | None]:
        """The project's sessions, most recently active first."""
        await self.projects.get(project_id)
        return await self.sessions.list_page(project_id, params)

    async def get(self, session_id: uuid.UUID) -> ChatSession:
        chat_session = await self.sessions.get(session_id)
        if chat_session is None:
            raise session_not_found()
        return chat_session

    async def rename(self, session_id: uuid.UUID, title: str) -> ChatSession:
        chat_session = await self.get(session_id)
        chat_session.title = title
        await self.session.flush()
        return chat_session

    async def delete(self, session_id: uuid.UUID) -> None:
        """Delete the session and its messages."""
        await self.sessions.delete(await self.get(session_id))
        await self.session.flush()

    async def list_messages(
        self, session_id: uuid.UUID, params: PageParams
    ) -> tuple[list[ChatMessage], str | None]:
        """The session's messages, oldest first."""
        await self.get(session_id)
        return await self.messages.list_page(session_id, params)
