"""The job mechanism on the suite's database: enqueued with the caller's transaction, run once,
retried with backoff until dead, taken over after a lost lease, deduplicated, and never run by
two workers at once."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from sqlalchemy import select, update

from app.core.types import utcnow
from app.jobs.queue import enqueue
from app.jobs.worker import GiveUp, JobKind, JobRun, RetryLater, Worker
from app.models import Job


def _worker(app: FastAPI, kinds: dict[str, JobKind], **options: Any) -> Worker:
    options = {"backoff_base_seconds": 0.0, **options}
    return Worker(app.state.sessionmaker, kinds, **options)


async def _jobs(app: FastAPI, kind: str) -> list[Job]:
    async with app.state.sessionmaker() as db:
        return list((await db.execute(select(Job).where(Job.kind == kind))).scalars())


async def test_a_job_exists_exactly_when_its_transaction_commits(app: FastAPI) -> None:
    kind = f"test.{uuid.uuid4().hex[:8]}"
    async with app.state.sessionmaker() as db:
        await enqueue(db, kind, {"n": 1})
        await db.rollback()
    async with app.state.sessionmaker() as db:
        await enqueue(db, kind, {"n": 2})
        await db.commit()
    seen: list[dict[str, Any]] = []

    async def handler(run: JobRun) -> None:
        seen.append(run.payload)

    assert await _worker(app, {kind: JobKind(handler)}).run_until_idle() == 1
    assert seen == [{"n": 2}]
    (job,) = await _jobs(app, kind)
    assert job.status == "done" and job.attempts == 1 and job.finished_at is not None


async def test_failures_are_retried_then_kept_dead_with_the_last_error(app: FastAPI) -> None:
    kind = f"test.{uuid.uuid4().hex[:8]}"
    async with app.state.sessionmaker() as db:
        await enqueue(db, kind, {}, max_attempts=3)
        await db.commit()
    attempts: list[int] = []

    async def failing(run: JobRun) -> None:
        attempts.append(run.attempt)
        raise ConnectionError(f"refused on attempt {run.attempt}")

    worker = _worker(app, {kind: JobKind(failing)})
    for _ in range(5):  # bounded: three attempts, then nothing is due
        await worker.run_until_idle()
    assert attempts == [1, 2, 3]
    (job,) = await _jobs(app, kind)
    assert job.status == "dead" and "refused on attempt 3" in (job.last_error or "")


async def test_give_up_is_dead_at_once_and_retry_later_waits(app: FastAPI) -> None:
    dead, later = f"test.dead.{uuid.uuid4().hex[:6]}", f"test.later.{uuid.uuid4().hex[:6]}"
    async with app.state.sessionmaker() as db:
        await enqueue(db, dead, {})
        await enqueue(db, later, {})
        await db.commit()

    async def give_up(run: JobRun) -> None:
        raise GiveUp("recipient refused")

    async def retry_later(run: JobRun) -> None:
        raise RetryLater(3600, "upstream said Retry-After: 3600")

    worker = _worker(app, {dead: JobKind(give_up), later: JobKind(retry_later)})
    assert await worker.run_until_idle() == 2
    assert await worker.run_until_idle() == 0  # the delayed one is not due yet
    (gave_up,) = await _jobs(app, dead)
    (waiting,) = await _jobs(app, later)
    assert gave_up.status == "dead" and gave_up.attempts == 1
    assert waiting.status == "queued" and waiting.run_at > utcnow() + timedelta(minutes=59)


async def test_a_handler_can_record_its_job_done_with_its_own_change(app: FastAPI) -> None:
    """`done_statement` in the handler's transaction: the job is done exactly when the change
    commits, and the worker writes nothing after it (finished_at stays the handler's); a
    failure after that commit does not run the job again."""
    kind, failing = f"test.{uuid.uuid4().hex[:8]}", f"test.{uuid.uuid4().hex[:8]}"
    async with app.state.sessionmaker() as db:
        await enqueue(db, kind, {}, max_attempts=3)
        await enqueue(db, failing, {}, max_attempts=3)
        await db.commit()
    stamps: dict[str, Any] = {}

    async def handler(run: JobRun) -> None:
        params = run.done_params()
        stamps[run.kind] = params["job_now"]
        async with app.state.sessionmaker() as db:
            changed = await db.execute(run.done_statement(), params)
            await db.commit()
        assert changed.rowcount == 1
        run.recorded()
        if run.kind == failing:
            raise RuntimeError("after the commit")

    worker = _worker(app, {kind: JobKind(handler), failing: JobKind(handler)})
    written: list[tuple[str, str]] = []
    finish = worker._finish

    async def spy(run: JobRun, outcome: str, error: str | None, retry_in: float) -> None:
        written.append((run.kind, outcome))
        await finish(run, outcome, error, retry_in)

    worker._finish = spy  # type: ignore[method-assign,assignment]
    assert await worker.run_until_idle() == 2
    # Only the failure is written, and it changes nothing: the lease went with the commit.
    assert written == [(failing, "retry")]
    assert await worker.run_until_idle() == 0  # neither is due again
    for name in (kind, failing):
        (job,) = await _jobs(app, name)
        assert (job.status, job.attempts, job.locked_by, job.last_error) == ("done", 1, None, None)
        assert job.finished_at == stamps[name]


async def test_a_job_whose_worker_died_runs_again_after_its_lease(app: FastAPI) -> None:
    kind = f"test.{uuid.uuid4().hex[:8]}"
    async with app.state.sessionmaker() as db:
        await enqueue(db, kind, {})
        await db.commit()
    ran: list[str] = []

    async def handler(run: JobRun) -> None:
        ran.append(run.kind)

    crashed = _worker(app, {kind: JobKind(handler)})
    assert len(await crashed.claim(10)) == 1  # claimed, then the process "dies"
    survivor = _worker(app, {kind: JobKind(handler)})
    assert await survivor.run_until_idle() == 0  # the lease still holds
    async with app.state.sessionmaker() as db:  # the lease runs out
        await db.execute(
            update(Job).where(Job.kind == kind).values(locked_until=utcnow() - timedelta(seconds=1))
        )
        await db.commit()
    assert await survivor.run_until_idle() == 1
    (job,) = await _jobs(app, kind)
    assert ran == [kind] and job.status == "done" and job.attempts == 2


async def test_a_dedupe_key_keeps_one_unfinished_job(app: FastAPI) -> None:
    kind = f"test.{uuid.uuid4().hex[:8]}"
    key = f"{kind}:2026-12-01T10"
    for _ in range(2):
        async with app.state.sessionmaker() as db:
            await enqueue(db, kind, {}, dedupe_key=key)
            await db.commit()  # the duplicate did not abort the transaction

    async def handler(run: JobRun) -> None:
        return None

    assert await _worker(app, {kind: JobKind(handler)}).run_until_idle() == 1
    async with app.state.sessionmaker() as db:
        await enqueue(db, kind, {}, dedupe_key=key)  # the first is done: a new period may run
        await db.commit()
    assert len(await _jobs(app, kind)) == 2


async def test_two_workers_never_run_the_same_job(app: FastAPI) -> None:
    kind = f"test.{uuid.uuid4().hex[:8]}"
    async with app.state.sessionmaker() as db:
        for n in range(30):
            await enqueue(db, kind, {"n": n})
        await db.commit()
    runs: Counter[int] = Counter()

    async def handler(run: JobRun) -> None:
        runs[run.payload["n"]] += 1
        await asyncio.sleep(0)

    first = _worker(app, {kind: JobKind(handler)}, concurrency=3)
    second = _worker(app, {kind: JobKind(handler)}, concurrency=3)
    await asyncio.gather(first.run_until_idle(), second.run_until_idle())
    assert sorted(runs) == list(range(30)) and set(runs.values()) == {1}


async def test_the_in_process_worker_picks_up_a_commit_at_once(app: FastAPI) -> None:
    kind = f"test.{uuid.uuid4().hex[:8]}"
    done = asyncio.Event()

    async def handler(run: JobRun) -> None:
        done.set()

    worker = _worker(app, {kind: JobKind(handler)}, poll_seconds=3600)  # only a wake-up helps
    app.state.sessionmaker.configure(info={"wake_jobs": worker.wake})
    running = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(0)  # the worker's first look: nothing due, it waits
        async with app.state.sessionmaker() as db:
            await enqueue(db, kind, {})
            await db.commit()
        await asyncio.wait_for(done.wait(), timeout=10)
    finally:
        await worker.stop(5)
        await running
        app.state.sessionmaker.configure(info={"wake_jobs": app.state.worker.wake})
