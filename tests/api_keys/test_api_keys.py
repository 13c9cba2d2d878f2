"""Project API keys: issued once and stored hashed, scoped, revocable, per end user."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select, text, update

from app.core.db import create_engine
from app.models import ApiKey
from tests import factories
from tests.conftest import make_settings

_key = factories.api_key
_as = factories.key_headers


async def test_key_is_shown_once_and_stored_hashed(
    client: httpx.AsyncClient, database_url: str
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    created = await _key(client, owner, pid)
    secret = created["key"]
    assert secret.startswith("cbp_") and len(secret) >= 40
    assert created["prefix"] == secret[:12] and created["scopes"] == ["chat", "sessions:read"]

    listed = (await client.get(f"/projects/{pid}/api-keys", headers=owner.headers)).json()
    assert [k["id"] for k in listed["items"]] == [created["id"]]
    assert "key" not in listed["items"][0] and secret not in str(listed)

    engine = create_engine(make_settings(database_url))
    try:
        async with engine.connect() as connection:
            rows = (await connection.execute(select(ApiKey))).all()
            dump = (await connection.execute(text("SELECT * FROM api_keys"))).all()
    finally:
        await engine.dispose()
    assert len(rows) == 1 and secret not in str(dump) and secret[12:] not in str(dump)


async def test_a_key_chats_and_reads_its_own_end_users_sessions(
    client: httpx.AsyncClient,
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    secret = (await _key(client, owner, pid))["key"]
    alice, bob = _as(secret, "alice"), {"X-API-Key": secret, "X-End-User-ID": "bob"}

    response = await client.post("/chat", json={"project_id": pid, "message": "hi"}, headers=alice)
    assert response.status_code == 200, response.text
    sid = response.json()["session_id"]
    # Alice continues and reads it; Bob cannot see it at all.
    again = await client.post(
        "/chat", json={"project_id": pid, "message": "more", "session_id": sid}, headers=alice
    )
    assert again.status_code == 200
    assert (await client.get(f"/sessions/{sid}/messages", headers=alice)).status_code == 200
    for method, url, body in [
        ("GET", f"/sessions/{sid}", None),
        ("GET", f"/sessions/{sid}/messages", None),
        ("POST", "/chat", {"project_id": pid, "message": "x", "session_id": sid}),
    ]:
        response = await client.request(method, url, json=body, headers=bob)
        assert response.status_code == 404, (method, url)
    listed = await client.get(f"/projects/{pid}/sessions", headers=bob)
    assert listed.status_code == 200 and listed.json()["items"] == []
    listed = await client.get(f"/projects/{pid}/sessions", headers=alice)
    assert [s["id"] for s in listed.json()["items"]] == [sid]
    assert listed.json()["items"][0]["end_user_id"] == "alice"

    # The owner sees every end user's sessions and can filter.
    mine = await client.get(
        f"/projects/{pid}/sessions", params={"end_user_id": "alice"}, headers=owner.headers
    )
    assert [s["id"] for s in mine.json()["items"]] == [sid]
    none = await client.get(
        f"/projects/{pid}/sessions", params={"end_user_id": "bob"}, headers=owner.headers
    )
    assert none.json()["items"] == []


async def test_end_user_in_the_body_must_match_the_header(client: httpx.AsyncClient) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    secret = (await _key(client, owner, pid))["key"]
    body = {"project_id": pid, "message": "hi", "end_user_id": "carol"}
    response = await client.post("/chat", json=body, headers=_as(secret))
    assert response.status_code == 200
    sid = response.json()["session_id"]
    session = await client.get(f"/sessions/{sid}", headers=_as(secret, "carol"))
    assert session.json()["end_user_id"] == "carol"
    response = await client.post("/chat", json=body, headers=_as(secret, "dave"))
    assert response.status_code == 422


async def test_scopes_are_enforced_within_the_project(client: httpx.AsyncClient) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    chat_only = (await _key(client, owner, pid, scopes=["chat"]))["key"]
    reader = (await _key(client, owner, pid, scopes=["sessions:read"]))["key"]
    response = await client.post(
        "/chat", json={"project_id": pid, "message": "hi"}, headers=_as(chat_only, "u")
    )
    sid = response.json()["session_id"]
    denied = await client.get(f"/sessions/{sid}", headers=_as(chat_only, "u"))
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "insufficient_scope"
    denied = await client.post(
        "/chat", json={"project_id": pid, "message": "hi"}, headers=_as(reader, "u")
    )
    assert denied.status_code == 403
    assert (await client.get(f"/sessions/{sid}", headers=_as(reader, "u"))).status_code == 200
    denied = await client.delete(f"/sessions/{sid}", headers=_as(reader, "u"))
    assert denied.status_code == 403


async def test_keys_never_reach_management_routes(client: httpx.AsyncClient) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    secret = (await _key(client, owner, pid, scopes=["chat", "sessions:read", "sessions:write"]))[
        "key"
    ]
    for method, url in [
        ("GET", "/users/me"),
        ("GET", "/projects"),
        ("GET", f"/projects/{pid}"),
        ("DELETE", f"/projects/{pid}"),
        ("GET", f"/projects/{pid}/prompts"),
        ("GET", f"/projects/{pid}/api-keys"),
        ("POST", f"/projects/{pid}/api-keys"),
        ("GET", f"/projects/{pid}/usage"),
    ]:
        response = await client.request(method, url, headers=_as(secret))
        assert response.status_code == 403, (method, url, response.text)
        assert response.json()["error"]["code"] == "api_key_not_allowed"
    assert (await client.get(f"/projects/{pid}", headers=owner.headers)).status_code == 200


async def test_a_key_reaches_only_its_project(client: httpx.AsyncClient) -> None:
    owner = await factories.account(client)
    mine = (await factories.create_project(client, owner))["id"]
    other = (await factories.create_project(client, owner))["id"]
    other_sid = (await factories.chat(client, owner, other, "private"))["session_id"]
    secret = (await _key(client, owner, mine))["key"]
    headers = _as(secret)
    response = await client.post(
        "/chat", json={"project_id": other, "message": "hi"}, headers=headers
    )
    assert response.status_code == 404
    assert (await client.get(f"/projects/{other}/sessions", headers=headers)).status_code == 404
    assert (await client.get(f"/sessions/{other_sid}", headers=headers)).status_code == 404
    # The owner's own (end-user-less) sessions of the key's project are not the key's either.
    own_sid = (await factories.chat(client, owner, mine, "owner's"))["session_id"]
    assert (await client.get(f"/sessions/{own_sid}", headers=_as(secret, "x"))).status_code == 404


async def test_revoked_and_expired_keys_are_rejected_at_once(
    client: httpx.AsyncClient, database_url: str
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    created = await _key(client, owner, pid)
    body = {"project_id": pid, "message": "hi"}
    assert (await client.post("/chat", json=body, headers=_as(created["key"]))).status_code == 200
    listed = (await client.get(f"/projects/{pid}/api-keys", headers=owner.headers)).json()
    assert listed["items"][0]["last_used_at"] is not None
    response = await client.delete(
        f"/projects/{pid}/api-keys/{created['id']}", headers=owner.headers
    )
    assert response.status_code == 204
    rejected = await client.post("/chat", json=body, headers=_as(created["key"]))
    assert rejected.status_code == 401 and rejected.json()["error"]["code"] == "invalid_api_key"
    assert rejected.headers["www-authenticate"] == "Bearer"
    again = await client.delete(f"/projects/{pid}/api-keys/{created['id']}", headers=owner.headers)
    assert again.status_code == 404

    expiring = await _key(
        client, owner, pid, expires_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat()
    )
    engine = create_engine(make_settings(database_url))
    try:
        async with engine.begin() as connection:
            await connection.execute(
                update(ApiKey)
                .where(ApiKey.id == uuid.UUID(expiring["id"]))
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
    finally:
        await engine.dispose()
    rejected = await client.post("/chat", json=body, headers=_as(expiring["key"]))
    assert rejected.status_code == 401
    bogus = await client.post("/chat", json=body, headers=_as("cbp_not-a-real-key"))
    assert bogus.status_code == 401


async def test_create_rejects_bad_bodies(client: httpx.AsyncClient) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    for body in [
        {},
        {"name": ""},
        {"name": "x", "scopes": ["admin"]},
        {"name": "x", "scopes": []},
        {"name": "x", "expires_at": past},
        {"name": "x", "key_hash": "abc"},
    ]:
        response = await client.post(f"/projects/{pid}/api-keys", json=body, headers=owner.headers)
        assert response.status_code == 422, body


async def test_api_key_routes_are_isolated_between_tenants(client: httpx.AsyncClient) -> None:
    alice = await factories.account(client)
    bob = await factories.account(client)
    pid = (await factories.create_project(client, alice))["id"]
    created = await _key(client, alice, pid)
    for method, url, body in [
        ("POST", f"/projects/{pid}/api-keys", {"name": "mine"}),
        ("GET", f"/projects/{pid}/api-keys", None),
        ("DELETE", f"/projects/{pid}/api-keys/{created['id']}", None),
    ]:
        response = await client.request(method, url, json=body, headers=bob.headers)
        assert response.status_code == 404, (method, url)
        assert created["prefix"] not in response.text
    # A key id under another of one's own projects is 404 too.
    bob_pid = (await factories.create_project(client, bob))["id"]
    response = await client.delete(
        f"/projects/{bob_pid}/api-keys/{created['id']}", headers=bob.headers
    )
    assert response.status_code == 404
    still = await client.post(
        "/chat", json={"project_id": pid, "message": "hi"}, headers=_as(created["key"])
    )
    assert still.status_code == 200
