"""Chat turns use cached project settings only at the project's current revision: every change
to a project, its prompts or its intents is seen by the next turn, in this process and in
another one that cached the old settings."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import Project
from tests import factories
from tests.fake_openai import FakeOpenAI

Change = Callable[[httpx.AsyncClient, factories.Account, str], Awaitable[Any]]


async def revision(engine: AsyncEngine, project_id: str) -> int:
    async with engine.connect() as connection:
        value = await connection.scalar(
            select(Project.revision).where(Project.id == uuid.UUID(project_id))
        )
    assert value is not None
    return int(value)


async def test_every_change_to_a_project_its_prompts_or_intents_raises_its_revision(
    client: httpx.AsyncClient, cleanup_engine: AsyncEngine
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    other = (await factories.create_project(client, owner, name="Other"))["id"]
    base = f"/projects/{pid}"
    seen = [await revision(cleanup_engine, pid)]

    async def expect_raised(response: httpx.Response) -> None:
        assert response.status_code < 300, response.text
        seen.append(await revision(cleanup_engine, pid))
        assert seen[-1] > seen[-2], (response.request.method, response.request.url, seen)

    prompt = await factories.create_prompt(client, owner, pid)
    seen.append(await revision(cleanup_engine, pid))
    assert seen[-1] > seen[-2]
    h = owner.headers
    await expect_raised(
        await client.patch(f"{base}/prompts/{prompt['id']}", json={"content": "x"}, headers=h)
    )
    await expect_raised(await client.delete(f"{base}/prompts/{prompt['id']}", headers=h))
    intent = await factories.create_intent(client, owner, pid)
    seen.append(await revision(cleanup_engine, pid))
    assert seen[-1] > seen[-2]
    await expect_raised(
        await client.patch(f"{base}/intents/{intent['id']}", json={"reply": "Yo"}, headers=h)
    )
    await expect_raised(await client.delete(f"{base}/intents/{intent['id']}", headers=h))
    await expect_raised(await client.patch(base, json={"history_window": 3}, headers=h))
    # Reads, and a change to another project, leave it alone.
    await client.get(f"{base}/prompts", headers=h)
    await client.patch(f"/projects/{other}", json={"name": "Renamed"}, headers=h)
    assert await revision(cleanup_engine, pid) == seen[-1]


async def test_a_process_that_cached_old_settings_answers_with_the_new_ones(
    client: httpx.AsyncClient,
    make_client: Callable[..., Awaitable[httpx.AsyncClient]],
    upstream: FakeOpenAI,
) -> None:
    other_process = await make_client()
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    prompt = await factories.create_prompt(client, owner, pid, content="Old prompt.")
    session = await factories.chat(other_process, owner, pid, "first")  # caches the settings
    assert upstream.last_request["messages"][0]["content"] == "Old prompt."

    changes: list[tuple[str, str, dict[str, Any]]] = [
        ("PATCH", f"/projects/{pid}/prompts/{prompt['id']}", {"content": "New prompt."}),
        ("PATCH", f"/projects/{pid}", {"model": "gpt-new"}),
        ("POST", f"/projects/{pid}/intents", factories.intent_body(reply="Canned!")),
    ]
    for method, url, body in changes:
        response = await client.request(method, url, json=body, headers=owner.headers)
        assert response.status_code < 300, response.text
    reply = await factories.chat(
        other_process, owner, pid, "tell me", session_id=session["session_id"]
    )
    assert reply["reply"] != "Canned!"
    sent = upstream.last_request
    assert sent["messages"][0]["content"] == "New prompt."
    assert sent["model"] == "gpt-new"
    hello = await factories.chat(
        other_process, owner, pid, "hello", session_id=session["session_id"]
    )
    assert hello["reply"] == "Canned!"  # the new intent answers

    gone = await client.delete(f"/projects/{pid}", headers=owner.headers)
    assert gone.status_code == 204
    after = await other_process.post(
        "/chat", json={"project_id": pid, "message": "still?"}, headers=owner.headers
    )
    assert after.status_code == 404
    assert after.json()["error"]["code"] == "project_not_found"
