from __future__ import annotations

import uuid

import httpx
import pytest

from tests import factories


async def test_project_crud(client: httpx.AsyncClient) -> None:
    owner = await factories.account(client)
    project = await factories.create_project(client, owner)
    assert project["name"] == "My Chatbot"
    assert project["description"] == "A helpful assistant"
    assert project["provider"] is None and project["model"] is None
    assert project["temperature"] is None and project["max_tokens"] is None
    assert project["history_window"] == 20

    url = f"/projects/{project['id']}"
    assert (await client.get(url, headers=owner.headers)).json() == project

    patched = await client.patch(
        url,
        json={"temperature": 0.2, "model": "llama3", "history_window": 4},
        headers=owner.headers,
    )
    assert patched.status_code == 200
    body = patched.json()
    assert (body["temperature"], body["model"], body["history_window"]) == (0.2, "llama3", 4)
    assert body["name"] == "My Chatbot"
    assert body["updated_at"] >= project["updated_at"]

    reset = await client.patch(url, json={"model": None}, headers=owner.headers)
    assert reset.json()["model"] is None and reset.json()["temperature"] == 0.2

    assert (await client.delete(url, headers=owner.headers)).status_code == 204
    gone = await client.get(url, headers=owner.headers)
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "project_not_found"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 201},
        {"name": "ok", "temperature": 2.5},
        {"name": "ok", "temperature": -0.1},
        {"name": "ok", "max_tokens": 0},
        {"name": "ok", "history_window": 201},
        {"name": "ok", "history_window": -1},
        {"name": "ok", "provider": "skynet"},
        {"name": "ok", "temprature": 0.5},
        {"name": ["list"]},
    ],
)
async def test_create_rejects_bad_input(client: httpx.AsyncClient, body: dict[str, object]) -> None:
    owner = await factories.account(client)
    response = await client.post("/projects", json=body, headers=owner.headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"


async def test_patch_rejects_nulls_for_required_fields(client: httpx.AsyncClient) -> None:
    owner = await factories.account(client)
    project = await factories.create_project(client, owner)
    for body in ({"name": None}, {"history_window": None}, {"temperature": 3}):
        response = await client.patch(
            f"/projects/{project['id']}", json=body, headers=owner.headers
        )
        assert response.status_code == 422, body


async def test_list_paginates_newest_first(client: httpx.AsyncClient) -> None:
    owner = await factories.account(client)
    created = [
        (await factories.create_project(client, owner, name=f"p{i}"))["id"] for i in range(5)
    ]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/projects", params=params, headers=owner.headers)).json()
        assert len(page["items"]) <= 2
        seen += [p["id"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(created))


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 101}, {"limit": "x"}, {"cursor": "garbage!"}]
)
async def test_list_rejects_bad_paging(
    client: httpx.AsyncClient, params: dict[str, object]
) -> None:
    owner = await factories.account(client)
    response = await client.get("/projects", params=params, headers=owner.headers)
    assert response.status_code == 422


async def test_projects_are_isolated_between_tenants(client: httpx.AsyncClient) -> None:
    alice = await factories.account(client)
    bob = await factories.account(client)
    project = await factories.create_project(client, alice)
    url = f"/projects/{project['id']}"
    for method, kwargs in (
        ("GET", {}),
        ("PATCH", {"json": {"name": "stolen"}}),
        ("DELETE", {}),
    ):
        response = await client.request(method, url, headers=bob.headers, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 404, method
        assert response.json()["error"]["code"] == "project_not_found"
    listing = await client.get("/projects", headers=bob.headers)
    assert listing.json()["items"] == []
    # Alice's project is untouched.
    assert (await client.get(url, headers=alice.headers)).json()["name"] == "My Chatbot"


async def test_unknown_and_malformed_ids(client: httpx.AsyncClient) -> None:
    owner = await factories.account(client)
    missing = await client.get(f"/projects/{uuid.uuid4()}", headers=owner.headers)
    assert missing.status_code == 404
    malformed = await client.get("/projects/not-a-uuid", headers=owner.headers)
    assert malformed.status_code == 422


async def test_routes_require_auth(client: httpx.AsyncClient) -> None:
    for method, url in (
        ("GET", "/projects"),
        ("POST", "/projects"),
        ("GET", f"/projects/{uuid.uuid4()}"),
    ):
        response = await client.request(method, url)
        assert response.status_code == 401
