"""Workers: claim due jobs under a lease, run their kind's handler, and record the outcome.

- Claiming is one statement: `UPDATE jobs ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)`
  on Postgres; the same without the lock clause on SQLite, whose writes are serialised anyway.
  A job is due when it is queued and its `run_at` has come, or running with an expired lease
  (its worker died: it runs again, so handlers must be idempotent in effect).
- A job with an `ordering_key` is due only when no older unfinished job has that key.
- No transaction is held while a handler runs; a heartbeat extends the lease.
- Periodic kinds are enqueued once per period (app/jobs/periodic.py), whichever process
  notices the new period first; the others' inserts find it there.
- A failure is retried after exponential backoff with full jitter (or the handler's
  `RetryLater`), up to the kind's `max_attempts`; then, or on `GiveUp`, the job is `dead`, with
  its last error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import (
    Table,
    and_,
    bindparam,
    exists,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import engine_of
from app.core.metrics import Metrics
from app.core.types import utcnow
from app.jobs.periodic import Periodic, schedule_period
from app.jobs.stats import refresh_queue_metrics
from app.models import Job

logger = logging.getLogger("app.jobs")
JOBS = cast(Table, Job.__table__)
FINISH_RETRY_PAUSES = (0.2, 0.5, 1.0, 2.0, None)


@dataclass(frozen=True)
class JobRun:
    """What a handler gets: the job's ids and payload, and which attempt this is.

    A handler may record its own success in the transaction (or the one statement) of its
    last change: `done_statement()` (or `done_sql()` inside a statement of its own), with
    `done_params()`, then `recorded()` once that has committed. The change and the job's
    `done` then commit together (a worker that dies in between cannot run the job again), and
    the worker writes nothing more: one transaction less for each job. Only while the lease
    is still this worker's, as always."""

    id: uuid.UUID
    kind: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    workspace_id: uuid.UUID | None
    worker: str = ""  # the leasing worker's name (`jobs.locked_by`)
    _recorded: list[bool] = field(default_factory=list, repr=False, compare=False)

    @staticmethod
    def done_sql() -> str:
        """Marks the job done if its lease is still ours: parameters `:job_id`, `:job_worker`
        and `:job_now`. Not for kinds that scrub their payload when done."""
        return (
            "UPDATE jobs SET status = 'done', finished_at = :job_now, locked_by = NULL, "
            "locked_until = NULL, last_error = NULL "
            "WHERE id = :job_id AND locked_by = :job_worker"
        )

    @staticmethod
    def done_statement() -> Any:
        """`done_sql()` as a statement with its parameters' types (for any database)."""
        return text(JobRun.done_sql()).bindparams(
            bindparam("job_id", type_=JOBS.c.id.type),
            bindparam("job_now", type_=JOBS.c.finished_at.type),
        )

    def done_params(self) -> dict[str, Any]:
        return {"job_id": self.id, "job_worker": self.worker, "job_now": utcnow()}

    def recorded(self) -> None:
        """The handler's committed transaction recorded this job done (see the class)."""
        self._recorded.append(True)

    @property
    def is_recorded(self) -> bool:
        return bool(self._recorded)


Handler = Callable[[JobRun], Awaitable[None]]


@dataclass(frozen=True)
class JobKind:
    handler: Handler
    # Replace the payload with {} once done: it may hold what should not outlive the work
    # (an email's one-time link).
    scrub_when_done: bool = False


class RetryLater(Exception):
    """Run this job again after `seconds` (a remote's Retry-After), counting the attempt."""

    def __init__(self, seconds: float, reason: str = "retry later") -> None:
        super().__init__(reason)
        self.seconds = seconds


class GiveUp(Exception):
    """A permanent failure: no more attempts; the job is kept as dead."""


class Worker:
    def __init__(
        self,
        maker: async_sessionmaker[AsyncSession],
        kinds: dict[str, JobKind],
        *,
        concurrency: int = 4,
        lease_seconds: float = 60.0,
        poll_seconds: float = 0.5,
        backoff_base_seconds: float = 2.0,
        backoff_cap_seconds: float = 3600.0,
        metrics: Metrics | None = None,
        periodic: tuple[Periodic, ...] = (),
        metrics_seconds: float = 15.0,
    ) -> None:
        self.maker = maker
        self.kinds = kinds
        self.periodic = periodic
        self.metrics_seconds = metrics_seconds
        self._scheduled: dict[str, str] = {}  # kind -> the period key already ensured
        self._metrics_due = 0.0
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.concurrency = concurrency
        self.lease = timedelta(seconds=lease_seconds)
        self.poll_seconds = poll_seconds
        self.backoff_base = backoff_base_seconds
        self.backoff_cap = backoff_cap_seconds
        self.metrics = metrics
        self._running: set[asyncio.Task[None]] = set()
        self._statements: dict[int, tuple[Any, Any]] = {}  # by limit: see _claim_statements
        self._wake = asyncio.Event()
        self._stopping = False

    def wake(self) -> None:
        """Look for work now instead of at the next poll (after a commit that enqueued)."""
        self._wake.set()

    async def run(self) -> None:
        """Claim and run jobs until `stop()`."""
        while not self._stopping:
            # Cleared before looking, so a wake-up that comes while we look is not lost.
            self._wake.clear()
            await self._housekeeping()
            free = self.concurrency - len(self._running)
            claimed = await self._claim_safely(free) if free > 0 else []
            for job in claimed:
                task = asyncio.create_task(self._execute(job), name=f"job-{job.kind}-{job.id}")
                self._running.add(task)
                task.add_done_callback(self._finished)
            if (not claimed or free <= len(claimed)) and not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_seconds)

    async def _housekeeping(self) -> None:
        """Enqueue the periodic jobs of a period that began, and refresh the queue's gauges."""
        try:
            for periodic in self.periodic:
                key = periodic.key(utcnow())
                if self._scheduled.get(periodic.kind) != key:
                    await schedule_period(self.maker, periodic, key)
                    self._scheduled[periodic.kind] = key
            if self.metrics is not None and time.monotonic() >= self._metrics_due:
                self._metrics_due = time.monotonic() + self.metrics_seconds
                await refresh_queue_metrics(self.maker, self.metrics, set(self.kinds))
        except Exception as exc:  # the database is away: try again next time round
            logger.warning("job housekeeping failed error=%s", type(exc).__name__)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._wake.set()  # a slot is free: look for more

    async def stop(self, grace_seconds: float) -> None:
        """Stop claiming; let running jobs finish for up to `grace_seconds` (the rest are
        cancelled, and their leases let another worker run them again)."""
        self._stopping = True
        self._wake.set()
        if self._running:
            _, pending = await asyncio.wait(set(self._running), timeout=grace_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def run_until_idle(self, limit: int = 1000) -> int:
        """Run due jobs, one batch at a time, until none is due (tests and the CLI); how many
        ran. Bounded by `limit`."""
        done = 0
        while done < limit:
            claimed = await self.claim(min(self.concurrency, limit - done))
            if not claimed:
                return done
            await asyncio.gather(*(self._execute(job) for job in claimed))
            done += len(claimed)
        return done

    async def _claim_safely(self, limit: int) -> list[JobRun]:
        try:
            return await self.claim(limit)
        except Exception as exc:  # the database is away: try again at the next poll
            logger.warning("job claim failed error=%s", type(exc).__name__)
            return []

    def _due(self) -> Any:
        """Due at `:now` (a bound parameter: the statements are built once per worker).

        The statuses are SQL literals, not parameters: asyncpg prepares each statement, and
        Postgres soon switches a prepared statement to its generic plan, which cannot use the
        partial index on unfinished ordered jobs when the status is a parameter; the ordering
        check then reads the key's every job (73 ms a claim with 300 documents queued, where
        the custom plan took 3)."""
        jobs = JOBS.c
        now = bindparam("now", type_=jobs.run_at.type)
        older = JOBS.alias("older").c
        queued = literal_column("'queued'", jobs.status.type)
        running = literal_column("'running'", jobs.status.type)
        waits_for_older = exists().where(
            older.ordering_key.isnot(None),
            older.ordering_key == jobs.ordering_key,
            older.status.in_((queued, running)),
            or_(
                older.created_at < jobs.created_at,
                and_(older.created_at == jobs.created_at, older.id < jobs.id),
            ),
        )
        return (
            or_(
                and_(jobs.status == queued, jobs.run_at <= now),
                and_(jobs.status == running, jobs.locked_until < now),
            ),
            jobs.kind.in_(list(self.kinds)),
            or_(jobs.ordering_key.is_(None), ~waits_for_older),
        )

    def _claim_statements(self, limit: int) -> tuple[Any, Any]:
        """(whether anything is due, the claim of up to `limit` due jobs): Core statements,
        built once per limit, since building them (and their cache keys) for every claim cost
        more than running them."""
        found = self._statements.get(limit)
        if found is None:
            jobs = JOBS.c
            due = (
                select(jobs.id)
                .where(*self._due())
                .order_by(jobs.run_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            claim = (
                update(JOBS)
                .where(jobs.id.in_(due.scalar_subquery()))
                .values(
                    status="running",
                    locked_by=self.name,
                    locked_until=bindparam("until", type_=jobs.locked_until.type),
                    attempts=jobs.attempts + 1,
                )
                .returning(
                    jobs.id,
                    jobs.kind,
                    jobs.payload,
                    jobs.attempts,
                    jobs.max_attempts,
                    jobs.workspace_id,
                )
            )
            found = self._statements[limit] = (select(jobs.id).where(*self._due()).limit(1), claim)
        return found

    async def claim(self, limit: int) -> list[JobRun]:
        """Lease up to `limit` due jobs. An idle poll is one read; only due work is written."""
        peek, claim = self._claim_statements(limit)
        engine = engine_of(self.maker)
        async with engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            if (await autocommit.execute(peek, {"now": utcnow()})).first() is None:
                return []
            # One statement, its own transaction: no BEGIN and COMMIT round trips.
            now = utcnow()
            rows = (await autocommit.execute(claim, {"now": now, "until": now + self.lease})).all()
        return [
            JobRun(job_id, kind, payload, attempt, most, workspace_id, worker=self.name)
            for job_id, kind, payload, attempt, most, workspace_id in rows
        ]

    async def _execute(self, job: JobRun) -> None:
        started = time.perf_counter()
        heartbeat = asyncio.create_task(self._heartbeat(job.id))
        outcome, error, retry_in = "done", None, 0.0
        try:
            await self.kinds[job.kind].handler(job)
        except RetryLater as exc:
            outcome, error, retry_in = "retry", str(exc), exc.seconds
        except GiveUp as exc:
            outcome, error = "dead", f"{type(exc).__name__}: {exc}"
        except Exception as exc:
            outcome, error, retry_in = "retry", f"{type(exc).__name__}: {exc}", self._backoff(job)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        if outcome == "retry" and job.attempt >= job.max_attempts:
            outcome = "dead"
        if not (outcome == "done" and job.is_recorded):
            await asyncio.shield(self._finish(job, outcome, error, retry_in))
        if self.metrics is not None:
            self.metrics.jobs_finished.labels(job.kind, outcome).inc()
        logger.log(
            logging.WARNING if outcome == "dead" else logging.INFO,
            "job finished kind=%s attempt=%d outcome=%s duration_ms=%d",
            job.kind,
            job.attempt,
            outcome,
            int((time.perf_counter() - started) * 1000),
            extra={"event": "job", "job_id": str(job.id), "kind": job.kind, "outcome": outcome}
            | ({"error": error[:500]} if error else {}),
        )

    def _backoff(self, job: JobRun) -> float:
        """Full jitter: anywhere up to base * 2^(attempt-1), capped."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2 ** (job.attempt - 1))
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not a secret

    async def _finish(self, job: JobRun, outcome: str, error: str | None, retry_in: float) -> None:
        now = utcnow()
        values: dict[str, Any] = {"locked_by": None, "locked_until": None, "last_error": error}
        if outcome == "done":
            values |= {"status": "done", "finished_at": now}
            if self.kinds[job.kind].scrub_when_done:
                values["payload"] = {}
        elif outcome == "dead":
            values |= {"status": "dead", "finished_at": now}
        else:
            values |= {"status": "queued", "run_at": now + timedelta(seconds=retry_in)}
        # Only while the lease is ours: a worker that lost it must not overwrite the outcome of
        # the one that took the job over. Retried through a database blip: a lost outcome would
        # run the job again once the lease ran out.
        statement = update(Job).where(Job.id == job.id, Job.locked_by == self.name).values(**values)
        for pause in FINISH_RETRY_PAUSES:
            try:
                async with self.maker() as db:
                    await db.execute(statement)
                    await db.commit()
                return
            except Exception as exc:
                if pause is None:
                    raise
                logger.warning("recording a job's outcome failed error=%s", type(exc).__name__)
                await asyncio.sleep(pause)

    async def _heartbeat(self, job_id: uuid.UUID) -> None:
        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            try:
                async with self.maker() as db:
                    await db.execute(
                        update(Job)
                        .where(Job.id == job_id, Job.locked_by == self.name)
                        .values(locked_until=utcnow() + self.lease)
                    )
                    await db.commit()
            except Exception as exc:  # keep beating; the lease is long enough for a miss
                logger.warning("job heartbeat failed error=%s", type(exc).__name__)
