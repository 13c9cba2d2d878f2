"""Storing what a provider's webhook carried. The webhook verifies, parses, stores and
acknowledges; it calls neither the LLM nor the provider.

Each message is one short transaction:
1. the contact's conversation is locked (made, with its chat session, on a first message);
2. the message is stored in the session, and its provider id in `channel_messages`, whose
   unique (channel, direction, provider id) makes a re-delivered webhook a no-op: the
   duplicate's transaction stops there and rolls back;
3. the first gate: if the bot has the conversation, a `conversation.reply` job is queued
   (app/conversations/bot.py), in the same transaction.
Admin numbers' commands, our own echoes and messages typed on the linked phone take other
paths (app/conversations/commands.py, `_from_device`).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import case, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.channels import contact_message
from app.channels.contact_message import Duplicate
from app.channels.outbound import add_event, add_message
from app.channels.providers.base import Inbound, InboundMessage
from app.channels.statuses import apply_status
from app.chat.events import message_created, session_created
from app.chat.service import title_from_message
from app.conversations import commands
from app.conversations.bot import queue_reply
from app.conversations.transitions import DEVICE, Action, Actor, apply
from app.core.db import autocommit_session, engine_of
from app.core.driver import transaction
from app.core.types import utcnow
from app.models import (
    Author,
    Channel,
    ChannelMessage,
    ChatMessage,
    ChatSession,
    Conversation,
    ConversationStatus,
    Event,
    MessageRole,
    Mode,
)

logger = logging.getLogger("app.channels")
CONTACT = Actor("contact")
WEBHOOK_SEEN_PRECISION = timedelta(minutes=1)


@dataclass
class Received:
    stored: int = 0
    duplicates: int = 0
    statuses: int = 0


async def receive(
    maker: async_sessionmaker[AsyncSession],
    channel: Channel,
    inbound: Inbound,
    country_code: str,
    include_content: bool,
) -> Received:
    """Store everything in one webhook request: each message in its own transaction, then
    the statuses together."""
    outcome = Received()
    await _note_webhook(maker, channel)
    for message in inbound.messages:
        try:
            async with transaction(maker) as db:
                await _store(db, channel, message, country_code, include_content)
            outcome.stored += 1
        except Duplicate:
            outcome.duplicates += 1
    if inbound.statuses or inbound.errors:
        async with transaction(maker) as db:
            channel_row = await db.get(Channel, channel.id)
            assert channel_row is not None  # noqa: S101 - the request's channel
            for status in inbound.statuses:
                outcome.statuses += bool(await apply_status(db, channel_row, status))
            if inbound.errors:
                channel_row.last_error_code, channel_row.last_error_at = (
                    inbound.errors[-1],
                    utcnow(),
                )
    if inbound.ignored:
        logger.info("webhook entries ignored channel_id=%s count=%d", channel.id, inbound.ignored)
    return outcome


async def _note_webhook(maker: async_sessionmaker[AsyncSession], channel: Channel) -> None:
    """Keep `last_webhook_at` (the channel's health) to the minute on Postgres, in a statement
    of its own: not in the messages' transactions, where the channel's row would serialise
    them. (On SQLite every message's transaction writes it first anyway, see `_store`.)"""
    now = utcnow()
    seen = channel.last_webhook_at
    if engine_of(maker).dialect.name != "postgresql" or (
        seen is not None and now - seen < WEBHOOK_SEEN_PRECISION
    ):
        return
    async with autocommit_session(maker) as db:
        await db.execute(
            update(Channel)
            .where(
                Channel.id == channel.id,
                or_(
                    Channel.last_webhook_at.is_(None),
                    Channel.last_webhook_at < now - WEBHOOK_SEEN_PRECISION,
                ),
            )
            .values(last_webhook_at=now)
        )
    channel.last_webhook_at = now  # the cached copy: not again for a minute


async def _store(
    db: AsyncSession,
    channel: Channel,
    message: InboundMessage,
    country_code: str,
    include_content: bool,
) -> None:
    """One message. A contact's, on Postgres: BEGIN, one statement
    (app/channels/contact_message.py), COMMIT."""
    if db.get_bind().dialect.name != "postgresql":
        # SQLite: write first, so this transaction holds the write lock from its start (a
        # read first could leave it unable to write later).
        await db.execute(
            update(Channel).where(Channel.id == channel.id).values(last_webhook_at=utcnow())
        )
    if (
        not message.from_me
        and commands.is_admin(channel, message.contact_id, country_code)
        and commands.parse(message.text) is not None
    ):
        await _claim_id(db, channel, None, None, message.external_id)
        await commands.run(db, channel, message, country_code)
        return
    if message.from_me:
        conversation = await _conversation(db, channel, message, include_content, {})
        await _from_device(db, channel, conversation, message, include_content)
        return
    if db.get_bind().dialect.name == "postgresql":
        stored = await contact_message.store(db, channel, message, include_content)
        if stored.status == ConversationStatus.RESOLVED:
            reopened = await _lock_by_contact(db, channel.id, message.contact_id, {})
            assert reopened is not None  # noqa: S101 - the statement locked it
            await _reopen(db, reopened)
            await queue_reply(db, reopened.workspace_id, reopened.id, stored.message_id)
        return
    # SQLite: the same through the ORM.
    inbound = {
        "last_inbound_at": utcnow(),
        "last_inbound_external_id": message.external_id,
        "window_closed": False,
        "unread_count": case(
            (Conversation.mode == Mode.BOT, 0), else_=Conversation.unread_count + 1
        ),
    }
    if message.contact_name:
        inbound["contact_name"] = message.contact_name[:200]
    conversation = await _conversation(db, channel, message, include_content, inbound)
    user_message = await _add_message(db, conversation, message, include_content)
    await _claim_id(db, channel, conversation.id, user_message.id, message.external_id)
    if conversation.status == ConversationStatus.RESOLVED:
        await _reopen(db, conversation)
    if conversation.mode == Mode.BOT:
        await queue_reply(db, conversation.workspace_id, conversation.id, user_message.id)


async def _reopen(db: AsyncSession, conversation: Conversation) -> None:
    """A resolved conversation's contact writes again: back to the bot, unassigned."""
    conversation.mode, conversation.assignee_user_id = Mode.BOT, None
    conversation.unread_count = 0
    await apply(db, conversation, Action.REOPEN, CONTACT)


async def _claim_id(
    db: AsyncSession,
    channel: Channel,
    conversation_id: uuid.UUID | None,
    message_id: uuid.UUID | None,
    external_id: str,
) -> None:
    """Record the provider's message id; Duplicate (rolling the transaction back) if it is
    there already."""
    insert = postgresql.insert if db.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(ChannelMessage)
        .values(
            id=uuid.uuid4(),
            workspace_id=channel.workspace_id,
            channel_id=channel.id,
            conversation_id=conversation_id,
            chat_message_id=message_id,
            direction="in",
            part=0,
            external_id=external_id,
            status="received",
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["channel_id", "direction", "external_id"])
        .returning(ChannelMessage.id)
    )
    if (await db.execute(statement)).scalar_one_or_none() is None:
        raise Duplicate(external_id)


async def _conversation(
    db: AsyncSession,
    channel: Channel,
    message: InboundMessage,
    include_content: bool,
    values: dict[str, Any],
) -> Conversation:
    """The contact's conversation, locked (and updated with `values`); made, with its
    session, on their first message."""
    found = await _lock_by_contact(db, channel.id, message.contact_id, values)
    if found is not None:
        return found
    now = utcnow()
    chat_session = ChatSession(
        id=uuid.uuid4(),
        workspace_id=channel.workspace_id,
        project_id=channel.project_id,
        end_user_id=f"whatsapp:{message.contact_id}"[:200],
        title=title_from_message(message.contact_name or message.contact_id),
        message_count=0,
        event_seq=1,  # session.created
        created_at=now,
        last_activity_at=now,
    )
    db.add(chat_session)
    await db.flush()
    insert = postgresql.insert if db.get_bind().dialect.name == "postgresql" else sqlite.insert
    conversation_id = uuid.uuid4()
    made = await db.execute(
        insert(Conversation)
        .values(
            id=conversation_id,
            workspace_id=channel.workspace_id,
            project_id=channel.project_id,
            channel_id=channel.id,
            chat_session_id=chat_session.id,
            contact_id=message.contact_id,
            contact_name=message.contact_name[:200] if message.contact_name else None,
            mode=Mode.BOT,
            status=ConversationStatus.OPEN,
            unread_count=0,
            failed_replies=0,
            window_closed=False,
            version=1,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["channel_id", "contact_id"])
        .returning(Conversation.id)
    )
    if made.scalar_one_or_none() is None:  # another request made it first
        await db.execute(delete(ChatSession).where(ChatSession.id == chat_session.id))
        raced = await _lock_by_contact(db, channel.id, message.contact_id, values)
        assert raced is not None  # noqa: S101 - it exists: our insert conflicted with it
        return raced
    db.add(Event(**session_created(chat_session, include_content=include_content)))
    conversation = await _lock_by_contact(db, channel.id, message.contact_id, values)
    assert conversation is not None  # noqa: S101 - just made
    return conversation


async def _lock_by_contact(
    db: AsyncSession, channel_id: uuid.UUID, contact_id: str, values: dict[str, Any]
) -> Conversation | None:
    result = await db.scalars(
        update(Conversation)
        .where(Conversation.channel_id == channel_id, Conversation.contact_id == contact_id)
        .values(updated_at=utcnow(), **values)
        .returning(Conversation)
        .execution_options(populate_existing=True)
    )
    return result.one_or_none()


async def _add_message(
    db: AsyncSession,
    conversation: Conversation,
    message: InboundMessage,
    include_content: bool,
    *,
    role: MessageRole = MessageRole.USER,
    author: Author = Author.CONTACT,
) -> ChatMessage:
    stored = await add_message(db, conversation, message.text, role=role, author=author)
    row = message_created(
        conversation.workspace_id,
        conversation.project_id,
        stored,
        end_user_id=f"whatsapp:{conversation.contact_id}",
        include_content=include_content,
    )
    await add_event(db, row, author)
    return stored


async def _from_device(
    db: AsyncSession,
    channel: Channel,
    conversation: Conversation,
    message: InboundMessage,
    include_content: bool,
) -> None:
    """A message sent from the linked phone: our own send coming back (an echo: nothing to
    do), or a human typing there, who takes the conversation over."""
    if await _is_echo(db, channel, conversation, message):
        await _claim_id(db, channel, conversation.id, None, message.external_id)
        return
    stored = await _add_message(
        db, conversation, message, include_content, role=MessageRole.ASSISTANT, author=Author.DEVICE
    )
    await _claim_id(db, channel, conversation.id, stored.id, message.external_id)
    conversation.last_operator_reply_at = utcnow()
    if conversation.mode != Mode.HUMAN:
        await apply(db, conversation, Action.TAKEOVER, DEVICE, reason="device")


async def _is_echo(
    db: AsyncSession, channel: Channel, conversation: Conversation, message: InboundMessage
) -> bool:
    """Ours if the id is one we got for a send; or, when the echo beat our record of that
    id, if a send of the same text to this contact is still in flight."""
    ours = await db.scalar(
        select(ChannelMessage.id).where(
            ChannelMessage.channel_id == channel.id,
            ChannelMessage.direction == "out",
            ChannelMessage.external_id == message.external_id,
        )
    )
    if ours is not None:
        return True
    in_flight = await db.scalar(
        select(ChannelMessage.id)
        .where(
            ChannelMessage.conversation_id == conversation.id,
            ChannelMessage.direction == "out",
            ChannelMessage.status == "queued",
            ChannelMessage.body == message.text,
        )
        .limit(1)
    )
    return in_flight is not None
