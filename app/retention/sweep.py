"""The retention sweep, a periodic job (once per RETENTION_SWEEP_MINUTES across all processes).

Each rule deletes in batches of `BATCH` rows, one short transaction per batch (no long locks),
up to `MAX_BATCHES` per rule and run; what is left waits for the next run:
- sessions idle longer than their project's `session_ttl_days` (or the workspace's default),
  each with a `session.expired` event in its batch's transaction;
- messages older than `message_retention_days` (the sessions stay);
- expired idempotency keys; events older than EVENTS_RETENTION_DAYS (once relayed) and webhook
  delivery attempts as old; finished jobs older than JOBS_RETENTION_DAYS; audit entries older
  than AUDIT_RETENTION_DAYS.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.service import purge_expired
from app.core.config import Settings
from app.core.types import utcnow
from app.events.recorder import record
from app.jobs.periodic import Periodic
from app.jobs.worker import JobKind, JobRun
from app.models import (
    ChatMessage,
    ChatSession,
    Event,
    IdempotencyKey,
    Job,
    Project,
    WebhookDelivery,
    Workspace,
)

logger = logging.getLogger("app.retention")

SWEEP_KIND = "retention.sweep"
BATCH = 500
MAX_BATCHES = 200


def sweep_schedule(settings: Settings) -> Periodic:
    return Periodic(SWEEP_KIND, timedelta(minutes=settings.RETENTION_SWEEP_MINUTES))


def sweep_job(settings: Settings, maker: async_sessionmaker[AsyncSession]) -> JobKind:
    async def sweep(_: JobRun) -> None:
        counts = await run_sweep(settings, maker)
        if any(counts.values()):
            logger.info(
                "retention sweep deleted %s",
                " ".join(f"{name}={count}" for name, count in counts.items()),
                extra={"event": "retention", **counts},
            )

    return JobKind(sweep)


async def run_sweep(settings: Settings, maker: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    """Apply every rule once; how many rows each deleted."""
    now = utcnow()
    counts = {"sessions": 0, "messages": 0}
    for project_id, workspace_id, ttl, keep in await _project_rules(maker):
        if ttl is not None:
            counts["sessions"] += await _expire_sessions(
                maker, workspace_id, project_id, now - timedelta(days=ttl), ttl
            )
        if keep is not None:
            cutoff = now - timedelta(days=keep)
            counts["messages"] += await _in_batches(
                maker,
                ChatMessage,
                ChatMessage.workspace_id == workspace_id,
                ChatMessage.chat_session_id.in_(
                    select(ChatSession.id).where(ChatSession.project_id == project_id)
                ),
                ChatMessage.created_at < cutoff,
            )
    counts["idempotency_keys"] = await _in_batches(
        maker, IdempotencyKey, IdempotencyKey.expires_at < now
    )
    events_cutoff = now - timedelta(days=settings.EVENTS_RETENTION_DAYS)
    counts["events"] = await _in_batches(
        maker, Event, Event.created_at < events_cutoff, Event.position.is_not(None)
    )
    counts["webhook_deliveries"] = await _in_batches(
        maker, WebhookDelivery, WebhookDelivery.created_at < events_cutoff
    )
    counts["jobs"] = await _in_batches(
        maker,
        Job,
        Job.status.in_(("done", "dead")),
        Job.finished_at < now - timedelta(days=settings.JOBS_RETENTION_DAYS),
    )
    counts["audit_entries"] = 0
    if settings.AUDIT_RETENTION_DAYS > 0:
        async with maker() as db, db.begin():
            counts["audit_entries"] = await purge_expired(db, settings.AUDIT_RETENTION_DAYS)
    return counts


async def _project_rules(
    maker: async_sessionmaker[AsyncSession],
) -> list[tuple[uuid.UUID, uuid.UUID, int | None, int | None]]:
    """(project, workspace, session TTL, message retention) of every project with a rule."""
    ttl = func.coalesce(Project.session_ttl_days, Workspace.session_ttl_days)
    keep = func.coalesce(Project.message_retention_days, Workspace.message_retention_days)
    statement = (
        select(Project.id, Project.workspace_id, ttl, keep)
        .join(Workspace, Workspace.id == Project.workspace_id)
        .where((ttl.is_not(None)) | (keep.is_not(None)))
    )
    async with maker() as db:
        return [tuple(row) for row in (await db.execute(statement)).all()]  # type: ignore[misc]


async def _expire_sessions(
    maker: async_sessionmaker[AsyncSession],
    workspace_id: uuid.UUID,
    project_id: uuid.UUID,
    cutoff: Any,
    ttl_days: int,
) -> int:
    deleted = 0
    for _ in range(MAX_BATCHES):
        async with maker() as db, db.begin():
            rows = (
                await db.execute(
                    select(ChatSession.id, ChatSession.event_seq, ChatSession.message_count)
                    .where(
                        ChatSession.workspace_id == workspace_id,
                        ChatSession.project_id == project_id,
                        ChatSession.last_activity_at < cutoff,
                    )
                    .limit(BATCH)
                )
            ).all()
            for session_id, event_seq, message_count in rows:
                record(
                    db,
                    workspace_id,
                    "session.expired",
                    {
                        "session_id": str(session_id),
                        "message_count": message_count,
                        "session_ttl_days": ttl_days,
                    },
                    project_id=project_id,
                    session_id=session_id,
                    sequence=event_seq + 1,
                    subject=str(session_id),
                )
            if rows:
                await db.execute(
                    delete(ChatSession).where(ChatSession.id.in_([row[0] for row in rows]))
                )
        deleted += len(rows)
        if len(rows) < BATCH:
            break
    return deleted


async def _in_batches(
    maker: async_sessionmaker[AsyncSession], model: Any, *conditions: ColumnElement[bool]
) -> int:
    deleted = 0
    for _ in range(MAX_BATCHES):
        async with maker() as db, db.begin():
            ids = select(model.id).where(*conditions).limit(BATCH)
            result = await db.execute(delete(model).where(model.id.in_(ids.scalar_subquery())))
            count = int(result.rowcount)  # type: ignore[attr-defined]
        deleted += count
        if count < BATCH:
            break
    return deleted
