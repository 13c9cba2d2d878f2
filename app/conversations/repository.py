"""Conversations, scoped to a workspace, and the lock every change of their state takes."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import update

from app.core.repository import WorkspaceRepository
from app.core.types import utcnow
from app.models import Channel, ChannelMessage, Conversation


class ConversationRepository(WorkspaceRepository[Conversation]):
    model = Conversation

    async def lock(self, conversation_id: uuid.UUID) -> Conversation | None:
        """The conversation, locked for the rest of the transaction. The lock is a write (an
        UPDATE of `updated_at`) so it is the same on both databases: Postgres locks the row,
        SQLite takes its write lock, and what is read next is the latest committed state."""
        result = await self.session.scalars(
            update(Conversation)
            .where(
                Conversation.workspace_id == self.workspace_id, Conversation.id == conversation_id
            )
            .values(updated_at=utcnow())
            .returning(Conversation)
            .execution_options(populate_existing=True)
        )
        conversation: Conversation | None = result.one_or_none()
        return conversation


class ChannelRepository(WorkspaceRepository[Channel]):
    model = Channel


class ChannelMessageRepository(WorkspaceRepository[ChannelMessage]):
    model = ChannelMessage

    async def for_messages(
        self, message_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, list[ChannelMessage]]:
        """The provider side (parts) of each of these chat messages."""
        if not message_ids:
            return {}
        rows = await self.session.execute(
            self.scoped()
            .where(ChannelMessage.chat_message_id.in_(message_ids))
            .order_by(ChannelMessage.part)
        )
        found: dict[uuid.UUID, list[ChannelMessage]] = {}
        for row in rows.scalars():
            assert row.chat_message_id is not None  # noqa: S101 - selected by it
            found.setdefault(row.chat_message_id, []).append(row)
        return found


def window_expires_at(conversation: Conversation) -> datetime | None:
    """The end of Meta's 24-hour customer-service window (None: the contact never wrote)."""
    if conversation.last_inbound_at is None:
        return None
    return conversation.last_inbound_at + timedelta(hours=24)
