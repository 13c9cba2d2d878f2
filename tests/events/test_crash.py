"""Nothing is lost when a worker process is killed (SIGKILL) in the middle of a delivery, or
when Postgres drops every connection under load: every event arrives, in each session's order,
and the only repeats carry the same event id."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from app.core.db import create_engine
from app.models import Event, Job
from tests import factories
from tests.conftest import make_settings
from tests.core.test_recovery import postgres_only
from tests.events.receiver import Receiver
from tests.live import serve, worker_process
from tests.waiting import until


async def _deliveries(app: FastAPI) -> list[str]:
    async with app.state.sessionmaker() as db:
        statement = select(Job.status).where(Job.kind == "webhook.deliver")
        return list((await db.execute(statement)).scalars())


async def _conversations(
    client: httpx.AsyncClient, owner: factories.Account, pid: str, sessions: int, turns: int
) -> None:
    async def conversation(index: int) -> None:
        first = await factories.chat(client, owner, pid, f"session {index} turn 0")
        for turn in range(1, turns):
            await factories.chat(client, owner, pid, f"turn {turn}", session_id=first["session_id"])

    await asyncio.gather(*(conversation(index) for index in range(sessions)))


async def test_a_worker_killed_mid_delivery_loses_nothing(
    make_client: Callable[..., Any], database_url: str
) -> None:
    receiver = Receiver(delay=1.0)
    async with serve(receiver.asgi()) as base:
        client = await make_client(WORKERS_IN_API=False)  # only the worker processes deliver
        app: FastAPI = client._transport.app  # type: ignore[attr-defined]
        owner = await factories.account(client)
        pid = (await factories.create_project(client, owner))["id"]
        hook = await factories.create_webhook(
            client, owner, pid, f"{base}/hook", event_types=["message.*", "reply.*"]
        )
        receiver.secret = hook["signing_secret"]
        await _conversations(client, owner, pid, sessions=3, turns=2)  # 12 events

        async with worker_process(database_url) as doomed:
            await until(lambda: receiver.started, bool, polls=300, what="a delivery")
            doomed.kill()  # SIGKILL, mid-delivery: its lease must run out first
            await doomed.wait()
        async with worker_process(database_url) as survivor:
            await until(
                lambda: _deliveries(app),
                lambda statuses: len(statuses) == 12 and set(statuses) == {"done"},
                polls=600,
                every=0.1,
                what="every delivery done by the surviving worker",
            )
            assert survivor.returncode is None

    assert receiver.rejected == 0
    assert len(receiver.ids()) == 12  # every event, at least once
    assert len(receiver.received) >= 12  # repeats, if any, are the same events
    assert receiver.in_session_order()


@postgres_only
async def test_events_survive_postgres_dropping_every_connection_under_load(
    make_client: Callable[..., Any], database_url: str
) -> None:
    receiver = Receiver()
    async with serve(receiver.asgi()) as base:
        # A job whose outcome could not be stored runs again after its lease: keep it short.
        client = await make_client(JOBS_LEASE_SECONDS=2, JOBS_POLL_SECONDS=0.1)
        app: FastAPI = client._transport.app  # type: ignore[attr-defined]
        owner = await factories.account(client)
        pid = (await factories.create_project(client, owner))["id"]
        hook = await factories.create_webhook(client, owner, pid, f"{base}/hook")
        receiver.secret = hook["signing_secret"]
        load = asyncio.create_task(_conversations_tolerating_outages(client, owner, pid))
        for _ in range(3):
            await asyncio.sleep(0.3)
            await _drop_every_connection(database_url)
        sent = await load

        async def events() -> list[Event]:
            for _ in range(10):  # a pooled connection may still be one the last drop killed
                try:
                    async with app.state.sessionmaker() as db:
                        statement = select(Event).where(Event.project_id.isnot(None))
                        return list((await db.execute(statement)).scalars())
                except DBAPIError:
                    await asyncio.sleep(0.1)
            raise AssertionError("the database did not come back")

        def since_the_webhook(recorded: list[Event]) -> set[str]:
            # Every event since the webhook (the project's creation came before it).
            return {
                str(e.id)
                for e in recorded
                if str(e.project_id) == pid and e.type != "project.created"
            }

        async def recorded_and_received() -> tuple[list[Event], set[str]]:
            # Read again each time: replies stored after a drop (retried) commit late.
            return await events(), receiver.ids()

        recorded, received = await until(
            recorded_and_received,
            lambda pair: since_the_webhook(pair[0]) == pair[1],
            polls=600,
            every=0.1,
            what="every recorded event at the receiver",
        )

    assert sent >= 10
    assert received == since_the_webhook(recorded)
    assert receiver.in_session_order()
    replies = [e for e in recorded if e.type in ("reply.completed", "reply.failed")]
    assert len(replies) >= sent  # every accepted message got its reply's event


async def _conversations_tolerating_outages(
    client: httpx.AsyncClient, owner: factories.Account, pid: str
) -> int:
    """Turns in 5 sessions while the database drops connections: a turn caught by the drop may
    answer 503; how many were accepted."""
    accepted = 0

    async def conversation() -> None:
        nonlocal accepted
        session_id = None
        for turn in range(6):
            body: dict[str, Any] = {"project_id": pid, "message": f"turn {turn}"}
            if session_id:
                body["session_id"] = session_id
            response = await client.post("/chat", json=body, headers=owner.headers)
            if response.status_code == 200:
                accepted += 1
                session_id = response.json()["session_id"]
            else:
                assert response.status_code in (409, 502, 503), response.text
                await asyncio.sleep(0.1)

    await asyncio.gather(*(conversation() for _ in range(5)))
    return accepted


async def _drop_every_connection(database_url: str) -> None:
    admin = create_engine(make_settings(database_url))
    try:
        async with admin.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
                    "current_database() AND pid <> pg_backend_pid() AND backend_type = "
                    "'client backend'"
                )
            )
    finally:
        await admin.dispose()
