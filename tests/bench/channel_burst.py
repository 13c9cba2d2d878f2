"""The channels bar: a burst of 200 inbound WhatsApp webhooks over 50 contacts is acknowledged
fast (p99 of the acknowledgements), and every contact gets its replies, in order.

The API runs as it does in production: a uvicorn process of its own on 127.0.0.1 (the echo
provider, the in-process workers and relay), with a Meta channel pointing at the fake Graph API
(tests/fake_whatsapp.py, a real server in this process, as is the load). Each
contact's messages are posted one after another, as Meta delivers them, and the 50 contacts
at once; every request is signed like Meta's. The baseline, in the same run and at the same
concurrency, is `GET /health` (no database): the acknowledgement's cost above the HTTP floor.

Ordering: each contact's replies must arrive at the fake in the order of the messages they
answer, and the last one must answer the contact's last message (a reply may answer several
messages at once: a turn whose message is no longer the latest leaves it to the next turn).

    .venv/bin/python -m tests.bench.channel_burst [--contacts 50] [--messages 4]
    .venv/bin/python -m tests.bench.channel_burst --database postgresql+asyncpg://postgres@127.0.0.1/postgres

With `--database`, each run makes a new database on that server and drops it afterwards.

Bounded: every wait gives up after `--timeout` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import httpx
from alembic import command
from sqlalchemy import make_url

from tests import factories
from tests.bench.stream_ttfd import postgres_admin
from tests.channels.helpers import APP_SECRET
from tests.conftest import alembic_config
from tests.fake_whatsapp import FakeWhatsApp, encode, meta_inbound, sign
from tests.live import ROOT, api_process, serve


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def summary(latencies: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
        "p95_ms": round(percentile(latencies, 0.95) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "max_ms": round(max(latencies) * 1000, 1),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 1),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    if not args.database:
        return await measure(args, f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/bench.db")
    # A new database on that server for each run: an earlier run's jobs, still retrying sends
    # to its long-gone fake, would be measured too.
    admin = make_url(args.database)
    name = f"bench_{uuid.uuid4().hex[:12]}"
    await postgres_admin(admin, f'CREATE DATABASE "{name}"')
    try:
        return await measure(args, admin.set(database=name).render_as_string(False))
    finally:
        await postgres_admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def measure(args: argparse.Namespace, database: str) -> dict[str, Any]:
    await asyncio.to_thread(command.upgrade, alembic_config(database), "head")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DATABASE_URL": database,
        "ENVIRONMENT": "development",
        "LLM_PROVIDER": "echo",
        "JOBS_CONCURRENCY": str(args.jobs),
        "LOG_LEVEL": "WARNING",
        "OUTBOUND_ALLOW_PRIVATE_NETWORKS": "true",
        "RATE_LIMIT_USER_PER_MINUTE": "0",
        "REGISTRATIONS_PER_IP_PER_HOUR": "0",
    }
    if args.separate_worker:  # the scaled-out topology: the API only acknowledges
        env["WORKERS_IN_API"] = "false"
    fake = FakeWhatsApp()
    with api_process(env) as api, worker_process(env, args.separate_worker):
        async with (
            serve(fake.asgi()) as graph,
            httpx.AsyncClient(
                base_url=api,
                timeout=httpx.Timeout(30.0),
                # as any sender should: without it a body sent after its headers waits for the
                # peer's delayed ACK (40 ms)
                transport=httpx.AsyncHTTPTransport(
                    socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
                ),
            ) as client,
        ):
            return await scenario(args, client, fake, graph)


async def scenario(
    args: argparse.Namespace, client: httpx.AsyncClient, fake: FakeWhatsApp, graph: str
) -> dict[str, Any]:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    number = str(106540350000000 + uuid.uuid4().int % 10_000_000)  # a fresh one per run
    created = await client.post(
        f"/projects/{pid}/channels",
        json={
            "provider": "meta_cloud",
            "name": "bench",
            "phone_number_id": number,
            "access_token": "EAAG-bench",
            "app_secret": APP_SECRET,
            "base_url": graph,
        },
        headers=owner.headers,
    )
    assert created.status_code == 201, created.text
    channel = created.json()["id"]
    contacts = [f"62812{index:07d}" for index in range(args.contacts)]
    acks: list[float] = []
    statuses: list[int] = []
    # The sender's connections: Meta (like any webhook sender) delivers over a bounded pool.
    in_flight = asyncio.Semaphore(args.in_flight)

    async def contact(index: int, sender: str) -> None:
        for turn in range(args.messages if index >= 0 else 1):
            body = encode(
                meta_inbound(number, sender, f"{sender} message {turn}", f"wamid.B{index}.{turn}")
            )
            headers = {
                "content-type": "application/json",
                "x-hub-signature-256": sign(body, APP_SECRET),
            }
            async with in_flight:
                started = time.perf_counter()
                response = await client.post(
                    f"/webhooks/meta/{channel}", content=body, headers=headers
                )
                acks.append(time.perf_counter() - started)
            statuses.append(response.status_code)

    health: list[float] = []

    async def probe(_: int, __: str) -> None:
        for _turn in range(args.messages):
            async with in_flight:
                started = time.perf_counter()
                await client.get("/health")
                health.append(time.perf_counter() - started)

    # Warm-up, uncounted, as for /health: a process's first webhooks open its pooled
    # connections and compile its statements, and its worker's first turns do the same. Other
    # contacts, one round of `in_flight` at once; then wait for their replies.
    warm = [f"62813{index:07d}" for index in range(args.in_flight)]
    await asyncio.gather(*(contact(-1 - i, c) for i, c in enumerate(warm)))
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if all(_replies(fake, warm).values()):
            break
        await asyncio.sleep(0.05)
    warm_sends = len(fake.sends)
    acks.clear()
    statuses.clear()
    await asyncio.gather(*(probe(i, c) for i, c in enumerate(contacts)))  # baseline warm-up
    health.clear()
    await asyncio.gather(*(probe(i, c) for i, c in enumerate(contacts)))
    started = time.perf_counter()
    await asyncio.gather(*(contact(i, c) for i, c in enumerate(contacts)))
    burst_seconds = time.perf_counter() - started

    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        replies = _replies(fake, contacts)
        if all(r and r[-1] == args.messages - 1 for r in replies.values()):
            break
        await asyncio.sleep(0.1)
    done_seconds = time.perf_counter() - started
    await asyncio.sleep(1.0)  # anything sent twice would arrive by now
    replies = _replies(fake, contacts)
    in_order = all(
        r == sorted(set(r)) and r and r[-1] == args.messages - 1 for r in replies.values()
    )
    ack = summary(acks)
    base = summary(health)
    results = {
        "database": "postgresql" if args.database else "sqlite",
        "webhooks": len(acks),
        "contacts": args.contacts,
        "in_flight": args.in_flight,
        "separate_worker": args.separate_worker,
        "all_200": statuses.count(200) == len(statuses),
        "ack": ack,
        "health_baseline": base,
        "ack_p99_over_health_p99": round(ack["p99_ms"] / max(base["p99_ms"], 0.1), 2),
        "burst_seconds": round(burst_seconds, 2),
        "webhooks_per_second": round(len(acks) / burst_seconds, 1),
        "all_replies_sent_after_seconds": round(done_seconds, 2),
        "sends": len(fake.sends) - warm_sends,
        "replies_per_contact": statistics.fmean(len(r) for r in replies.values()),
        "every_contact_in_order": in_order,
    }
    results["ok"] = bool(results["all_200"] and in_order and ack["p99_ms"] < args.budget_ms)
    return results


@contextlib.contextmanager
def worker_process(env: dict[str, str], wanted: bool) -> Iterator[None]:
    """`python -m app.worker` beside the API (when `wanted`), killed afterwards."""
    if not wanted:
        yield
        return
    worker_env = env | {"JOBS_POLL_SECONDS": "0.1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "app.worker"],
        cwd=ROOT,
        env=worker_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        process.terminate()
        process.wait(timeout=15)


def _replies(fake: FakeWhatsApp, contacts: list[str]) -> dict[str, list[int]]:
    """Per contact, the index of the message each reply answers, in arrival order."""
    found: dict[str, list[int]] = defaultdict(list)
    for send in fake.sends:
        found[send.to].append(int(send.text.rsplit(" ", 1)[1]))
    return {c: found[c] for c in contacts}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contacts", type=int, default=50)
    parser.add_argument("--messages", type=int, default=4, help="per contact")
    parser.add_argument(
        "--database", help="a Postgres server to make the run's database on; default: SQLite"
    )
    parser.add_argument("--budget-ms", type=float, default=100.0, help="the p99 bar")
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--jobs", type=int, default=4, help="JOBS_CONCURRENCY of the API")
    parser.add_argument("--in-flight", type=int, default=8, help="concurrent webhook requests")
    parser.add_argument(
        "--separate-worker",
        action="store_true",
        help="WORKERS_IN_API=false and one `python -m app.worker` process",
    )
    return parser.parse_args()


if __name__ == "__main__":
    outcome = asyncio.run(main(parse_args()))
    print(json.dumps(outcome, indent=2))
    raise SystemExit(0 if outcome["ok"] else 1)
