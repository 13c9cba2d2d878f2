"""`python -m app.worker`: a separate process runs the queued jobs and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from sqlalchemy import select

from app.jobs.queue import enqueue
from app.models import Job
from tests.live import ROOT
from tests.waiting import until


async def test_a_worker_process_runs_queued_jobs_and_stops_on_sigterm(
    make_client: Callable[..., Any], database_url: str
) -> None:
    # No worker in this API process: only the separate one can run the job.
    client = await make_client(WORKERS_IN_API=False)
    app: FastAPI = client._transport.app  # type: ignore[attr-defined]
    async with app.state.sessionmaker() as db:
        await enqueue(db, "email.send", {"to": "a@example.com", "subject": "s", "text": "t"})
        await db.commit()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DATABASE_URL": database_url,
        "ENVIRONMENT": "development",
        "JOBS_POLL_SECONDS": "0.1",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.worker",
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await until(
            lambda: _statuses(app),
            lambda statuses: statuses == ["done"] or process.returncode is not None,
            polls=300,
            every=0.1,
            what="the worker process running the job",
        )
        assert process.returncode is None, "the worker process died"
        assert await _statuses(app) == ["done"]
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _statuses(app: FastAPI) -> list[str]:
    async with app.state.sessionmaker() as db:
        statement = select(Job.status).where(Job.kind == "email.send")
        return list((await db.execute(statement)).scalars())


async def test_the_worker_program_stops_cleanly_on_sigterm_in_process(
    app: FastAPI, settings: Any, monkeypatch: Any
) -> None:
    """The same program, run in this process (so its lines are measured): it runs queued jobs
    and returns once SIGTERM arrives."""
    import app.worker as program

    monkeypatch.setattr(program, "get_settings", lambda: settings)
    monkeypatch.setattr(program, "configure_logging", lambda *_: None)
    async with app.state.sessionmaker() as db:
        await enqueue(db, "email.send", {"to": "b@example.com", "subject": "s", "text": "t"})
        await db.commit()
    running = asyncio.create_task(program.main())
    try:
        # The handler must be in place before the signal, or SIGTERM would end the test run.
        await until(
            lambda: signal.getsignal(signal.SIGTERM),
            lambda handler: handler not in (signal.SIG_DFL, None),
            what="the worker's SIGTERM handler",
        )
        await until(lambda: _statuses(app), lambda s: "done" in s, what="the job run")
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(running, timeout=30)
    finally:
        if not running.done():
            running.cancel()
        asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)
        asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)
