"""Recording events: each one is a row written in the transaction of the change it describes
(a transactional outbox), so it exists exactly when the change does. The relay
(`app/events/relay.py`) then gives it its place in the feed and hands it to the sinks.

- Configuration changes (projects, prompts, intents, API keys, webhooks) are recorded by the
  audit log's flush hook, which names each change anyway (`event_for_change`).
- The chat turn's events are rows built by `event_row` and written in the turn's own
  statements (app/chat/): no round trip of their own.
- Everything else calls `record()` beside its change.

`data` carries ids and small facts. Message text is included only where the project opts in
(`events_include_content`): events leave our trust boundary.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from app.core.types import utcnow
from app.models import ApiKey, Channel, ChatSession, Event, Intent, Project, Prompt, Webhook

# The configuration kinds whose changes are events (the audit hook names them).
EVENTED = {
    Project: "project",
    Prompt: "prompt",
    Intent: "intent",
    ApiKey: "api_key",
    Webhook: "webhook",
    Channel: "channel",
}


def event_row(
    workspace_id: uuid.UUID,
    type: str,
    data: dict[str, Any],
    *,
    project_id: uuid.UUID | None,
    session_id: uuid.UUID | None = None,
    sequence: int | None = None,
    subject: str | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """The columns of one event row (for the chat turn's own INSERT statements)."""
    return {
        "id": uuid.uuid4(),
        "workspace_id": workspace_id,
        "project_id": project_id,
        "session_id": session_id,
        "sequence": sequence,
        "type": type,
        "subject": subject,
        "data": data,
        "created_at": at or utcnow(),
        "position": None,
    }


def record(
    db: AsyncSession | Session,
    workspace_id: uuid.UUID,
    type: str,
    data: dict[str, Any],
    *,
    project_id: uuid.UUID | None,
    session_id: uuid.UUID | None = None,
    sequence: int | None = None,
    subject: str | None = None,
) -> Event:
    """Add an event to the caller's transaction (flushed and committed with its change)."""
    row = event_row(
        workspace_id,
        type,
        data,
        project_id=project_id,
        session_id=session_id,
        sequence=sequence,
        subject=subject,
    )
    entity = Event(**row)
    db.add(entity)
    mark_recorded(db)
    return entity


def mark_recorded(db: AsyncSession | Session) -> None:
    """Note that the transaction adds events: its commit wakes this process's relay."""
    db.info["events_recorded"] = True


def event_for_change(entity: Any, action: str, changes: dict[str, Any] | None) -> Event | None:
    """The event of an audited configuration change (None for kinds that have none)."""
    kind = EVENTED.get(type(entity))
    if kind is None:
        return None
    project_id = entity.id if isinstance(entity, Project) else entity.project_id
    data: dict[str, Any] = {"id": str(entity.id), "project_id": str(project_id)}
    if action.endswith(".updated") or action.endswith(".revoked"):
        data["changed"] = sorted(changes or {})
    for name in ("name", "slug"):  # small, non-secret facts that help a reader
        if hasattr(entity, name) and isinstance(getattr(entity, name), str):
            data[name] = getattr(entity, name)
    return Event(
        **event_row(
            entity.workspace_id, action, data, project_id=project_id, subject=str(entity.id)
        )
    )


async def next_sequence(db: AsyncSession, workspace_id: uuid.UUID, session_id: uuid.UUID) -> int:
    """Take the session's next event sequence number (outside the chat turn, which reserves
    its numbers in the statement that claims the session)."""
    result = await db.execute(
        update(ChatSession)
        .where(ChatSession.workspace_id == workspace_id, ChatSession.id == session_id)
        .values(event_seq=ChatSession.event_seq + 1)
        .returning(ChatSession.event_seq)
    )
    return int(result.scalar_one())


def wake_relay(maker: async_sessionmaker[AsyncSession]) -> None:
    """Nudge this process's relay after a commit that recorded events outside the ORM (the
    chat turn's statements); see `_wake_relay`."""
    wake = maker.kw.get("info", {}).get("wake_events")
    if wake is not None:
        wake()


@sa_event.listens_for(Session, "after_commit")
def _wake_relay(session: Session) -> None:
    """After a commit that recorded events, nudge this process's relay (its sessionmaker's
    `info["wake_events"]`): milliseconds instead of a poll interval."""
    if session.info.pop("events_recorded", False) and (wake := session.info.get("wake_events")):
        wake()
