from __future__ import annotations

import httpx

from tests import factories


async def test_seed_usage_flow(client: httpx.AsyncClient) -> None:
    owner = await factories.account(client)
    project = await factories.create_project(client, owner)
    await factories.create_prompt(client, owner, project["id"], content="Be brief.")
    first = await factories.chat(client, owner, project["id"], "What is machine learning?")
    assert first["assistant_message"]["content"] == "Fake reply to: What is machine learning?"
    second = await factories.chat(
        client, owner, project["id"], "Explain neural networks", session_id=first["session_id"]
    )
    assert second["session_id"] == first["session_id"]
