"""Ordering keys, periodic jobs, the queue's gauges, and dead jobs listed and retried by an
admin (the endpoint) and an operator (`python -m app.jobs`)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import literal, select, text

from app.jobs import __main__ as jobs_cli
from app.jobs.periodic import Periodic, schedule_period
from app.jobs.queue import enqueue, enqueue_many, job_row
from app.jobs.worker import GiveUp, JobKind, JobRun, Worker
from app.models import Job
from tests import factories
from tests.live import ROOT


def _worker(app: FastAPI, kinds: dict[str, JobKind], **options: Any) -> Worker:
    return Worker(app.state.sessionmaker, kinds, backoff_base_seconds=0.0, **options)


async def _statuses(app: FastAPI, kind: str) -> list[str]:
    async with app.state.sessionmaker() as db:
        statement = select(Job.status).where(Job.kind == kind).order_by(Job.created_at)
        return list((await db.execute(statement)).scalars())


async def test_jobs_with_one_ordering_key_run_one_at_a_time_oldest_first(app: FastAPI) -> None:
    kind = f"test.{uuid.uuid4().hex[:8]}"
    rows = [job_row(kind, {"n": n}, ordering_key=f"k{n % 2}") for n in range(6)]
    async with app.state.sessionmaker() as db:
        await enqueue_many(db, rows)
        await db.commit()
    order: list[int] = []
    running: set[str] = set()
    overlapped = False

    async def handler(run: JobRun) -> None:
        nonlocal overlapped
        key = f"k{run.payload['n'] % 2}"
        overlapped = overlapped or key in running
        running.add(key)
        await asyncio.sleep(0.01)
        order.append(run.payload["n"])
        running.discard(key)

    # Two workers, four slots each: still one job per key at a time.
    workers = [_worker(app, {kind: JobKind(handler)}, concurrency=4) for _ in range(2)]
    for _ in range(10):
        if not sum(await asyncio.gather(*(w.run_until_idle() for w in workers))):
            break
    assert not overlapped
    assert [n for n in order if n % 2 == 0] == [0, 2, 4]
    assert [n for n in order if n % 2 == 1] == [1, 3, 5]


async def test_a_job_waits_for_an_older_one_with_its_key_even_when_that_one_is_delayed(
    app: FastAPI,
) -> None:
    kind = f"test.{uuid.uuid4().hex[:8]}"
    async with app.state.sessionmaker() as db:
        later = datetime.now(UTC) + timedelta(hours=1)
        await enqueue(db, kind, {"n": 1}, ordering_key="k", run_at=later)
        await enqueue(db, kind, {"n": 2}, ordering_key="k")
        await enqueue(db, kind, {"n": 3}, ordering_key="other")
        await db.commit()
    ran: list[int] = []

    async def handler(run: JobRun) -> None:
        ran.append(run.payload["n"])

    await _worker(app, {kind: JobKind(handler)}).run_until_idle()
    assert ran == [3]  # 2 waits for 1, which is not due yet


async def test_a_dead_job_no_longer_holds_its_key(app: FastAPI) -> None:
    kind = f"test.{uuid.uuid4().hex[:8]}"
    rows = [job_row(kind, {"n": n}, ordering_key="k") for n in range(2)]
    async with app.state.sessionmaker() as db:
        await enqueue_many(db, rows)
        await db.commit()

    async def handler(run: JobRun) -> None:
        if run.payload["n"] == 0:
            raise GiveUp("permanent")

    await _worker(app, {kind: JobKind(handler)}).run_until_idle()
    assert await _statuses(app, kind) == ["dead", "done"]


async def test_the_claim_s_generic_plan_checks_the_key_s_older_jobs_through_the_partial_index(
    app: FastAPI,
) -> None:
    """asyncpg prepares every statement and Postgres soon plans it generically, without the
    parameters' values: the claim must still reach the partial index on unfinished ordered
    jobs, or each claim reads every job of the key (73 ms with 300 documents queued)."""
    async with app.state.sessionmaker() as db:
        if db.bind.dialect.name != "postgresql":
            pytest.skip("plans are Postgres's")
        kind = f"test.{uuid.uuid4().hex[:8]}"
        rows = [job_row(kind, {"n": n}, ordering_key=f"k{n % 300}") for n in range(3000)]
        for row in rows[:2700]:
            row["status"] = "done"
        await enqueue_many(db, rows)
        await db.commit()
        await db.execute(text("ANALYZE jobs"))
        peek, _ = _worker(app, {kind: JobKind(_noop)})._claim_statements(1)
        state = peek.compile(dialect=db.bind.dialect).construct_expanded_state(
            {"now": datetime.now(UTC)}
        )
        values = ", ".join(
            str(literal(state.parameters[key]).compile(compile_kwargs={"literal_binds": True}))
            for key in state.positiontup
        )
        await db.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
        name = f"peek_{uuid.uuid4().hex[:8]}"
        await db.execute(text(f"PREPARE {name} AS {state.statement}"))
        plan = "\n".join((await db.execute(text(f"EXPLAIN EXECUTE {name}({values})"))).scalars())
        await db.execute(text(f"DEALLOCATE {name}"))
    assert "ix_jobs_ordering_key_created_at" in plan, plan


async def test_a_periodic_job_is_enqueued_once_per_period_by_any_number_of_processes(
    app: FastAPI,
) -> None:
    periodic = Periodic(f"test.{uuid.uuid4().hex[:8]}", timedelta(minutes=10))
    moment = datetime(2026, 12, 1, 10, 7, tzinfo=UTC)
    assert periodic.key(moment) == f"{periodic.kind}:2026-12-01T10:00+00:00"
    key = periodic.key(moment)
    maker = app.state.sessionmaker
    await asyncio.gather(*(schedule_period(maker, periodic, key) for _ in range(5)))
    ran: list[str] = []

    async def handler(run: JobRun) -> None:
        ran.append(run.kind)

    await _worker(app, {periodic.kind: JobKind(handler)}).run_until_idle()
    await schedule_period(maker, periodic, key)  # after it ran: still not again
    await _worker(app, {periodic.kind: JobKind(handler)}).run_until_idle()
    assert ran == [periodic.kind]
    await schedule_period(maker, periodic, periodic.key(moment + timedelta(minutes=10)))
    await _worker(app, {periodic.kind: JobKind(handler)}).run_until_idle()
    assert len(ran) == 2  # the next period's


async def test_the_gauges_show_each_kind_s_queue(app: FastAPI) -> None:
    kind = f"test.{uuid.uuid4().hex[:8]}"
    async with app.state.sessionmaker() as db:
        await enqueue(db, kind, {}, run_at=datetime.now(UTC) - timedelta(seconds=30))
        await enqueue(db, kind, {}, max_attempts=1)
        await db.commit()
    metrics = app.state.metrics
    worker = _worker(app, {"nothing.here": JobKind(_noop)}, metrics=metrics)
    await worker._housekeeping()

    def value(name: str) -> float:
        found = metrics.registry.get_sample_value(name, {"kind": kind})
        return -1.0 if found is None else found

    assert value("jobs_queued") == 2
    assert value("jobs_running") == 0
    assert value("jobs_dead") == 0
    assert 29 <= value("jobs_oldest_queued_age_seconds") < 120
    assert metrics.registry.get_sample_value("jobs_queued", {"kind": "nothing.here"}) == 0


async def _noop(_: JobRun) -> None:
    return None


async def _dead_job(app: FastAPI, workspace_id: str | None) -> uuid.UUID:
    kind = f"test.{uuid.uuid4().hex[:8]}"
    async with app.state.sessionmaker() as db:
        await enqueue(
            db,
            kind,
            {"secret": "do not show"},
            workspace_id=uuid.UUID(workspace_id) if workspace_id else None,
        )
        await db.commit()

    async def give_up(_: JobRun) -> None:
        raise GiveUp("the remote said 400")

    await _worker(app, {kind: JobKind(give_up)}).run_until_idle()
    async with app.state.sessionmaker() as db:
        return (await db.execute(select(Job.id).where(Job.kind == kind))).scalar_one()


async def test_an_admin_lists_and_retries_the_workspace_s_dead_jobs(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await factories.account(client)
    team = (await factories.create_workspace(client, owner, "ops"))["id"]
    job_id = await _dead_job(app, team)
    other = await _dead_job(app, None)  # the deployment's own: not the workspace's

    listed = await client.get(f"/workspaces/{team}/jobs", headers=owner.headers)
    assert listed.status_code == 200, listed.text
    [job] = listed.json()["items"]
    assert job["id"] == str(job_id) and job["status"] == "dead"
    assert job["last_error"] == "GiveUp: the remote said 400"
    assert "payload" not in job and "do not show" not in listed.text

    retried = await client.post(f"/workspaces/{team}/jobs/{job_id}/retry", headers=owner.headers)
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "queued" and retried.json()["attempts"] == 0
    again = await client.post(f"/workspaces/{team}/jobs/{job_id}/retry", headers=owner.headers)
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_not_dead"
    foreign = await client.post(f"/workspaces/{team}/jobs/{other}/retry", headers=owner.headers)
    assert foreign.status_code == 404 and foreign.json()["error"]["code"] == "job_not_found"


def _cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "DATABASE_URL": database_url}
    return subprocess.run(  # noqa: S603 - our own module
        [sys.executable, "-m", "app.jobs", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_an_operator_lists_and_retries_dead_jobs_from_the_command_line(
    app: FastAPI, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = await _dead_job(app, None)
    maker = app.state.sessionmaker

    async def cli(*args: str) -> tuple[int, str, str]:
        code = await jobs_cli.run(jobs_cli.parse_args(list(args)), maker)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    # The module runs as a program, against DATABASE_URL.
    program = await asyncio.to_thread(_cli, database_url, "list", "--status", "dead")
    assert program.returncode == 0, program.stderr
    assert str(job_id) in program.stdout and "do not show" not in program.stdout

    code, out, _ = await cli("list", "--status", "dead")
    assert code == 0 and str(job_id) in {json.loads(line)["id"] for line in out.splitlines()}
    code, out, _ = await cli("retry", str(job_id))
    assert code == 0 and json.loads(out)["retried"] is True
    code, _, err = await cli("retry", str(uuid.uuid4()))
    assert code == 1 and "no dead job" in err
    async with maker() as db:
        job = await db.get(Job, job_id)
        assert job is not None and job.status == "queued"
    code, out, _ = await cli("stats")
    by_kind = {line["kind"]: line for line in map(json.loads, out.splitlines())}
    assert code == 0 and by_kind[job.kind]["queued"] == 1 and by_kind[job.kind]["dead"] == 0


async def test_retrying_every_dead_job_of_a_kind(
    app: FastAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = await _dead_job(app, None), await _dead_job(app, None)
    async with app.state.sessionmaker() as db:
        kind = (await db.get(Job, first)).kind  # type: ignore[union-attr]
    options = jobs_cli.parse_args(["retry", "--all-dead", "--kind", kind])

    assert await jobs_cli.run(options, app.state.sessionmaker) == 0

    retried = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["id"] for line in retried] == [str(first)]
    async with app.state.sessionmaker() as db:
        assert (await db.get(Job, second)).status == "dead"  # type: ignore[union-attr]
    with pytest.raises(SystemExit):
        jobs_cli.parse_args(["retry"])  # neither ids nor --all-dead
