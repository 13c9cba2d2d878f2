"""A contact's message on Postgres: the webhook's hot path, in one prebuilt statement.

What `inbound._store` does through the ORM (lock or make the conversation, take the session's
next positions, store the message and its event, claim the provider id, queue the reply), as a
chain of data-modifying CTEs run by asyncpg itself (app/core/driver.py): one round trip instead
of about eight, and none of the ORM's per-statement work, which was most of what a webhook
cost: 4.1-4.8 ms of the API process's CPU per message before, 1.3-1.5 ms after (README,
"Performance": "WhatsApp webhooks").

The provider id is claimed first, and everything else hangs off its RETURNING: a re-delivered
message writes nothing. `_EXISTING` serves a contact whose conversation exists; `_FIRST` makes
the conversation and its session for a first message. If another request made that
conversation in between, `_FIRST` writes nothing (ON CONFLICT on the contact) and `_EXISTING`
runs again: it then sees it (each statement has its own snapshot under READ COMMITTED).

Foreign keys between the rows of one statement are checked at its end, so the order of the
CTEs follows the data, not the references. SQLite (no data-modifying CTEs) keeps the ORM path.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.channels.providers.base import InboundMessage
from app.chat.service import title_from_message
from app.conversations.bot import REPLY_ATTEMPTS, REPLY_KIND
from app.core.driver import Prebuilt, run
from app.core.types import utcnow
from app.events.recorder import mark_recorded
from app.models import Author, Channel, MessageRole
from app.models.job import UNFINISHED

# The message, its event and the reply job, given a `conversation` (id, mode, status) and a
# `session` (id, and the positions just taken: message_count, event_seq).
_MESSAGE = f"""
message AS (
    INSERT INTO chat_messages (id, workspace_id, chat_session_id, seq, role, content, status,
        created_at, completed_at, event_seq, author_type)
    SELECT :message_id, :workspace_id, session.id, session.message_count, 'user', :content,
        'complete', :now, :now, session.event_seq, '{Author.CONTACT.value}'
    FROM session
    RETURNING id
), event AS (
    INSERT INTO events (id, workspace_id, project_id, session_id, sequence, type, subject, data,
        created_at)
    SELECT :event_id, :workspace_id, :project_id, session.id, session.event_seq,
        'message.created', :subject,
        CAST(CAST(:data AS jsonb) || jsonb_build_object('session_id', CAST(session.id AS text))
            AS json),
        :now
    FROM session
    RETURNING id
), job AS (
    INSERT INTO jobs (id, workspace_id, kind, payload, status, run_at, attempts, max_attempts,
        dedupe_key, ordering_key, created_at)
    SELECT :job_id, :workspace_id, '{REPLY_KIND}',
        json_build_object('conversation_id', CAST(conversation.id AS text),
            'message_id', :subject),
        'queued', :now, 0, {REPLY_ATTEMPTS}, :dedupe_key,
        'conversation:' || CAST(conversation.id AS text), :now
    FROM conversation, message
    WHERE conversation.mode = 'bot' AND conversation.status <> 'resolved'
    ON CONFLICT (dedupe_key) WHERE {UNFINISHED} DO NOTHING
    RETURNING id
)"""  # noqa: S608 - only constants are formatted in

_CLAIM = """
claimed AS (
    INSERT INTO channel_messages (id, workspace_id, channel_id, conversation_id,
        chat_message_id, direction, part, external_id, status, created_at)
    SELECT :claim_id, :workspace_id, :channel_id, {conversation}.id, :message_id, 'in', 0,
        :external_id, 'received', :now
    FROM {conversation}
    ON CONFLICT (channel_id, direction, external_id) DO NOTHING
    RETURNING conversation_id
)"""

_OUTCOME = """
SELECT EXISTS (SELECT 1 FROM {conversation}) AS conversation, EXISTS (SELECT 1 FROM claimed)
    AS claimed, (SELECT status FROM conversation) AS status, EXISTS (SELECT 1 FROM job) AS queued
"""

# The conversation exists: claim, then lock and update it as `inbound._lock_by_contact` does.
_EXISTING = Prebuilt(
    text(
        f"""
WITH target AS (
    SELECT id FROM conversations WHERE channel_id = :channel_id AND contact_id = :contact_id
), {_CLAIM.format(conversation="target")}, conversation AS (
    UPDATE conversations SET updated_at = :now, last_inbound_at = :now,
        last_inbound_external_id = :external_id, window_closed = false,
        unread_count = CASE WHEN mode = 'bot' THEN 0 ELSE unread_count + 1 END,
        contact_name = COALESCE(:contact_name, contact_name)
    FROM claimed WHERE conversations.id = claimed.conversation_id
    RETURNING conversations.id, conversations.chat_session_id, conversations.mode,
        conversations.status
), session AS (
    UPDATE chat_sessions SET message_count = message_count + 1, event_seq = event_seq + 1,
        last_activity_at = :now
    FROM conversation
    WHERE chat_sessions.id = conversation.chat_session_id
        AND chat_sessions.workspace_id = :workspace_id
    RETURNING chat_sessions.id, chat_sessions.message_count, chat_sessions.event_seq
), {_MESSAGE}
{_OUTCOME.format(conversation="target")}"""  # noqa: S608 - only constants are formatted in
    )
)

# A first message: the conversation, its session (at message 1, event 2) and session.created.
_FIRST = Prebuilt(
    text(
        f"""
WITH conversation AS (
    INSERT INTO conversations (id, workspace_id, project_id, channel_id, chat_session_id,
        contact_id, contact_name, mode, status, unread_count, failed_replies, window_closed,
        version, created_at, updated_at, last_inbound_at, last_inbound_external_id)
    VALUES (:conversation_id, :workspace_id, :project_id, :channel_id, :session_id, :contact_id,
        :contact_name, 'bot', 'open', 0, 0, false, 1, :now, :now, :now, :external_id)
    ON CONFLICT (channel_id, contact_id) DO NOTHING
    RETURNING id, mode, status
), session AS (
    INSERT INTO chat_sessions (id, workspace_id, project_id, end_user_id, title, message_count,
        event_seq, created_at, last_activity_at)
    SELECT :session_id, :workspace_id, :project_id, :end_user_id, :title, 1, 2, :now, :now
    FROM conversation
    RETURNING id, message_count, event_seq
), opened AS (
    INSERT INTO events (id, workspace_id, project_id, session_id, sequence, type, subject, data,
        created_at)
    SELECT :opened_id, :workspace_id, :project_id, session.id, 1, 'session.created',
        CAST(session.id AS text), CAST(:opened_data AS json), :now
    FROM session
), {_CLAIM.format(conversation="conversation")}, {_MESSAGE}
{_OUTCOME.format(conversation="conversation")}"""  # noqa: S608 - only constants are formatted in
    )
)

_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


class Duplicate(Exception):
    """This provider message id is already stored: the webhook was delivered again."""


@dataclass
class Stored:
    message_id: uuid.UUID
    status: str  # the conversation's, before this message (`resolved`: the caller reopens it)


async def store(
    db: AsyncSession, channel: Channel, message: InboundMessage, include_content: bool
) -> Stored:
    """Store a contact's message (Duplicate if it is stored already), in the caller's
    transaction (app/core/driver.py `transaction`)."""
    existing, first = parameters(channel, message, include_content)
    connection = await db.connection()
    [row] = await run(connection, _EXISTING, existing)
    if not row["conversation"]:
        [row] = await run(connection, _FIRST, existing | first)
        if not row["conversation"]:  # another request made it first: it is there now
            [row] = await run(connection, _EXISTING, existing)
    if not row["claimed"]:
        raise Duplicate(message.external_id)
    mark_recorded(db)
    if row["queued"]:
        db.info["jobs_enqueued"] = True
    return Stored(existing["message_id"], row["status"])


def parameters(
    channel: Channel, message: InboundMessage, include_content: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parameters of `_EXISTING`, and those `_FIRST` adds. The events' data are those of
    `app.chat.events` (`message.created` gets its `session_id` in the statement)."""
    now = utcnow()
    message_id = uuid.uuid4()
    end_user_id = f"whatsapp:{message.contact_id}"[:200]
    data: dict[str, Any] = {
        "message_id": str(message_id),
        "role": MessageRole.USER.value,
        "characters": len(message.text),
        "end_user_id": end_user_id,
        "author": Author.CONTACT.value,
    }
    if include_content:
        data["content"] = message.text
    existing: dict[str, Any] = {
        "channel_id": channel.id,
        "contact_id": message.contact_id,
        "claim_id": uuid.uuid4(),
        "workspace_id": channel.workspace_id,
        "project_id": channel.project_id,
        "message_id": message_id,
        "subject": str(message_id),
        "external_id": message.external_id,
        "now": now,
        "contact_name": message.contact_name[:200] if message.contact_name else None,
        "content": message.text,
        "event_id": uuid.uuid4(),
        "data": _JSON.encode(data),
        "job_id": uuid.uuid4(),
        "dedupe_key": f"reply:{message_id}",
    }
    session_id = uuid.uuid4()
    title = title_from_message(message.contact_name or message.contact_id)
    opened: dict[str, Any] = {"session_id": str(session_id), "end_user_id": end_user_id}
    if include_content:
        opened["title"] = title
    first = {
        "conversation_id": uuid.uuid4(),
        "session_id": session_id,
        "end_user_id": end_user_id,
        "title": title,
        "opened_id": uuid.uuid4(),
        "opened_data": _JSON.encode(opened),
    }
    return existing, first
