"""`Idempotency-Key` on chat sends: retries return the first result and store nothing twice."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import update

from app.core.db import create_engine
from app.models import IdempotencyKey
from tests import factories
from tests.conftest import Live, make_settings
from tests.fake_openai import Behaviour, FakeOpenAI
from tests.live import stream_request


async def _setup(client: httpx.AsyncClient) -> tuple[factories.Account, str]:
    owner = await factories.account(client)
    return owner, (await factories.create_project(client, owner))["id"]


async def _send(
    client: httpx.AsyncClient, owner: factories.Account, key: str, **body: Any
) -> httpx.Response:
    return await client.post("/chat", json=body, headers={**owner.headers, "Idempotency-Key": key})


async def _message_count(client: httpx.AsyncClient, owner: factories.Account, pid: str) -> int:
    sessions = (await client.get(f"/projects/{pid}/sessions", headers=owner.headers)).json()
    return sum(s["message_count"] for s in sessions["items"])


async def test_a_retry_gets_the_first_result_and_nothing_is_stored_twice(
    client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    owner, pid = await _setup(client)
    key = str(uuid.uuid4())
    first = await _send(client, owner, key, project_id=pid, message="Hello")
    again = await _send(client, owner, key, project_id=pid, message="Hello")
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert again.headers["x-llm-attempts"] == first.headers["x-llm-attempts"] == "1"
    assert len(upstream.requests) == 1 and await _message_count(client, owner, pid) == 2

    reused = await _send(client, owner, key, project_id=pid, message="Something else")
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "idempotency_key_reused"

    # Keys are per caller: another user's identical key is unrelated.
    other = await factories.account(client)
    other_pid = (await factories.create_project(client, other))["id"]
    assert (
        await _send(client, other, key, project_id=other_pid, message="Hello")
    ).status_code == 200


async def test_concurrent_retries_make_one_llm_call(
    client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    owner, pid = await _setup(client)
    upstream.default = Behaviour(delay=0.4)
    responses = await asyncio.gather(
        *(_send(client, owner, "same-key", project_id=pid, message="Hi") for _ in range(3))
    )
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert len({r.json()["assistant_message"]["id"] for r in responses}) == 1
    assert len(upstream.requests) == 1 and await _message_count(client, owner, pid) == 2


async def test_a_retry_that_waits_too_long_gets_409(
    make_client: Callable[..., Any], upstream: FakeOpenAI
) -> None:
    client = await make_client(IDEMPOTENCY_WAIT_SECONDS=0.2)
    owner, pid = await _setup(client)
    upstream.script(Behaviour(delay=1.5))
    first = asyncio.create_task(_send(client, owner, "k", project_id=pid, message="Hi"))
    await _until(lambda: len(upstream.requests) == 1)  # the first request is at the LLM
    busy = await _send(client, owner, "k", project_id=pid, message="Hi")
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "idempotency_key_in_progress"
    assert busy.headers["retry-after"] == "1"
    assert (await first).status_code == 200
    replay = await _send(client, owner, "k", project_id=pid, message="Hi")
    assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
    assert len(upstream.requests) == 1


async def test_a_request_that_stored_nothing_frees_its_key(
    client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    owner, pid = await _setup(client)
    missing = await _send(
        client, owner, "k1", project_id=pid, session_id=str(uuid.uuid4()), message="x"
    )
    assert missing.status_code == 404
    fresh = await _send(client, owner, "k1", project_id=pid, message="a new request")
    assert fresh.status_code == 200 and "idempotent-replayed" not in fresh.headers


async def test_a_stored_failure_is_replayed_not_retried(
    client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    owner, pid = await _setup(client)
    upstream.script(Behaviour(kind="status", status=500))
    first = await _send(client, owner, "k", project_id=pid, message="Hi")
    again = await _send(client, owner, "k", project_id=pid, message="Hi")
    assert first.status_code == again.status_code == 502
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert len(upstream.requests) == 1 and await _message_count(client, owner, pid) == 2


async def test_bad_keys_are_rejected(client: httpx.AsyncClient) -> None:
    owner, pid = await _setup(client)
    keys: list[str | bytes] = ["x" * 256, b"caf\xe9", "tab\there"]
    for key in keys:
        response = await client.post(
            "/chat",
            json={"project_id": pid, "message": "Hi"},
            headers={**owner.headers, "Idempotency-Key": key},
        )
        assert response.status_code == 422, key
        assert response.json()["error"]["code"] == "invalid_idempotency_key"


async def test_an_expired_key_can_be_used_again(
    client: httpx.AsyncClient, upstream: FakeOpenAI, database_url: str
) -> None:
    owner, pid = await _setup(client)
    assert (await _send(client, owner, "k", project_id=pid, message="Hi")).status_code == 200
    engine = create_engine(make_settings(database_url))
    try:
        async with engine.begin() as connection:
            await connection.execute(
                update(IdempotencyKey).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
    finally:
        await engine.dispose()
    again = await _send(client, owner, "k", project_id=pid, message="Hi")
    assert again.status_code == 200 and "idempotent-replayed" not in again.headers
    assert len(upstream.requests) == 2


async def test_the_key_endpoints_are_idempotent_too(
    client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    owner, pid = await _setup(client)
    key = (await factories.api_key(client, owner, pid))["key"]
    headers = {**factories.key_headers(key, "u1"), "Idempotency-Key": "seed-1"}
    body = {"message": "Halo", "persist": True}
    first = await client.post("/api/v1/chat", json=body, headers=headers)
    again = await client.post("/api/v1/chat", json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"

    project = (await client.get(f"/projects/{pid}", headers=owner.headers)).json()
    completion = {"model": project["slug"], "messages": [{"role": "user", "content": "Hi"}]}
    headers["Idempotency-Key"] = "oai-1"
    first = await client.post("/v1/chat/completions", json=completion, headers=headers)
    again = await client.post("/v1/chat/completions", json=completion, headers=headers)
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert len(upstream.requests) == 2
    streamed = await client.post(
        "/v1/chat/completions", json=completion | {"stream": True}, headers=headers
    )
    assert streamed.status_code == 400
    assert streamed.json()["error"]["code"] == "idempotency_not_supported"


async def test_a_retried_stream_follows_the_first_reply(live: Live) -> None:
    api = await live.api()
    owner, pid = await _setup(api)
    live.upstream.script(Behaviour(content="one two three four five", chunk_delay=0.05))
    body = {"project_id": pid, "message": "Count", "stream": True}
    headers = {**owner.headers, "Idempotency-Key": "stream-1"}
    (_, first), (replayed, second) = await asyncio.gather(
        stream_request(api, "POST", "/chat", json=body, headers=headers),
        _later(stream_request(api, "POST", "/chat", json=body, headers=headers)),
    )
    assert replayed.headers["idempotent-replayed"] == "true"
    assert first.text == second.text == "one two three four five"
    assert first.events[0].data == second.events[0].data  # the same session and reply ids
    assert second.last.event == "done"
    assert len(live.upstream.requests) == 1


async def _until(condition: Callable[[], bool], seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def _later(coroutine: Any) -> Any:
    await asyncio.sleep(0.1)
    return await coroutine
