"""Outbound sends by error class: retried, throttled, paced, failed for good, or stopping the
channel on an auth error; long replies split in order; statuses that beat our own record."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select, update

from app.core.types import utcnow
from app.models import Channel, Job
from tests import factories
from tests.channels.helpers import (
    fake_whatsapp,
    messages,
    meta_channel,
    only_conversation,
    post_meta,
    say,
)
from tests.fake_openai import Behaviour, FakeOpenAI
from tests.fake_whatsapp import Fault, meta_status
from tests.waiting import until


async def _due_now(app: FastAPI) -> None:
    """Run the retries now instead of after their backoff."""
    async with app.state.sessionmaker() as db, db.begin():
        await db.execute(update(Job).where(Job.status == "queued").values(run_at=utcnow()))
    async with app.state.sessionmaker() as db, db.begin():
        await db.execute(update(Channel).values(throttled_until=None))
    app.state.worker.wake()


async def _send_jobs(app: FastAPI) -> list[Job]:
    async with app.state.sessionmaker() as db:
        rows = await db.scalars(
            select(Job).where(Job.kind == "channel.send").order_by(Job.created_at)
        )
        return list(rows)


async def _setup(
    client: httpx.AsyncClient, url: str, **fields: Any
) -> tuple[factories.Account, Any]:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    return owner, await meta_channel(client, owner, pid, url, **fields)


async def test_temporary_errors_are_retried_until_the_send_goes(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    async with fake_whatsapp() as (fake, url):
        owner, line = await _setup(client, url)
        fake.script(Fault(code=131000, status=500), Fault(status=503))
        await say(client, line, "6281400001", "Halo")
        for _ in range(2):
            await until(
                lambda: _send_jobs(app),
                lambda jobs: jobs and jobs[0].status == "queued" and jobs[0].attempts >= 1,
                what="a failed attempt",
            )
            await _due_now(app)
        await until(lambda: fake.sends, lambda s: len(s) == 1, what="the send")
        jobs = await until(
            lambda: _send_jobs(app), lambda j: j[0].status == "done", what="the job done"
        )
    assert jobs[0].attempts == 3
    stored = await messages(client, owner, (await only_conversation(client, owner))["id"])
    assert stored[1]["delivery_status"] == "accepted"


async def test_a_permanent_error_fails_the_message_with_its_code_and_no_retry(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    async with fake_whatsapp() as (fake, url):
        owner, line = await _setup(client, url)
        fake.script(Fault(code=131026, status=400))
        await say(client, line, "6281400002", "Halo")
        conversation = await until(lambda: only_conversation(client, owner), lambda c: True)
        stored = await until(
            lambda: messages(client, owner, conversation["id"]),
            lambda m: len(m) == 2 and m[1]["delivery_status"] == "failed",
            what="the failed send",
        )
    assert stored[1]["error"]["code"] == "131026"
    assert "undeliverable" in stored[1]["error"]["title"]
    jobs = await _send_jobs(app)
    assert [(j.status, j.attempts) for j in jobs] == [("done", 1)]
    assert fake.sends == []
    feed = await client.get(
        f"/projects/{conversation['project_id']}/events?type=channel_message.delivery_failed",
        headers=owner.headers,
    )
    assert [e["data"]["error_code"] for e in feed.json()["items"]] == ["131026"]


async def test_a_throughput_limit_slows_the_whole_channel_and_pacing_only_the_contact(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    async with fake_whatsapp() as (fake, url):
        _, line = await _setup(client, url)
        fake.script(Fault(code=130429, status=400))
        await say(client, line, "6281400003", "Halo")
        await until(
            lambda: _send_jobs(app),
            lambda j: j and j[0].last_error is not None,
            what="the throttled attempt",
        )
        async with app.state.sessionmaker() as db:
            channel = await db.get(Channel, uuid.UUID(line.id))
        assert channel is not None and channel.throttled_until is not None
        assert channel.throttled_until > utcnow()
        assert channel.last_error_code == "130429"
        jobs = await _send_jobs(app)
        assert (jobs[0].run_at - utcnow()).total_seconds() > 5  # waits for the channel
        await _due_now(app)
        await until(lambda: fake.sends, lambda s: len(s) == 1, what="the send after the throttle")

        fake.script(Fault(code=131056, status=429))
        await say(client, line, "6281400003", "Lagi")
        await until(
            lambda: _send_jobs(app),
            lambda j: len(j) == 2 and j[1].last_error is not None,
            what="the paced attempt",
        )
        async with app.state.sessionmaker() as db:
            channel = await db.get(Channel, uuid.UUID(line.id))
        assert channel is not None and channel.throttled_until is None  # only this contact waits
        paced = (await _send_jobs(app))[1]
        assert paced.status == "queued" and paced.last_error and "pair rate" in paced.last_error


async def test_an_auth_error_stops_the_channel_until_its_credentials_are_fixed(
    app: FastAPI, client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    async with fake_whatsapp() as (fake, url):
        owner, line = await _setup(client, url)
        fake.script(Fault(code=190, status=401))
        await say(client, line, "6281400004", "Halo")
        await until(
            lambda: _send_jobs(app),
            lambda j: j and j[0].last_error is not None,
            what="the refused send",
        )
        shown = (await client.get(f"/channels/{line.id}", headers=owner.headers)).json()
        assert (shown["status"], shown["last_error_code"]) == ("auth_error", "190")
        await say(client, line, "6281400005", "Halo juga")
        await until(
            lambda: _send_jobs(app),
            lambda j: len(j) == 2 and j[1].last_error is not None,
            what="the second attempt",
        )
        assert fake.sends == []  # not attempted: the channel is waiting for credentials
        events = await client.get(
            f"/projects/{shown['project_id']}/events?type=channel.auth_error", headers=owner.headers
        )
        assert len(events.json()["items"]) == 1

        fixed = await client.patch(
            f"/channels/{line.id}", json={"access_token": "EAAG-new"}, headers=owner.headers
        )
        assert fixed.json()["status"] == "active"
        await _due_now(app)
        await until(lambda: fake.sends, lambda s: len(s) == 2, what="both sends after the fix")
    assert {s.authorization for s in fake.sends} == {"Bearer EAAG-new"}


async def test_a_failed_status_with_131047_closes_the_window(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    async with fake_whatsapp() as (fake, url):
        owner, line = await _setup(client, url)
        await say(client, line, "6281400006", "Halo")
        await until(lambda: fake.sends, lambda s: len(s) == 1, what="the send")
        conversation = await only_conversation(client, owner)
        await until(
            lambda: messages(client, owner, conversation["id"]),
            lambda m: m[1]["delivery_status"] == "accepted",
        )
        failed = meta_status(
            line.phone_number_id, fake.sends[0].id, "failed", "6281400006", error_code=131047
        )
        assert (await post_meta(client, line, failed)).status_code == 200
        stored = await messages(client, owner, conversation["id"])
        conversation = (
            await client.get(f"/conversations/{conversation['id']}", headers=owner.headers)
        ).json()
    assert stored[1]["delivery_status"] == "failed"
    assert stored[1]["error"]["code"] == "131047"
    assert conversation["can_reply"] is False


async def test_a_send_that_timed_out_but_went_is_not_sent_again(
    client: httpx.AsyncClient, make_client: Callable[..., Any]
) -> None:
    api = await make_client(CHANNEL_SEND_TIMEOUT_SECONDS=0.5, CHANNEL_AMBIGUOUS_WAIT_SECONDS=1.0)
    async with fake_whatsapp() as (fake, url):
        owner, line = await _setup(api, url)
        fake.script(Fault(drop=True))
        await say(api, line, "6281400007", "Halo")
        await until(lambda: fake.sends, lambda s: len(s) == 1, what="the send that gets no answer")
        sent = fake.sends[0]
        await asyncio.sleep(0.8)  # the client gave up: to us the send is ambiguous
        # Meta's status webhook names it by our callback data.
        status = meta_status(line.phone_number_id, sent.id, "sent", sent.to, callback=sent.callback)
        assert (await post_meta(api, line, status)).status_code == 200
        conversation = await only_conversation(api, owner)
        stored = await messages(api, owner, conversation["id"])
        assert stored[1]["delivery_status"] == "sent"
        # The retry (after CHANNEL_AMBIGUOUS_WAIT_SECONDS) finds the part sent: no second send.
        await asyncio.sleep(2.0)
    assert len(fake.sends) == 1


async def test_a_long_reply_is_split_and_sent_in_order(
    app: FastAPI, client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    paragraphs = [f"Paragraph {i}: " + "kata " * 300 for i in range(4)]
    upstream.script(Behaviour(content="\n\n".join(paragraphs)))
    async with fake_whatsapp() as (fake, url):
        _, line = await _setup(client, url)
        await say(client, line, "6281400008", "Jelaskan semuanya")
        await until(lambda: fake.sends, lambda s: len(s) == 2, what="two parts")
    assert all(len(s.text) <= 4096 for s in fake.sends)
    assert fake.sends[0].text.startswith("Paragraph 0") and fake.sends[1].text.startswith(
        "Paragraph 2"
    )
    assert " ".join(s.text for s in fake.sends).split() == "\n\n".join(paragraphs).split()
