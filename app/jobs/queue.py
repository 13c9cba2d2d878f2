"""Enqueueing a job in the caller's transaction: it exists exactly when the change that caused
it commits. A `dedupe_key` keeps one unfinished job per key (INSERT ... ON CONFLICT DO NOTHING on
the partial unique index, so a duplicate never aborts the caller's transaction)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.core.types import utcnow
from app.models import Job
from app.models.job import UNFINISHED

DEFAULT_MAX_ATTEMPTS = 8


async def enqueue(
    session: AsyncSession,
    kind: str,
    payload: dict[str, Any],
    *,
    workspace_id: uuid.UUID | None = None,
    run_at: datetime | None = None,
    dedupe_key: str | None = None,
    ordering_key: str | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> None:
    """Add a job to the caller's transaction (committed, or rolled back, with it).

    With an `ordering_key`, the job runs only once every older unfinished job with that key
    has finished (done or dead)."""
    row = job_row(
        kind,
        payload,
        workspace_id=workspace_id,
        run_at=run_at,
        dedupe_key=dedupe_key,
        ordering_key=ordering_key,
        max_attempts=max_attempts,
    )
    statement = _insert(session).values(**row)
    if dedupe_key is not None:
        statement = statement.on_conflict_do_nothing(
            index_elements=["dedupe_key"], index_where=text(UNFINISHED)
        )
    await session.execute(statement)
    session.info["jobs_enqueued"] = True


async def enqueue_many(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Add several jobs (`job_row`s, without dedupe keys) in one statement. Their
    `created_at`s are a microsecond apart, in list order, so jobs sharing an ordering key run
    in that order."""
    if not rows:
        return
    base = utcnow()
    for index, row in enumerate(rows):
        row["created_at"] = base + timedelta(microseconds=index)
    await session.execute(_insert(session), rows)
    session.info["jobs_enqueued"] = True


def job_row(
    kind: str,
    payload: dict[str, Any],
    *,
    workspace_id: uuid.UUID | None = None,
    run_at: datetime | None = None,
    dedupe_key: str | None = None,
    ordering_key: str | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> dict[str, Any]:
    now = utcnow()
    return {
        "id": uuid.uuid4(),
        "workspace_id": workspace_id,
        "kind": kind,
        "payload": payload,
        "status": "queued",
        "run_at": run_at or now,
        "attempts": 0,
        "max_attempts": max_attempts,
        "dedupe_key": dedupe_key,
        "ordering_key": ordering_key,
        "created_at": now,
    }


def _insert(session: AsyncSession) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(Job)


@event.listens_for(Session, "after_commit")
def _wake_workers(session: Session) -> None:
    """After a commit that enqueued work, nudge this process's worker (its sessionmaker's
    `info["wake_jobs"]`, set in the lifespan): milliseconds instead of a poll interval."""
    if session.info.pop("jobs_enqueued", False) and (wake := session.info.get("wake_jobs")):
        wake()
