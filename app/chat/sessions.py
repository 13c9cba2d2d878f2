"""Chat session browsing and management (the turns themselves are in `service.py`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.dependencies import Principal
from app.chat.repository import MessageRepository, SessionRepository
from app.chat.service import audience_of, message_not_found, session_not_found
from app.core.errors import ConflictError, check_project_reach
from app.core.pagination import PageParams
from app.events.recorder import next_sequence, record
from app.models import ChatMessage, ChatSession, MessageRole, MessageStatus
from app.projects.service import ProjectService


class SessionService:
    def __init__(self, session: AsyncSession, principal: Principal) -> None:
        self.audience = audience_of(principal)
        self.sessions = SessionRepository(session, principal.workspace_id, self.audience)
        self.messages = MessageRepository(session, principal.workspace_id)
        self.projects = ProjectService(session, principal.workspace_id)
        self.session = session

    async def list_page(
        self, project_id: uuid.UUID, params: PageParams, *, end_user_id: str | None = None
    ) -> tuple[list[ChatSession], str | None]:
        """The project's sessions, most recently active first (optionally one end user's)."""
        check_project_reach(self.audience.project_id, project_id)
        await self.projects.get(project_id)
        return await self.sessions.list_page(project_id, params, end_user_id=end_user_id)

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
        """Delete the session and its messages (a `session.deleted` event says so)."""
        chat_session = await self.get(session_id)
        record(
            self.session,
            chat_session.workspace_id,
            "session.deleted",
            {"session_id": str(chat_session.id), "message_count": chat_session.message_count},
            project_id=chat_session.project_id,
            session_id=chat_session.id,
            sequence=chat_session.event_seq + 1,
            subject=str(chat_session.id),
        )
        await self.sessions.delete(chat_session)
        await self.session.flush()

    async def set_feedback(
        self, message_id: uuid.UUID, rating: str | None, comment: str | None
    ) -> ChatMessage:
        """Rate a reply (or withdraw the rating with null); the latest feedback wins."""
        message = await self.messages.get(message_id)
        chat_session = None if message is None else await self.sessions.get(message.chat_session_id)
        if message is None or chat_session is None:
            raise message_not_found()
        if message.role != MessageRole.ASSISTANT:
            raise ConflictError(
                "Feedback is given on replies (assistant messages).", code="not_a_reply"
            )
        if message.status == MessageStatus.PENDING:
            raise ConflictError(
                "The reply is still being generated; rate it once it has finished.",
                code="reply_in_progress",
            )
        message.feedback_rating = rating
        message.feedback_comment = comment or None
        message.feedback_at = datetime.now(UTC)
        project = await self.projects.get(chat_session.project_id)
        data: dict[str, Any] = {
            "message_id": str(message.id),
            "session_id": str(chat_session.id),
            "rating": rating,
        }
        if project.events_include_content:
            data["comment"] = message.feedback_comment
        record(
            self.session,
            chat_session.workspace_id,
            "feedback.created" if rating is not None or comment else "feedback.deleted",
            data,
            project_id=chat_session.project_id,
            session_id=chat_session.id,
            sequence=await next_sequence(self.session, chat_session.workspace_id, chat_session.id),
            subject=str(message.id),
        )
        await self.session.flush()
        return message

    async def list_messages(
        self, session_id: uuid.UUID, params: PageParams
    ) -> tuple[list[ChatMessage], str | None]:
        """The session's messages, oldest first."""
        await self.get(session_id)
        return await self.messages.list_page(session_id, params)
