"""Messages sent to one session at the same moment are answered one after the other."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI

from app.main import create_app
from tests import factories
from tests.conftest import make_settings
from tests.fake_openai import Behaviour, FakeOpenAI


async def _post(
    client: httpx.AsyncClient, owner: factories.Account, pid: str, sid: str, text: str
) -> httpx.Response:
    return await client.post(
        "/chat",
        json={"project_id": pid, "session_id": sid, "message": text},
        headers=owner.headers,
    )


async def test_concurrent_messages_are_answered_in_turn(
    client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    sid = (await factories.chat(client, owner, pid, "first"))["session_id"]
    upstream.default = Behaviour(delay=0.3)
    responses = await asyncio.gather(*(_post(client, owner, pid, sid, t) for t in "ABC"))
    assert [r.status_code for r in responses] == [200, 200, 200]

    items = (await client.get(f"/sessions/{sid}/messages", headers=owner.headers)).json()["items"]
    assert len(items) == 8
    pairs = [(items[i]["content"], items[i + 1]["content"]) for i in range(0, 8, 2)]
    # Every reply directly follows its own message: no interleaving.
    assert all(reply == f"Fake reply to: {question}" for question, reply in pairs)
    # Each turn saw the turns before it: the last request carried the whole conversation.
    last = upstream.requests[-1]["messages"]
    assert [m["content"] for m in last[1:]] == [c for pair in pairs for c in pair][:-1]
    session = (await client.get(f"/sessions/{sid}", headers=owner.headers)).json()
    assert session["message_count"] == 8
    assert session["usage"]["total_tokens"] == sum(
        m["usage"]["total_tokens"] for m in items if m["role"] == "assistant"
    )


async def test_a_message_waits_at_most_the_configured_time(
    database_url: str, clean_database: None, upstream: FakeOpenAI
) -> None:
    settings = make_settings(database_url, SESSION_TURN_WAIT_SECONDS=0.3)
    app: FastAPI = create_app(settings, llm_transport=httpx.ASGITransport(upstream.asgi()))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client,
    ):
        owner = await factories.account(client)
        pid = (await factories.create_project(client, owner))["id"]
        sid = (await factories.chat(client, owner, pid, "first"))["session_id"]
        upstream.script(Behaviour(delay=2))
        slow = asyncio.create_task(_post(client, owner, pid, sid, "slow"))
        for _ in range(1000):  # until the slow turn is at the LLM (holding the session)
            if len(upstream.requests) == 2:
                break
            await asyncio.sleep(0.01)
        busy = await _post(client, owner, pid, sid, "impatient")
        assert busy.status_code == 409 and busy.json()["error"]["code"] == "session_busy"
        assert busy.headers["retry-after"] == "1"
        assert (await slow).status_code == 200
        # Once the reply is stored, the session is free again.
        assert (await _post(client, owner, pid, sid, "later")).status_code == 200
        # The refused message was not stored.
        items = (await client.get(f"/sessions/{sid}/messages", headers=owner.headers)).json()
        assert "impatient" not in [m["content"] for m in items["items"]]
