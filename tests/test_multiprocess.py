"""Two separate API processes (uvicorn subprocesses) against the machine's Postgres and Redis,
taking concurrent requests: one global rate limit, idempotency across both, and per-session
ordering. Postgres only (SQLite is one machine's file)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import factories
from tests.fake_openai import Behaviour, FakeOpenAI
from tests.live import api_process, serve

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = "redis://127.0.0.1:6379/0"

pytestmark = pytest.mark.skipif(
    not os.environ.get("TEST_DATABASE_URL", "").startswith("postgresql"),
    reason="two processes share Postgres and Redis",
)


@pytest.fixture
async def two_apis(
    database_url: str, clean_database: None, tmp_path: Path
) -> AsyncIterator[tuple[FakeOpenAI, httpx.AsyncClient, httpx.AsyncClient]]:
    upstream = FakeOpenAI(Behaviour(delay=0.2))
    async with serve(upstream.asgi()) as upstream_url:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "DATABASE_URL": database_url,
            "REDIS_URL": REDIS_URL,
            "ENVIRONMENT": "development",
            "SECRET_KEY": "multi-process-test-secret-key-0123456789",
            "LLM_PROVIDER": "openai",
            "OPENAI_API_KEY": "sk-test",
            "LLM_BASE_URL": f"{upstream_url}/v1",
            "LLM_MAX_ATTEMPTS": "1",
            # Redis outlives test runs: per-IP counters (one IP for every test) would pile up.
            "REGISTRATIONS_PER_IP_PER_HOUR": "0",
            "LOGIN_ATTEMPTS_PER_IP_PER_MINUTE": "0",
            "LOG_LEVEL": "WARNING",
            # prometheus-client's multiprocess mode: /metrics sums both processes.
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        }
        with api_process(env) as first_url, api_process(env) as second_url:
            async with (
                httpx.AsyncClient(base_url=first_url, timeout=30) as first,
                httpx.AsyncClient(base_url=second_url, timeout=30) as second,
            ):
                yield upstream, first, second


async def _setup(client: httpx.AsyncClient, **project: Any) -> tuple[factories.Account, str, str]:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner, **project))["id"]
    key = (await factories.api_key(client, owner, pid))["key"]
    return owner, pid, key


async def test_one_rate_limit_across_two_processes(
    two_apis: tuple[FakeOpenAI, httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    _, first, second = two_apis
    _, _, key = await _setup(first, end_user_rate_limit_per_minute=10)
    headers = factories.key_headers(key, f"user-{uuid.uuid4().hex}")
    responses = await asyncio.gather(
        *(
            (first if i % 2 else second).post(
                "/api/v1/chat", json={"message": f"hi {i}"}, headers=headers
            )
            for i in range(24)
        )
    )
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429}
    # One limit of 10 shared by both processes (a counter, not 10 per process).
    assert codes.count(200) == 10, codes
    limited = next(r for r in responses if r.status_code == 429)
    assert limited.json()["error"]["code"] == "rate_limited"


async def test_idempotency_holds_across_two_processes(
    two_apis: tuple[FakeOpenAI, httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    upstream, first, second = two_apis
    owner, pid, _ = await _setup(first)
    headers = {**owner.headers, "Idempotency-Key": str(uuid.uuid4())}
    body = {"project_id": pid, "message": "exactly once"}
    before = len(upstream.requests)
    responses = await asyncio.gather(
        *((first if i % 2 else second).post("/chat", json=body, headers=headers) for i in range(6))
    )
    assert [r.status_code for r in responses] == [200] * 6
    assert len({r.json()["assistant_message"]["id"] for r in responses}) == 1
    assert len(upstream.requests) - before == 1
    sid = responses[0].json()["session_id"]
    messages = (await second.get(f"/sessions/{sid}/messages", headers=owner.headers)).json()
    assert len(messages["items"]) == 2


async def test_one_sessions_messages_are_answered_in_order_across_processes(
    two_apis: tuple[FakeOpenAI, httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    _, first, second = two_apis
    owner, pid, _ = await _setup(first)
    sid = (await factories.chat(first, owner, pid, "start"))["session_id"]
    responses = await asyncio.gather(
        *(
            (first if i % 2 else second).post(
                "/chat",
                json={"project_id": pid, "session_id": sid, "message": f"m{i}"},
                headers=owner.headers,
            )
            for i in range(6)
        )
    )
    assert [r.status_code for r in responses] == [200] * 6, [r.text for r in responses]
    items = (await first.get(f"/sessions/{sid}/messages", headers=owner.headers)).json()["items"]
    assert len(items) == 14
    for question, reply in zip(items[::2], items[1::2], strict=True):
        assert question["role"] == "user" and reply["role"] == "assistant"
        assert reply["content"] == f"Fake reply to: {question['content']}"
    session = (await second.get(f"/sessions/{sid}", headers=owner.headers)).json()
    assert session["message_count"] == 14


async def test_metrics_sum_every_process(
    two_apis: tuple[FakeOpenAI, httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    _, first, second = two_apis
    owner = await factories.account(first)
    for client, count in ((first, 3), (second, 2)):
        for _ in range(count):
            assert (await client.get("/projects", headers=owner.headers)).status_code == 200

    for client in (first, second):
        text = (await client.get("/metrics")).text
        line = 'http_requests_total{method="GET",route="/projects",status="200"}'
        counts = [float(row.split()[-1]) for row in text.splitlines() if row.startswith(line)]
        assert counts == [5.0], counts
        assert "db_round_trips_total" in text
