"""The Postgres statements that store a contact's message (app/channels/contact_message.py):
their parameters cover every bind in the SQL, and the events' data are the chat events'."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg

from app.channels import contact_message
from app.channels.providers.base import InboundMessage
from app.chat.events import message_created, session_created
from app.models import Channel, ChatMessage, ChatSession, MessageRole

MESSAGE = InboundMessage("wamid.X1", "6281100001", "text", "Halo, ada promo?", "Sheena Nelson")


def _channel() -> Channel:
    return Channel(id=uuid.uuid4(), workspace_id=uuid.uuid4(), project_id=uuid.uuid4())


@pytest.mark.parametrize("statement", ["_EXISTING", "_FIRST"])
def test_every_bind_of_the_statement_has_a_parameter(statement: str) -> None:
    existing, first = contact_message.parameters(_channel(), MESSAGE, include_content=False)
    _, names, fixed = getattr(contact_message, statement).compiled(PGDialect_asyncpg())
    given = existing | first if statement == "_FIRST" else existing
    assert set(names) - set(fixed) <= set(given)
    assert set(names) >= {"message_id", "external_id", "now"}


@pytest.mark.parametrize("include_content", [False, True])
def test_the_events_data_are_the_chat_events_data(include_content: bool) -> None:
    channel = _channel()
    existing, first = contact_message.parameters(channel, MESSAGE, include_content)
    session = ChatSession(
        id=first["session_id"],
        workspace_id=channel.workspace_id,
        project_id=channel.project_id,
        end_user_id=first["end_user_id"],
        title=first["title"],
        created_at=existing["now"],
    )
    message = ChatMessage(
        id=existing["message_id"],
        chat_session_id=session.id,
        role=MessageRole.USER,
        content=MESSAGE.text,
        event_seq=2,
        created_at=existing["now"],
    )
    created = message_created(
        channel.workspace_id,
        channel.project_id,
        message,
        end_user_id="whatsapp:6281100001",
        include_content=include_content,
    )["data"]
    created.pop("session_id")  # the statement adds it from the session row
    assert json.loads(existing["data"]) == created | {"author": "contact"}
    opened = session_created(session, include_content=include_content)["data"]
    assert json.loads(first["opened_data"]) == opened
    assert first["title"] == "Sheena Nelson"
    assert existing["dedupe_key"] == f"reply:{existing['message_id']}"


def test_a_long_contact_name_is_cut_to_the_column() -> None:
    long = InboundMessage("wamid.X2", "6281100002", "text", "Hi", "N" * 300)
    existing, _ = contact_message.parameters(_channel(), long, include_content=False)
    assert existing["contact_name"] == "N" * 200
