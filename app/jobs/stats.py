"""The queue seen from outside: per-kind counts for the metrics, and the dead jobs an operator
lists and retries (the admin endpoint and `python -m app.jobs`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.metrics import Metrics
from app.core.pagination import Keyset, PageParams
from app.core.types import utcnow
from app.models import Job


@dataclass(frozen=True)
class KindStats:
    queued: int = 0
    running: int = 0
    dead: int = 0
    oldest_due_seconds: float = 0.0


async def queue_stats(maker: async_sessionmaker[AsyncSession]) -> dict[str, KindStats]:
    """Per kind: queued, running and dead jobs, and how long the oldest due one has waited."""
    now = utcnow()
    statement = (
        select(Job.kind, Job.status, func.count(), func.min(Job.run_at))
        .where(Job.status.in_(("queued", "running", "dead")))
        .group_by(Job.kind, Job.status)
    )
    async with maker() as db:
        rows = (await db.execute(statement)).all()
    found: dict[str, dict[str, Any]] = {}
    for kind, status, count, oldest in rows:
        counts = found.setdefault(kind, {})
        counts[status] = count
        if status == "queued" and oldest is not None:
            counts["oldest_due_seconds"] = max(0.0, (now - oldest).total_seconds())
    return {kind: KindStats(**counts) for kind, counts in found.items()}


async def refresh_queue_metrics(
    maker: async_sessionmaker[AsyncSession], metrics: Metrics, kinds: set[str]
) -> None:
    """Set the gauges of every kind in `kinds` (0 where there are none) and in the queue."""
    stats = await queue_stats(maker)
    gauges = (
        (metrics.jobs_queued, "queued"),
        (metrics.jobs_running, "running"),
        (metrics.jobs_dead, "dead"),
        (metrics.jobs_oldest_queued_age, "oldest_due_seconds"),
    )
    for gauge, field in gauges:
        for kind in kinds | set(stats):
            gauge.labels(kind).set(getattr(stats.get(kind, KindStats()), field))


JOB_KEYSET = Keyset((Job.created_at, Job.id), descending=True)


async def list_jobs(
    db: AsyncSession,
    *,
    status: str,
    workspace_id: uuid.UUID | None = None,
    kind: str | None = None,
    params: PageParams | None = None,
) -> tuple[list[Job], str | None]:
    """A page of jobs in `status` (one workspace's, when given), most recent first."""
    statement = select(Job).where(Job.status == status)
    if workspace_id is not None:
        statement = statement.where(Job.workspace_id == workspace_id)
    if kind is not None:
        statement = statement.where(Job.kind == kind)
    params = params or PageParams(limit=50, cursor=None)
    rows = (await db.execute(JOB_KEYSET.paginate(statement, params))).scalars().all()
    return JOB_KEYSET.page(rows, params)


class DuplicateJob(Exception):
    """Retrying would make a second unfinished job with the same dedupe key."""


async def retry_dead(
    db: AsyncSession, job_id: uuid.UUID, *, workspace_id: uuid.UUID | None = None
) -> Job | None:
    """Queue a dead job again, from its first attempt; None if there is no such dead job."""
    statement = (
        update(Job)
        .where(Job.id == job_id, Job.status == "dead")
        .values(status="queued", attempts=0, run_at=utcnow(), finished_at=None)
        .returning(Job)
    )
    if workspace_id is not None:
        statement = statement.where(Job.workspace_id == workspace_id)
    try:
        async with db.begin_nested():
            job: Job | None = (await db.execute(statement)).scalar_one_or_none()
    except IntegrityError as exc:
        raise DuplicateJob(str(job_id)) from exc
    if job is not None:
        db.info["jobs_enqueued"] = True
    return job
