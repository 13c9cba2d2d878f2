from __future__ import annotations

import uuid

import httpx
import pytest

from tests import factories


async def test_sessions_list_get_rename_delete(client: httpx.AsyncClient) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    older = (await factories.chat(client, owner, pid, "first session"))["session_id"]
    newer = (await factories.chat(client, owner, pid, "second session"))["session_id"]

    listing = (await client.get(f"/projects/{pid}/sessions", headers=owner.headers)).json()
    assert [s["id"] for s in listing["items"]] == [newer, older]
    # Activity moves a session to the top.
    await factories.chat(client, owner, pid, "again", session_id=older)
    listing = (await client.get(f"/projects/{pid}/sessions", headers=owner.headers)).json()
    assert [s["id"] for s in listing["items"]] == [older, newer]
    assert listing["items"][0]["message_count"] == 4

    url = f"/sessions/{older}"
    renamed = await client.patch(url, json={"title": "  Orders  "}, headers=owner.headers)
    assert renamed.status_code == 200 and renamed.json()["title"] == "Orders"
    assert (await client.get(url, headers=owner.headers)).json()["title"] == "Orders"

    assert (await client.delete(url, headers=owner.headers)).status_code == 204
    assert (await client.get(url, headers=owner.headers)).status_code == 404
    messages = await client.get(f"{url}/messages", headers=owner.headers)
    assert messages.status_code == 404
    assert messages.json()["error"]["code"] == "session_not_found"


async def test_long_first_message_gives_a_short_title(client: httpx.AsyncClient) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    text = "Please help me understand " + "very " * 40 + "long things\nsecond line"
    sid = (await factories.chat(client, owner, pid, text))["session_id"]
    title = (await client.get(f"/sessions/{sid}", headers=owner.headers)).json()["title"]
    assert len(title) <= 80 and title.endswith("…") and "\n" not in title


@pytest.mark.parametrize("body", [{}, {"title": ""}, {"title": "x" * 201}, {"title": None}])
async def test_rename_rejects_bad_titles(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    sid = (await factories.chat(client, owner, pid, "hi"))["session_id"]
    response = await client.patch(f"/sessions/{sid}", json=body, headers=owner.headers)
    assert response.status_code == 422


async def test_messages_are_oldest_first_with_cursor_pages(client: httpx.AsyncClient) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    sid = (await factories.chat(client, owner, pid, "m0"))["session_id"]
    for i in range(1, 4):
        await factories.chat(client, owner, pid, f"m{i}", session_id=sid)
    contents: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (
            await client.get(f"/sessions/{sid}/messages", params=params, headers=owner.headers)
        ).json()
        pages += 1
        contents += [m["content"] for m in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert pages == 3
    assert contents == [text for i in range(4) for text in (f"m{i}", f"Fake reply to: m{i}")]


async def test_deleting_a_project_deletes_its_sessions(client: httpx.AsyncClient) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    sid = (await factories.chat(client, owner, pid, "hi"))["session_id"]
    assert (await client.delete(f"/projects/{pid}", headers=owner.headers)).status_code == 204
    assert (await client.get(f"/sessions/{sid}", headers=owner.headers)).status_code == 404
    assert (await client.get(f"/projects/{pid}/sessions", headers=owner.headers)).status_code == 404


async def test_sessions_are_isolated_between_tenants(client: httpx.AsyncClient) -> None:
    alice = await factories.account(client)
    bob = await factories.account(client)
    pid = (await factories.create_project(client, alice))["id"]
    sid = (await factories.chat(client, alice, pid, "secret"))["session_id"]
    calls = [
        ("GET", f"/projects/{pid}/sessions", {}),
        ("GET", f"/sessions/{sid}", {}),
        ("PATCH", f"/sessions/{sid}", {"json": {"title": "mine"}}),
        ("GET", f"/sessions/{sid}/messages", {}),
        ("DELETE", f"/sessions/{sid}", {}),
    ]
    for method, url, kwargs in calls:
        response = await client.request(method, url, headers=bob.headers, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 404, (method, url)
        assert "secret" not in response.text
    still = await client.get(f"/sessions/{sid}/messages", headers=alice.headers)
    assert still.json()["items"][0]["content"] == "secret"


async def test_unknown_session_ids(client: httpx.AsyncClient) -> None:
    owner = await factories.account(client)
    assert (await client.get(f"/sessions/{uuid.uuid4()}", headers=owner.headers)).status_code == 404
    assert (await client.get("/sessions/123", headers=owner.headers)).status_code == 422
    bad_cursor = await client.get(
        f"/sessions/{uuid.uuid4()}/messages", params={"cursor": "!!"}, headers=owner.headers
    )
    assert bad_cursor.status_code in (404, 422)
