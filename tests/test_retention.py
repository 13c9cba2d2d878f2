"""The retention sweep: sessions idle past their TTL go (with `session.expired`), old messages
go, and so do expired idempotency keys, old events, delivery attempts and finished jobs; what
is recent stays."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select, update

from app.core.types import utcnow
from app.jobs.queue import enqueue
from app.models import ChatMessage, ChatSession, Event, Job
from app.retention.sweep import run_sweep
from tests import factories


async def test_sessions_idle_past_the_project_s_ttl_expire_with_an_event(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner, session_ttl_days=7))["id"]
    idle = await factories.chat(client, owner, pid, "old conversation")
    active = await factories.chat(client, owner, pid, "recent one")
    kept = (await factories.create_project(client, owner))["id"]  # no TTL anywhere: kept
    untouched = await factories.chat(client, owner, kept, "kept forever")
    maker = app.state.sessionmaker
    async with maker() as db:
        long_ago = utcnow() - timedelta(days=8)
        for session_id in (idle["session_id"], untouched["session_id"]):
            await db.execute(
                update(ChatSession)
                .where(ChatSession.id == uuid.UUID(session_id))
                .values(last_activity_at=long_ago)
            )
        await db.commit()

    counts = await run_sweep(app.state.settings, maker)

    assert counts["sessions"] == 1
    assert (
        await client.get(f"/sessions/{idle['session_id']}", headers=owner.headers)
    ).status_code == 404
    for still in (active, untouched):
        response = await client.get(f"/sessions/{still['session_id']}", headers=owner.headers)
        assert response.status_code == 200
    async with maker() as db:
        expired = (
            await db.execute(select(Event).where(Event.type == "session.expired"))
        ).scalar_one()
    assert str(expired.session_id) == idle["session_id"]
    assert expired.sequence == 4  # after session.created, message.created, reply.completed
    assert expired.data["session_ttl_days"] == 7


async def test_the_workspace_default_applies_and_old_messages_go(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    turn = await factories.chat(client, owner, pid, "first")
    await factories.chat(client, owner, pid, "second", session_id=turn["session_id"])
    maker = app.state.sessionmaker
    async with maker() as db:
        session = await db.get(ChatSession, uuid.UUID(turn["session_id"]))
        assert session is not None
        workspace_id = session.workspace_id
    patched = await client.patch(
        f"/workspaces/{workspace_id}", json={"message_retention_days": 30}, headers=owner.headers
    )
    assert patched.status_code == 200 and patched.json()["message_retention_days"] == 30
    assert patched.json()["session_ttl_days"] is None
    async with maker() as db:
        await db.execute(
            update(ChatMessage)
            .where(
                ChatMessage.id.in_(
                    [uuid.UUID(turn["message"]["id"]), uuid.UUID(turn["assistant_message"]["id"])]
                )
            )
            .values(created_at=utcnow() - timedelta(days=31))
        )
        await db.commit()

    counts = await run_sweep(app.state.settings, maker)

    assert counts["messages"] == 2
    messages = (
        await client.get(f"/sessions/{turn['session_id']}/messages", headers=owner.headers)
    ).json()["items"]
    assert [m["content"] for m in messages if m["role"] == "user"] == ["second"]


async def test_old_events_and_finished_jobs_go_in_batches_and_recent_ones_stay(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await factories.account(client)
    await factories.create_project(client, owner)
    maker = app.state.sessionmaker
    kind = f"test.{uuid.uuid4().hex[:8]}"
    async with maker() as db:
        await enqueue(db, kind, {})
        await enqueue(db, kind, {"recent": True})
        await db.commit()
    await app.state.background.relay.run_until_idle()
    async with maker() as db:
        old = utcnow() - timedelta(days=400)
        await db.execute(update(Event).values(created_at=old))
        await db.execute(update(Job).where(Job.kind == kind).values(status="done", finished_at=old))
        await db.execute(
            update(Job)
            .where(Job.kind == kind, Job.payload["recent"].as_boolean().is_(True))
            .values(finished_at=utcnow())
        )
        await db.commit()

    counts = await run_sweep(app.state.settings, maker)

    async with maker() as db:
        events_left = (await db.execute(select(func.count()).select_from(Event))).scalar_one()
        jobs_left = (await db.execute(select(func.count()).where(Job.kind == kind))).scalar_one()
    assert counts["events"] >= 1 and events_left == 0
    assert counts["jobs"] >= 1 and jobs_left == 1
