"""The event feed: a project's events in the relay's order, for clients without a public
endpoint. A cursor is an event's position, so a client that reads from where it left off
never misses an event that committed late (see app/events/relay.py)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sse_starlette import ServerSentEvent

from app.core.errors import field_error
from app.events.envelope import envelope
from app.models import Event


def parse_position(value: str | None, field: str) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > 18:
        raise field_error(field, "must be a cursor this API returned (a non-negative integer)")
    return int(value)


async def read_events(
    db: AsyncSession,
    workspace_id: uuid.UUID,
    project_id: uuid.UUID,
    *,
    after: int | None,
    types: list[str],
    limit: int,
) -> list[Event]:
    """Up to `limit` relayed events after position `after`, oldest first."""
    statement = select(Event).where(
        Event.workspace_id == workspace_id,
        Event.project_id == project_id,
        Event.position.is_not(None),
    )
    if after is not None:
        statement = statement.where(Event.position > after)
    if types:
        statement = statement.where(Event.type.in_(types))
    statement = statement.order_by(Event.position).limit(limit)
    return list((await db.execute(statement)).scalars().all())


async def last_position(db: AsyncSession, workspace_id: uuid.UUID, project_id: uuid.UUID) -> int:
    statement = (
        select(Event.position)
        .where(
            Event.workspace_id == workspace_id,
            Event.project_id == project_id,
            Event.position.is_not(None),
        )
        .order_by(Event.position.desc())
        .limit(1)
    )
    return int((await db.execute(statement)).scalar() or 0)


async def stream_events(
    maker: async_sessionmaker[AsyncSession],
    workspace_id: uuid.UUID,
    project_id: uuid.UUID,
    *,
    after: int | None,
    types: list[str],
    wait: Callable[[float], Awaitable[None]],
    poll_seconds: float,
    max_seconds: float | None = None,
) -> AsyncIterator[ServerSentEvent]:
    """SSE: each event as `id: <position>`, `event: <type>`, `data: <CloudEvent JSON>`; from
    `after` (a `Last-Event-ID`), else from now. Woken by this process's relay, polling for the
    others'."""
    if after is None:
        async with maker() as db:
            after = await last_position(db, workspace_id, project_id)
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    while deadline is None or time.monotonic() < deadline:
        async with maker() as db:
            events = await read_events(
                db, workspace_id, project_id, after=after, types=types, limit=100
            )
        for event in events:
            after = event.position
            yield ServerSentEvent(
                data=json.dumps(envelope(event)), id=str(event.position), event=event.type
            )
        if not events:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            await wait(poll_seconds if left is None else min(poll_seconds, left))
