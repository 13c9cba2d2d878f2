"""The chat turn's events (app/events/): built here, written in the turn's own statements.

A turn costs no round trip for them: `session.created` and `message.created` go into the
statement that inserts the messages, and the reply's `reply.completed` / `reply.failed` into
the one that stores it (app/chat/repository.py, app/chat/streaming.py). Sequence numbers are
reserved when the turn claims the session (two per turn: the message's and the reply's).
"""

from __future__ import annotations

import uuid
from typing import Any

from app.events.recorder import event_row
from app.models import ChatMessage, ChatSession, MessageStatus
from app.projects.config import ProjectConfig


def include_content(config: ProjectConfig) -> bool:
    """Whether the project's events carry message text (`events_include_content`)."""
    return bool(config.project.events_include_content)


def session_created(chat_session: ChatSession, *, include_content: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "session_id": str(chat_session.id),
        "end_user_id": chat_session.end_user_id,
    }
    if include_content:
        data["title"] = chat_session.title
    return event_row(
        chat_session.workspace_id,
        "session.created",
        data,
        project_id=chat_session.project_id,
        session_id=chat_session.id,
        sequence=1,
        subject=data["session_id"],
        at=chat_session.created_at,
    )


def message_created(
    workspace_id: uuid.UUID,
    project_id: uuid.UUID,
    message: ChatMessage,
    *,
    end_user_id: str | None,
    include_content: bool,
) -> dict[str, Any]:
    message_id = str(message.id)
    data: dict[str, Any] = {
        "message_id": message_id,
        "session_id": str(message.chat_session_id),
        "role": message.role,
        "characters": len(message.content),
        "end_user_id": end_user_id,
    }
    if include_content:
        data["content"] = message.content
    return event_row(
        workspace_id,
        "message.created",
        data,
        project_id=project_id,
        session_id=message.chat_session_id,
        sequence=message.event_seq,
        subject=message_id,
        at=message.created_at,
    )


def reply_finished(
    workspace_id: uuid.UUID,
    project_id: uuid.UUID,
    message: ChatMessage,
    values: dict[str, Any],
    *,
    include_content: bool,
) -> dict[str, Any]:
    """`reply.completed`, or `reply.failed` (failed or incomplete), from the final values a
    pending reply is stored with."""
    status = str(values.get("status", message.status))
    message_id = str(message.id)
    data: dict[str, Any] = {
        "message_id": message_id,
        "session_id": str(message.chat_session_id),
        "status": status,
        "provider": values.get("provider", message.provider),
        "model": values.get("model", message.model),
        "intent": message.intent,
        "finish_reason": values.get("finish_reason"),
        "latency_ms": values.get("latency_ms"),
        "attempts": values.get("attempts"),
        "usage": {
            key: values.get(key) for key in ("prompt_tokens", "completion_tokens", "total_tokens")
        },
    }
    if status != MessageStatus.COMPLETE:
        data["error_code"] = values.get("error_code")
    if include_content:
        data["content"] = values.get("content", message.content)
    return event_row(
        workspace_id,
        "reply.completed" if status == MessageStatus.COMPLETE else "reply.failed",
        data,
        project_id=project_id,
        session_id=message.chat_session_id,
        sequence=message.event_seq,
        subject=message_id,
    )
