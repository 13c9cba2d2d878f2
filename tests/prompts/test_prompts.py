from __future__ import annotations

import uuid

import httpx
import pytest

from tests import factories


async def test_prompt_crud_and_order(client: httpx.AsyncClient) -> None:
    owner = await factories.account(client)
    project = await factories.create_project(client, owner)
    pid = project["id"]
    first = await factories.create_prompt(client, owner, pid, content="First", name="intro")
    second = await factories.create_prompt(client, owner, pid, content="Second")
    early = await factories.create_prompt(client, owner, pid, content="Zeroth", position=0)
    assert (first["position"], second["position"]) == (0, 1)
    assert first["project_id"] == pid and first["is_active"] is True

    listing = await client.get(f"/projects/{pid}/prompts", headers=owner.headers)
    assert [p["content"] for p in listing.json()["items"]] == ["First", "Zeroth", "Second"]
    assert listing.json()["next_cursor"] is None
    del early

    url = f"/projects/{pid}/prompts/{first['id']}"
    assert (await client.get(url, headers=owner.headers)).json() == first
    patched = await client.patch(
        url, json={"is_active": False, "position": 5}, headers=owner.headers
    )
    assert patched.status_code == 200
    assert (patched.json()["is_active"], patched.json()["position"]) == (False, 5)
    assert patched.json()["content"] == "First"

    assert (await client.delete(url, headers=owner.headers)).status_code == 204
    gone = await client.get(url, headers=owner.headers)
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "prompt_not_found"


async def test_prompts_paginate(client: httpx.AsyncClient) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    for i in range(3):
        await factories.create_prompt(client, owner, pid, content=f"p{i}")
    page = (
        await client.get(f"/projects/{pid}/prompts", params={"limit": 2}, headers=owner.headers)
    ).json()
    rest = (
        await client.get(
            f"/projects/{pid}/prompts",
            params={"limit": 2, "cursor": page["next_cursor"]},
            headers=owner.headers,
        )
    ).json()
    assert [p["content"] for p in page["items"] + rest["items"]] == ["p0", "p1", "p2"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"content": ""},
        {"content": "  "},
        {"content": "x" * 20001},
        {"content": "ok", "position": -1},
    ],
)
async def test_create_rejects_bad_input(client: httpx.AsyncClient, body: dict[str, object]) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    response = await client.post(f"/projects/{pid}/prompts", json=body, headers=owner.headers)
    assert response.status_code == 422


async def test_patch_rejects_null_content(client: httpx.AsyncClient) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    prompt = await factories.create_prompt(client, owner, pid)
    response = await client.patch(
        f"/projects/{pid}/prompts/{prompt['id']}", json={"content": None}, headers=owner.headers
    )
    assert response.status_code == 422


async def test_prompts_are_isolated_between_tenants(client: httpx.AsyncClient) -> None:
    alice = await factories.account(client)
    bob = await factories.account(client)
    alice_project = (await factories.create_project(client, alice))["id"]
    bob_project = (await factories.create_project(client, bob))["id"]
    prompt = await factories.create_prompt(client, alice, alice_project)

    # Bob, through Alice's project id: every route answers 404.
    base = f"/projects/{alice_project}/prompts"
    item = f"{base}/{prompt['id']}"
    calls = [
        ("GET", base, {}),
        ("POST", base, {"json": {"content": "x"}}),
        ("GET", item, {}),
        ("PATCH", item, {"json": {"content": "x"}}),
        ("DELETE", item, {}),
        # Alice's prompt id under Bob's own project.
        ("GET", f"/projects/{bob_project}/prompts/{prompt['id']}", {}),
        ("PATCH", f"/projects/{bob_project}/prompts/{prompt['id']}", {"json": {"content": "x"}}),
        ("DELETE", f"/projects/{bob_project}/prompts/{prompt['id']}", {}),
    ]
    for method, url, kwargs in calls:
        response = await client.request(method, url, headers=bob.headers, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 404, (method, url)
    assert (await client.get(item, headers=alice.headers)).json()["content"] == prompt["content"]


async def test_prompt_under_another_project_of_same_owner_is_404(
    client: httpx.AsyncClient,
) -> None:
    owner = await factories.account(client)
    one = (await factories.create_project(client, owner))["id"]
    two = (await factories.create_project(client, owner))["id"]
    prompt = await factories.create_prompt(client, owner, one)
    response = await client.get(f"/projects/{two}/prompts/{prompt['id']}", headers=owner.headers)
    assert response.status_code == 404
    missing = await client.get(f"/projects/{uuid.uuid4()}/prompts", headers=owner.headers)
    assert missing.json()["error"]["code"] == "project_not_found"


async def test_deleting_a_project_deletes_its_prompts(client: httpx.AsyncClient) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    prompt = await factories.create_prompt(client, owner, pid)
    await client.delete(f"/projects/{pid}", headers=owner.headers)
    response = await client.get(f"/projects/{pid}/prompts/{prompt['id']}", headers=owner.headers)
    assert response.status_code == 404
