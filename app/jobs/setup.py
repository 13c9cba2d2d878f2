"""The job kinds this deployment runs, and a worker for them: the same in the API processes
(`WORKERS_IN_API`) and in `python -m app.worker`."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.metrics import Metrics
from app.jobs.worker import JobKind, Worker
from app.notifications.email import EMAIL_KIND, email_backend, email_job


def job_kinds(settings: Settings) -> dict[str, JobKind]:
    return {EMAIL_KIND: email_job(email_backend(settings))}


def build_worker(
    settings: Settings, maker: async_sessionmaker[AsyncSession], metrics: Metrics | None = None
) -> Worker:
    return Worker(
        maker,
        job_kinds(settings),
        concurrency=settings.JOBS_CONCURRENCY,
        poll_seconds=settings.JOBS_POLL_SECONDS,
        metrics=metrics,
    )
