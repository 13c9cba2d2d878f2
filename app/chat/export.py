"""Session export as JSON or Markdown, streamed in batches so a long session never sits in
memory whole."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.dependencies import Principal
from app.chat.repository import MessageRepository, SessionRepository
from app.chat.schemas import MessageRead, SessionRead
from app.chat.service import audience_of, session_not_found
from app.models import ChatMessage, ChatSession, MessageStatus

ExportFormat = Literal["json", "markdown"]
BATCH_SIZE = 500
MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "markdown": "text/markdown; charset=utf-8",
}
EXTENSIONS = {"json": "json", "markdown": "md"}


class SessionExporter:
    def __init__(self, maker: async_sessionmaker[AsyncSession], principal: Principal) -> None:
        self.maker = maker
        self.workspace_id = principal.workspace_id
        self.audience = audience_of(principal)

    async def open(self, session_id: uuid.UUID, fmt: ExportFormat) -> AsyncIterator[str]:
        """Check the session exists (404 before anything is sent), then the document's parts."""
        async with self.maker() as db:
            chat_session = await SessionRepository(db, self.workspace_id, self.audience).get(
                session_id
            )
        if chat_session is None:
            raise session_not_found()
        if fmt == "markdown":
            return self._markdown(chat_session)
        return self._json(chat_session)

    async def _messages(self, session_id: uuid.UUID) -> AsyncIterator[ChatMessage]:
        after = 0
        while True:
            async with self.maker() as db:
                batch = await MessageRepository(db, self.workspace_id).after_seq(
                    session_id, after, BATCH_SIZE
                )
            for message in batch:
                yield message
            if len(batch) < BATCH_SIZE:
                return
            after = batch[-1].seq

    async def _json(self, chat_session: ChatSession) -> AsyncIterator[str]:
        session = SessionRead.from_model(chat_session).model_dump_json()
        exported_at = json.dumps(datetime.now(UTC).isoformat())
        yield f'{{"session": {session}, "exported_at": {exported_at}, "messages": ['
        separator = ""
        async for message in self._messages(chat_session.id):
            yield separator + MessageRead.from_model(message).model_dump_json()
            separator = ", "
        yield "]}\n"

    async def _markdown(self, chat_session: ChatSession) -> AsyncIterator[str]:
        title = chat_session.title or "Untitled session"
        yield (
            f"# {title}\n\n"
            f"- Session: `{chat_session.id}`\n"
            f"- Project: `{chat_session.project_id}`\n"
            f"- Started: {_when(chat_session.created_at)}\n"
            f"- Messages: {chat_session.message_count}\n"
            f"- Tokens: {chat_session.total_tokens}\n"
        )
        async for message in self._messages(chat_session.id):
            yield _markdown_message(message)


def _markdown_message(message: ChatMessage) -> str:
    who = "User" if message.role == "user" else "Assistant"
    heading = [who, _when(message.completed_at or message.created_at)]
    if message.role == "assistant" and message.model:
        heading.append(message.model)
    if message.status != MessageStatus.COMPLETE:
        heading.append(f"_{message.status}_")
    parts = [f"\n---\n\n### {' · '.join(heading)}\n\n"]
    if message.content:
        parts.append(message.content.rstrip() + "\n")
    if message.error_code:
        parts.append(f"\n> {message.error_code}: {message.error_message or ''}\n")
    if message.feedback_rating:
        comment = f" — {message.feedback_comment}" if message.feedback_comment else ""
        parts.append(f"\n> Feedback: {message.feedback_rating}{comment}\n")
    return "".join(parts)


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
