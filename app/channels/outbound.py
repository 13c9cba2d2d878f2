"""Sending on a channel: every message (the bot's, an operator's, the handoff message, an admin
command's confirmation) is stored with its parts and one `channel.send` job per part, in the
transaction that decides to send it. The jobs of one contact share an ordering key, so its
messages leave in order, each after the previous one was accepted or failed for good."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.chat.events import message_created, reply_finished
from app.chat.repository import SessionRepository
from app.core.types import utcnow
from app.events.recorder import mark_recorded
from app.jobs.queue import enqueue_many, job_row
from app.models import (
    Author,
    Channel,
    ChannelMessage,
    ChatMessage,
    Conversation,
    Event,
    MessageRole,
    MessageStatus,
)

SEND_KIND = "channel.send"
MAX_TEXT = 4096  # WhatsApp's limit for a text message's body
SEND_ATTEMPTS = 12


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """Parts of at most `limit` characters, cut at a paragraph, else a line, else a word."""
    parts: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        window = rest[:limit]
        cut = max(window.rfind("\n\n"), 0) or max(window.rfind("\n"), 0) or window.rfind(" ")
        if cut < limit // 2:
            cut = limit if window.rfind(" ") < limit // 2 else window.rfind(" ")
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        parts.append(rest)
    return parts


def send_job(channel_message: ChannelMessage, ordering: str) -> dict[str, Any]:
    return job_row(
        SEND_KIND,
        {"channel_message_id": str(channel_message.id)},
        workspace_id=channel_message.workspace_id,
        ordering_key=ordering,
        max_attempts=SEND_ATTEMPTS,
    )


def contact_ordering(conversation: Conversation) -> str:
    return f"send:{conversation.id}"


async def store_reply(
    db: AsyncSession,
    conversation: Conversation,
    text: str,
    *,
    author: Author,
    author_user_id: uuid.UUID | None = None,
    status: MessageStatus = MessageStatus.COMPLETE,
    send: bool = True,
    include_content: bool = False,
    **fields: Any,
) -> ChatMessage:
    """Store an assistant message in the conversation's session (with its event) and, if
    `send`, queue it to the contact. The bot's replies get `reply.completed`/`reply.failed`;
    everyone else's `message.created`."""
    message = await add_message(
        db,
        conversation,
        text,
        role=MessageRole.ASSISTANT,
        author=author,
        author_user_id=author_user_id,
        status=status,
        **fields,
    )
    if author == Author.BOT:
        values = {"status": status, "content": text, **fields}
        row = reply_finished(
            conversation.workspace_id,
            conversation.project_id,
            message,
            values,
            include_content=include_content,
        )
    else:
        row = message_created(
            conversation.workspace_id,
            conversation.project_id,
            message,
            end_user_id=None,
            include_content=include_content,
        )
    await add_event(db, row, author)
    if send:
        await queue_parts(db, conversation, message, text)
    return message


async def add_message(
    db: AsyncSession,
    conversation: Conversation,
    text: str,
    *,
    role: MessageRole,
    author: Author,
    author_user_id: uuid.UUID | None = None,
    status: MessageStatus = MessageStatus.COMPLETE,
    **fields: Any,
) -> ChatMessage:
    """A message added at the end of the conversation's session (its positions reserved)."""
    now = utcnow()
    sessions = SessionRepository(db, conversation.workspace_id)
    seq, event_seq = await sessions.reserve_seqs(conversation.chat_session_id, 1, now)
    message = ChatMessage(
        id=uuid.uuid4(),
        workspace_id=conversation.workspace_id,
        chat_session_id=conversation.chat_session_id,
        seq=seq,
        role=role,
        content=text,
        status=status,
        created_at=now,
        completed_at=now,
        event_seq=event_seq,
        author_type=author,
        author_user_id=author_user_id,
        **fields,
    )
    db.add(message)
    return message


async def add_event(db: AsyncSession, row: dict[str, Any], author: Author) -> None:
    """A message's event (`row`), saying who wrote it; flushed with the message, before the
    rows that refer to it."""
    row["data"]["author"] = author.value
    db.add(Event(**row))
    mark_recorded(db)
    await db.flush()


async def queue_parts(
    db: AsyncSession, conversation: Conversation, message: ChatMessage, text: str
) -> list[ChannelMessage]:
    parts = [
        ChannelMessage(
            id=uuid.uuid4(),
            workspace_id=conversation.workspace_id,
            channel_id=conversation.channel_id,
            conversation_id=conversation.id,
            chat_message_id=message.id,
            direction="out",
            part=index,
            recipient=conversation.contact_id,
            body=part,
            status="queued",
            created_at=utcnow(),
        )
        for index, part in enumerate(split_text(text))
    ]
    db.add_all(parts)
    await db.flush()
    ordering = contact_ordering(conversation)
    await enqueue_many(db, [send_job(part, ordering) for part in parts])
    return parts


async def queue_direct(db: AsyncSession, channel: Channel, to: str, text: str) -> None:
    """Send a text that belongs to no conversation (an admin command's confirmation)."""
    parts = [
        ChannelMessage(
            id=uuid.uuid4(),
            workspace_id=channel.workspace_id,
            channel_id=channel.id,
            direction="out",
            part=index,
            recipient=to,
            body=part,
            status="queued",
            created_at=utcnow(),
        )
        for index, part in enumerate(split_text(text))
    ]
    db.add_all(parts)
    await db.flush()
    ordering = f"send:{channel.id}:{to}"
    await enqueue_many(db, [send_job(part, ordering) for part in parts])
