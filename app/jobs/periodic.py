"""Periodic jobs: one job per kind and period, however many processes schedule it.

The job's `dedupe_key` is the kind and the period's start (`retention.sweep:2026-12-01T10:00`).
The insert adds it only when no job with that key exists yet, finished or not; a concurrent
insert of the same key meets the unfinished-key unique index instead (ON CONFLICT DO NOTHING).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import exists, literal, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.types import utcnow
from app.jobs.queue import DEFAULT_MAX_ATTEMPTS, job_row
from app.models import Job
from app.models.job import UNFINISHED


@dataclass(frozen=True)
class Periodic:
    kind: str
    every: timedelta
    payload: dict[str, Any] = field(default_factory=dict)
    max_attempts: int = DEFAULT_MAX_ATTEMPTS

    def start(self, now: datetime) -> datetime:
        """The start of the period `now` is in (periods are counted from the Unix epoch)."""
        seconds = int(self.every.total_seconds())
        stamp = int(now.timestamp())
        return datetime.fromtimestamp(stamp - stamp % seconds, UTC)

    def key(self, now: datetime) -> str:
        return f"{self.kind}:{self.start(now).isoformat(timespec='minutes')}"


async def schedule_period(
    maker: async_sessionmaker[AsyncSession], periodic: Periodic, key: str
) -> None:
    """Make sure the job of period `key` exists (a no-op when it does)."""
    row = job_row(
        periodic.kind, periodic.payload, dedupe_key=key, max_attempts=periodic.max_attempts
    )
    row["run_at"] = utcnow()
    columns = list(row)
    values = select(*(literal(row[name], Job.__table__.c[name].type) for name in columns))
    values = values.where(~exists().where(Job.dedupe_key == key))
    async with maker() as db:
        dialect = db.get_bind().dialect.name
        insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(Job)
        statement = insert.from_select(columns, values).on_conflict_do_nothing(
            index_elements=["dedupe_key"], index_where=text(UNFINISHED)
        )
        await db.execute(statement)
        await db.commit()
