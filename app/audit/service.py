"""Reading the audit log (filters, cursor pages, a JSON Lines export) and its retention purge,
the only DELETE the Postgres trigger lets through."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from sqlalchemy import Select, delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.schemas import AuditActor, AuditEntryRead, AuditFilter
from app.core.pagination import Keyset, PageParams
from app.core.types import as_utc, utcnow
from app.models import AuditEntry

logger = logging.getLogger("app.audit")
AUDIT_KEYSET = Keyset((AuditEntry.occurred_at, AuditEntry.id), descending=True)
EXPORT_BATCH = 500


def to_read(entry: AuditEntry) -> AuditEntryRead:
    return AuditEntryRead(
        id=entry.id,
        workspace_id=entry.workspace_id,
        occurred_at=entry.occurred_at,
        actor=AuditActor(type=entry.actor_type, id=entry.actor_id, label=entry.actor_label),
        action=entry.action,
        target_type=entry.target_type,
        target_id=entry.target_id,
        changes=entry.changes,
        request_id=entry.request_id,
        ip=entry.ip,
        user_agent=entry.user_agent,
    )


class AuditLog:
    """One workspace's log, read-only."""

    def __init__(self, maker: async_sessionmaker[AsyncSession], workspace_id: uuid.UUID) -> None:
        self.maker = maker
        self.workspace_id = workspace_id

    def _select(self, where: AuditFilter) -> Select[Any]:
        statement = select(AuditEntry).where(AuditEntry.workspace_id == self.workspace_id)
        if where.action:
            if where.action.endswith("."):
                statement = statement.where(AuditEntry.action.startswith(where.action))
            else:
                statement = statement.where(AuditEntry.action == where.action)
        if where.actor_id:
            statement = statement.where(AuditEntry.actor_id == where.actor_id)
        if where.target_type:
            statement = statement.where(AuditEntry.target_type == where.target_type)
        if where.target_id:
            statement = statement.where(AuditEntry.target_id == where.target_id)
        if where.since:
            statement = statement.where(AuditEntry.occurred_at >= as_utc(where.since))
        if where.until:
            statement = statement.where(AuditEntry.occurred_at < as_utc(where.until))
        return statement

    async def page(
        self, where: AuditFilter, params: PageParams
    ) -> tuple[list[AuditEntryRead], str | None]:
        async with self.maker() as db:
            result = await db.execute(AUDIT_KEYSET.paginate(self._select(where), params))
            entries, cursor = AUDIT_KEYSET.page(list(result.scalars()), params)
        return [to_read(entry) for entry in entries], cursor

    async def export(self, where: AuditFilter) -> AsyncIterator[str]:
        """Every matching entry, newest first, one JSON object per line, read in batches."""
        params = PageParams(limit=EXPORT_BATCH, cursor=None)
        while True:
            entries, cursor = await self.page(where, params)
            for entry in entries:
                yield json.dumps(entry.model_dump(mode="json"), separators=(",", ":")) + "\n"
            if cursor is None:
                return
            params = PageParams(limit=EXPORT_BATCH, cursor=cursor)


async def purge_expired(session: AsyncSession, retention_days: int) -> int:
    """Delete entries older than `retention_days`, in the caller's transaction: the one DELETE
    the Postgres trigger allows, because the transaction says it is the purge."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SET LOCAL app.audit_retention = 'on'"))
    cutoff = utcnow() - timedelta(days=retention_days)
    result = await session.execute(delete(AuditEntry).where(AuditEntry.occurred_at < cutoff))
    return int(result.rowcount)  # type: ignore[attr-defined]
