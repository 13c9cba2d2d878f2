"""Events end to end: recorded with their change, relayed in order, read from the feed (JSON and
SSE), delivered to a signed webhook and published to Kafka."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from app.models import Job
from tests import factories
from tests.events.receiver import Receiver
from tests.live import serve
from tests.waiting import until


async def _feed(client: httpx.AsyncClient, owner: factories.Account, pid: str) -> list[Any]:
    response = await client.get(f"/projects/{pid}/events?limit=500", headers=owner.headers)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def test_a_conversation_s_events_reach_the_feed_in_order_with_sequences(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    first = await factories.chat(client, owner, pid, "hello")
    await factories.chat(client, owner, pid, "again", session_id=first["session_id"])

    events = await until(
        lambda: _feed(client, owner, pid), lambda items: len(items) >= 6, what="the events"
    )

    assert [e["type"] for e in events] == [
        "project.created",
        "session.created",
        "message.created",
        "reply.completed",
        "message.created",
        "reply.completed",
    ]
    session_events = events[1:]
    assert [e["sequence"] for e in session_events] == [1, 2, 3, 4, 5]
    assert {e["sessionid"] for e in session_events} == {first["session_id"]}
    created = events[2]
    assert created["specversion"] == "1.0" and created["projectid"] == pid
    assert created["source"].endswith(f"/projects/{pid}")
    assert created["subject"] == first["message"]["id"]
    assert created["data"]["characters"] == len("hello")
    # Message text stays inside unless the project opts in.
    assert all("content" not in e["data"] and "title" not in e["data"] for e in events)
    reply = events[3]["data"]
    assert reply["message_id"] == first["assistant_message"]["id"]
    assert reply["status"] == "complete" and reply["usage"]["total_tokens"] is not None


async def test_a_project_that_opts_in_gets_message_text_in_its_events(
    client: httpx.AsyncClient,
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner, events_include_content=True))["id"]
    turn = await factories.chat(client, owner, pid, "secret plans")

    events = await until(
        lambda: _feed(client, owner, pid), lambda items: len(items) >= 4, what="the events"
    )

    by_type = {e["type"]: e["data"] for e in events}
    assert by_type["message.created"]["content"] == "secret plans"
    assert by_type["reply.completed"]["content"] == turn["assistant_message"]["content"]
    assert by_type["session.created"]["title"] == "secret plans"


async def test_the_feed_pages_with_a_cursor_and_filters_by_type(
    client: httpx.AsyncClient,
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    await factories.chat(client, owner, pid, "one")
    await until(lambda: _feed(client, owner, pid), lambda items: len(items) >= 4, what="events")
    url = f"/projects/{pid}/events"

    first = (await client.get(f"{url}?limit=2", headers=owner.headers)).json()
    rest = (await client.get(f"{url}?after={first['next_cursor']}", headers=owner.headers)).json()
    replies = (await client.get(f"{url}?type=reply.completed", headers=owner.headers)).json()
    empty = (await client.get(f"{url}?after=999999999", headers=owner.headers)).json()
    bad = await client.get(f"{url}?after=abc", headers=owner.headers)

    assert len(first["items"]) == 2
    assert [e["type"] for e in rest["items"]] == ["message.created", "reply.completed"]
    assert [e["type"] for e in replies["items"]] == ["reply.completed"]
    assert empty == {"items": [], "next_cursor": None}
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"


async def test_configuration_changes_and_deletions_are_events(client: httpx.AsyncClient) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    prompt = await factories.create_prompt(client, owner, pid)
    await factories.create_intent(client, owner, pid)
    await client.patch(f"/projects/{pid}", json={"temperature": 0.3}, headers=owner.headers)
    key = await factories.api_key(client, owner, pid)
    await client.delete(f"/projects/{pid}/api-keys/{key['id']}", headers=owner.headers)
    turn = await factories.chat(client, owner, pid, "hi")
    await client.post(
        f"/messages/{turn['assistant_message']['id']}/feedback",
        json={"rating": "up"},
        headers=owner.headers,
    )
    await client.delete(f"/sessions/{turn['session_id']}", headers=owner.headers)

    events = await until(
        lambda: _feed(client, owner, pid),
        lambda items: any(e["type"] == "session.deleted" for e in items),
        what="the session's deletion",
    )

    types = [e["type"] for e in events]
    for expected in (
        "project.created",
        "prompt.created",
        "intent.created",
        "project.updated",
        "api_key.created",
        "feedback.created",
        "session.deleted",
    ):
        assert expected in types, (expected, types)
    assert any(t in types for t in ("api_key.revoked", "api_key.deleted")), types
    updated = next(e for e in events if e["type"] == "project.updated")
    assert updated["data"]["changed"] == ["temperature"]
    assert next(e for e in events if e["type"] == "prompt.created")["subject"] == prompt["id"]
    session = [e for e in events if e.get("sessionid") == turn["session_id"]]
    assert [e["sequence"] for e in session] == list(range(1, len(session) + 1))
    assert session[-1]["type"] == "session.deleted"


async def test_another_tenant_s_feed_is_not_found(client: httpx.AsyncClient) -> None:
    owner, intruder = await factories.account(client), await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]

    for path in (f"/projects/{pid}/events", f"/projects/{pid}/events/stream"):
        response = await client.get(path, headers=intruder.headers)
        assert response.status_code == 404, (path, response.text)


async def test_a_webhook_gets_signed_events_in_order(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    receiver = Receiver()
    async with serve(receiver.asgi()) as base:
        owner = await factories.account(client)
        pid = (await factories.create_project(client, owner))["id"]
        hook = await factories.create_webhook(
            client, owner, pid, f"{base}/hook", event_types=["session.*", "reply.*"]
        )
        receiver.secret = hook["signing_secret"]
        assert hook["signing_secret"].startswith("whsec_")
        first = await factories.chat(client, owner, pid, "a")
        for text in ("b", "c"):
            await factories.chat(client, owner, pid, text, session_id=first["session_id"])

        await until(lambda: len(receiver.received), lambda n: n >= 4, what="the deliveries")

        assert receiver.rejected == 0
        types = [e["type"] for e in receiver.received]
        assert types == ["session.created"] + ["reply.completed"] * 3
        assert [e["sequence"] for e in receiver.received] == [1, 3, 5, 7]
        headers = receiver.headers[0]
        assert headers["webhook-id"] == receiver.received[0]["id"]
        assert headers["webhook-signature"].startswith("v1,")
        again = await client.get(f"/webhooks/{hook['id']}", headers=owner.headers)
        assert "signing_secret" not in again.json()
        deliveries = (
            await client.get(f"/webhooks/{hook['id']}/deliveries", headers=owner.headers)
        ).json()["items"]
        assert len(deliveries) == 4
        assert {d["status"] for d in deliveries} == {"succeeded"}
        assert all(d["response_status"] == 204 and d["latency_ms"] >= 0 for d in deliveries)


async def test_a_failing_endpoint_is_retried_and_a_delivery_can_be_resent(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    receiver = Receiver(statuses=[500])
    async with serve(receiver.asgi()) as base:
        owner = await factories.account(client)
        pid = (await factories.create_project(client, owner))["id"]
        hook = await factories.create_webhook(
            client, owner, pid, f"{base}/hook", event_types=["message.created"]
        )
        receiver.secret = hook["signing_secret"]
        await factories.chat(client, owner, pid, "x")
        url = f"/webhooks/{hook['id']}/deliveries"
        failed = await until(
            lambda: _items(client, url, owner), lambda items: len(items) >= 1, what="an attempt"
        )
        assert failed[0]["status"] == "failed" and failed[0]["response_status"] == 500
        # The retry is scheduled about 5 s later (Standard Webhooks' first delay): run it now.
        # The attempt is logged just before the job's outcome is: wait for the latter.
        job = await until(
            lambda: _job(app, "webhook.deliver"), lambda j: j.status == "queued", what="the retry"
        )
        assert job.attempts == 1
        assert 4 <= (job.run_at - failed[0]["created_at_dt"]).total_seconds() <= 7
        await _run_now(app, job.id)
        delivered = await until(
            lambda: _items(client, url, owner), lambda items: len(items) >= 2, what="the retry"
        )
        assert delivered[0]["status"] == "succeeded" and delivered[0]["attempt"] == 2
        assert len(receiver.received) == 1

        resent = await client.post(f"{url}/{delivered[0]['id']}/resend", headers=owner.headers)
        assert resent.status_code == 202, resent.text
        await until(lambda: len(receiver.received), lambda n: n >= 2, what="the resend")
        assert receiver.received[0]["id"] == receiver.received[1]["id"]  # same event id


async def _items(client: httpx.AsyncClient, url: str, owner: factories.Account) -> list[Any]:
    from datetime import datetime

    items = (await client.get(url, headers=owner.headers)).json()["items"]
    for item in items:
        item["created_at_dt"] = datetime.fromisoformat(item["created_at"].replace("Z", "+00:00"))
    return list(items)


async def _job(app: FastAPI, kind: str) -> Job:
    async with app.state.sessionmaker() as db:
        found = (await db.execute(select(Job).where(Job.kind == kind))).scalars().first()
        assert found is not None
        return found


async def _run_now(app: FastAPI, job_id: uuid.UUID) -> None:
    from datetime import UTC, datetime

    async with app.state.sessionmaker() as db:
        job = await db.get(Job, job_id)
        assert job is not None
        job.run_at = datetime.now(UTC)
        await db.commit()
    app.state.worker.wake()


async def test_webhook_urls_on_private_networks_are_refused_unless_allowed(
    make_client: Any,
) -> None:
    client = await make_client(OUTBOUND_ALLOW_PRIVATE_NETWORKS=False)
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    for url in ("http://127.0.0.1:9/hook", "http://10.0.0.1/", "http://169.254.169.254/"):
        response = await client.post(
            f"/projects/{pid}/webhooks", json={"url": url}, headers=owner.headers
        )
        assert response.status_code == 422, (url, response.text)
        assert response.json()["error"]["code"] == "url_not_allowed"


async def test_events_are_published_to_kafka(make_client: Any, kafka_bootstrap: str) -> None:
    from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]

    topic = f"events-{uuid.uuid4().hex[:8]}"
    client = await make_client(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, KAFKA_TOPIC=topic)
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    turn = await factories.chat(client, owner, pid, "to kafka")

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=f"g-{topic}",
        session_timeout_ms=1000,
        heartbeat_interval_ms=100,
    )
    await consumer.start()
    try:
        seen: list[dict[str, Any]] = []

        async def more() -> int:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                seen.extend(__import__("json").loads(r.value) for r in records)
            return len(seen)

        await until(more, lambda n: n >= 4, polls=60, every=0.1, what="the events in Kafka")
    finally:
        await consumer.stop()
    session = [e for e in seen if e.get("sessionid") == turn["session_id"]]
    assert [e["type"] for e in session] == ["session.created", "message.created", "reply.completed"]
    # Keyed by the project, it is on its own partition: in Kafka, but not ordered with them.
    assert [e["type"] for e in seen if not e.get("sessionid")] == ["project.created"]


async def test_an_endpoint_that_answers_410_is_disabled_with_an_event(
    client: httpx.AsyncClient,
) -> None:
    receiver = Receiver(statuses=[410])
    async with serve(receiver.asgi()) as base:
        owner = await factories.account(client)
        pid = (await factories.create_project(client, owner))["id"]
        hook = await factories.create_webhook(
            client, owner, pid, f"{base}/hook", event_types=["message.created"]
        )
        await factories.chat(client, owner, pid, "x")

        async def state() -> dict[str, Any]:
            return dict((await client.get(f"/webhooks/{hook['id']}", headers=owner.headers)).json())

        disabled = await until(state, lambda h: not h["is_enabled"], what="the disabling")
        assert "410" in disabled["disabled_reason"]
        events = await until(
            lambda: _feed(client, owner, pid),
            lambda items: any(e["type"] == "webhook.disabled" for e in items),
            what="the webhook.disabled event",
        )
        event = next(e for e in events if e["type"] == "webhook.disabled")
        assert event["data"]["webhook_id"] == hook["id"]

        enabled = await client.patch(
            f"/webhooks/{hook['id']}", json={"is_enabled": True}, headers=owner.headers
        )
        assert enabled.json()["is_enabled"] is True and enabled.json()["disabled_at"] is None


async def test_an_endpoint_failing_for_the_configured_time_is_disabled(
    make_client: Any,
) -> None:
    receiver = Receiver(statuses=[500] * 20)
    async with serve(receiver.asgi()) as base:
        client = await make_client(WEBHOOK_DISABLE_AFTER_HOURS=0.5 / 3600)  # half a second
        app: FastAPI = client._transport.app  # type: ignore[attr-defined]
        owner = await factories.account(client)
        pid = (await factories.create_project(client, owner))["id"]
        hook = await factories.create_webhook(
            client, owner, pid, f"{base}/hook", event_types=["message.created"]
        )
        await factories.chat(client, owner, pid, "x")
        url = f"/webhooks/{hook['id']}/deliveries"
        await until(lambda: _items(client, url, owner), bool, what="the first attempt")
        first = await client.get(f"/webhooks/{hook['id']}", headers=owner.headers)
        assert first.json()["is_enabled"] and first.json()["failing_since"] is not None
        await asyncio.sleep(0.6)
        await _run_now(app, (await _job(app, "webhook.deliver")).id)

        async def state() -> dict[str, Any]:
            return dict((await client.get(f"/webhooks/{hook['id']}", headers=owner.headers)).json())

        disabled = await until(state, lambda h: not h["is_enabled"], what="the disabling")
        assert "failed" in disabled["disabled_reason"]
        assert (await _job(app, "webhook.deliver")).status == "dead"


async def test_the_event_stream_resumes_after_the_last_event_id(
    client: httpx.AsyncClient,
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    first = await factories.chat(client, owner, pid, "one")
    await until(lambda: _feed(client, owner, pid), lambda items: len(items) >= 4, what="events")
    url = f"/projects/{pid}/events/stream"

    everything = await client.get(f"{url}?after=0&max_seconds=0.3", headers=owner.headers)
    assert everything.status_code == 200
    assert everything.headers["content-type"].startswith("text/event-stream")
    frames = _frames(everything.text)
    assert [f["event"] for f in frames] == [
        "project.created",
        "session.created",
        "message.created",
        "reply.completed",
    ]
    assert json.loads(frames[2]["data"])["subject"] == first["message"]["id"]

    await factories.chat(client, owner, pid, "two", session_id=first["session_id"])
    await until(lambda: _feed(client, owner, pid), lambda items: len(items) >= 6, what="more")
    resumed = await client.get(
        f"{url}?max_seconds=0.3",
        headers={**owner.headers, "Last-Event-ID": frames[-1]["id"]},
    )
    assert [f["event"] for f in _frames(resumed.text)] == ["message.created", "reply.completed"]
    bad = await client.get(url, headers={**owner.headers, "Last-Event-ID": "x"})
    assert bad.status_code == 422


def _frames(body: str) -> list[dict[str, str]]:
    frames = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line and not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.strip()
        if "event" in fields:
            frames.append(fields)
    return frames


def test_a_failing_delivery_is_retried_for_more_than_a_day() -> None:
    from app.events.webhooks import RETRY_DELAYS_SECONDS

    # Standard Webhooks' schedule: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h; then dead.
    assert sum(RETRY_DELAYS_SECONDS) * 0.9 >= 24 * 3600  # even with the jitter's low end
    assert list(RETRY_DELAYS_SECONDS) == sorted(RETRY_DELAYS_SECONDS)
