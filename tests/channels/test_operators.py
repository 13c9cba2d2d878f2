"""The operator API and its roles: agents claim, reply to and release conversations, but do
not connect channels; another workspace's conversations and channels are not found."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import update

from app.channels import __main__ as channels_cli
from app.channels.__main__ import rotate_keys
from app.channels.secrets import SecretBox, SecretsKeyError
from app.core.types import utcnow
from app.models import Channel, Conversation
from tests import factories
from tests.channels.helpers import (
    fake_whatsapp,
    meta_channel,
    only_conversation,
    say,
    whapi_channel,
)
from tests.waiting import until


async def _team(client: httpx.AsyncClient) -> tuple[factories.Account, str, str]:
    owner = await factories.account(client)
    team = (await factories.create_workspace(client, owner))["id"]
    owner = factories.in_workspace(owner, team)
    pid = (await factories.create_project(client, owner))["id"]
    return owner, team, pid


async def _post(
    client: httpx.AsyncClient, who: factories.Account, path: str, **body: object
) -> httpx.Response:
    return await client.post(path, json=body or None, headers=who.headers)


async def test_agents_claim_reply_and_release_but_cannot_take_or_give_away_others(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner, team, pid = await _team(client)
    agent = await factories.member(client, owner, team, "agent")
    other = await factories.member(client, owner, team, "agent")
    viewer = await factories.member(client, owner, team, "viewer")
    async with fake_whatsapp() as (fake, url):
        line = await meta_channel(client, owner, pid, url)
        await say(client, line, "6281300001", "Halo")
        await until(lambda: fake.sends, lambda s: len(s) == 1, what="the bot's reply")
        cid = (await only_conversation(client, agent))["id"]

        assert (await client.get("/conversations", headers=viewer.headers)).status_code == 403
        claimed = await _post(client, agent, f"/conversations/{cid}/assign")
        assert claimed.status_code == 200, claimed.text
        assert claimed.json()["assignee_user_id"] == agent.user_id

        taken = await _post(client, other, f"/conversations/{cid}/assign")
        assert (taken.status_code, taken.json()["error"]["code"]) == (409, "already_assigned")
        forced = await _post(client, other, f"/conversations/{cid}/assign", force=True)
        assert (forced.status_code, forced.json()["error"]["code"]) == (403, "insufficient_role")
        give = await _post(client, agent, f"/conversations/{cid}/assign", assignee_id=other.user_id)
        assert give.status_code == 403
        theirs = await _post(client, other, f"/conversations/{cid}/messages", text="Saya ambil")
        assert (theirs.status_code, theirs.json()["error"]["code"]) == (
            403,
            "assigned_to_someone_else",
        )

        reply = await _post(
            client, agent, f"/conversations/{cid}/messages", text="Halo, saya Rina."
        )
        assert reply.status_code == 202, reply.text
        assert reply.json()["message"]["author"] == {"type": "operator", "user_id": agent.user_id}
        await until(lambda: fake.sends, lambda s: len(s) == 2, what="the agent's message")

        released = await _post(client, agent, f"/conversations/{cid}/release")
        assert (released.status_code, released.json()["mode"]) == (200, "bot")
        again = await _post(client, agent, f"/conversations/{cid}/release")
        assert (again.status_code, again.json()["error"]["code"]) == (409, "invalid_transition")

        moved = await _post(
            client, owner, f"/conversations/{cid}/assign", assignee_id=other.user_id
        )
        assert moved.json()["assignee_user_id"] == other.user_id
        forced = await _post(
            client, owner, f"/conversations/{cid}/assign", assignee_id=agent.user_id, force=True
        )
        assert forced.json()["assignee_user_id"] == agent.user_id
        stranger = await _post(
            client, owner, f"/conversations/{cid}/assign", assignee_id=viewer.user_id, force=True
        )
        assert stranger.status_code == 422

        channel = await client.post(
            f"/projects/{pid}/channels",
            json={"provider": "whapi", "name": "x", "token": "t"},
            headers=agent.headers,
        )
        assert (channel.status_code, channel.json()["error"]["code"]) == (403, "insufficient_role")
        assert (await client.get(f"/channels/{line.id}", headers=agent.headers)).status_code == 200
        patch = await client.patch(
            f"/channels/{line.id}", json={"name": "y"}, headers=agent.headers
        )
        assert patch.status_code == 403


async def test_the_queue_is_ordered_by_waiting_time_and_filters_by_assignee(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner, team, pid = await _team(client)
    agent = await factories.member(client, owner, team, "agent")
    async with fake_whatsapp() as (fake, url):
        line = await meta_channel(client, owner, pid, url)
        for count, number in enumerate(("6281300011", "6281300012", "6281300013"), start=1):
            await say(client, line, number, "Saya mau bicara dengan petugas")
            # one after another: the queue's order is the order they were handed off
            await until(lambda c=count: len(fake.sends) == c, bool, what="the handoff message")
    queue = (await client.get("/conversations?status=pending_human", headers=agent.headers)).json()[
        "items"
    ]
    assert [c["contact"]["id"] for c in queue] == ["6281300011", "6281300012", "6281300013"]
    await _post(client, agent, f"/conversations/{queue[1]['id']}/assign")
    mine = (await client.get("/conversations?assignee=me", headers=agent.headers)).json()["items"]
    assert [c["contact"]["id"] for c in mine] == ["6281300012"]
    nobody = (
        await client.get("/conversations?assignee=none&status=pending_human", headers=agent.headers)
    ).json()
    assert [c["contact"]["id"] for c in nobody["items"]] == ["6281300011", "6281300013"]
    bad = await client.get("/conversations?assignee=someone", headers=agent.headers)
    assert bad.status_code == 422
    query = {"mode": "human", "project_id": pid, "channel_id": line.id, "assignee": agent.user_id}
    theirs = (await client.get("/conversations", params=query, headers=agent.headers)).json()
    assert [c["contact"]["id"] for c in theirs["items"]] == ["6281300012"]
    bots = (await client.get("/conversations?mode=bot", headers=agent.headers)).json()["items"]
    assert bots == []


async def test_an_operator_reply_is_sent_once_per_idempotency_key(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner, _, pid = await _team(client)
    async with fake_whatsapp() as (fake, url):
        line = await meta_channel(client, owner, pid, url)
        await say(client, line, "6281300021", "Halo")
        await until(lambda: fake.sends, lambda s: len(s) == 1, what="the bot's reply")
        cid = (await only_conversation(client, owner))["id"]
        headers = {**owner.headers, "Idempotency-Key": "reply-1"}
        first = await client.post(
            f"/conversations/{cid}/messages", json={"text": "Satu kali"}, headers=headers
        )
        second = await client.post(
            f"/conversations/{cid}/messages", json={"text": "Satu kali"}, headers=headers
        )
        assert (first.status_code, second.status_code) == (202, 202)
        assert second.headers["idempotent-replayed"] == "true"
        assert second.json()["message"]["id"] == first.json()["message"]["id"]
        await until(lambda: fake.sends, lambda s: len(s) == 2, what="the operator's send")
    assert fake.texts_to("6281300021").count("Satu kali") == 1


async def test_free_text_outside_the_24_hour_window_is_refused_up_front(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner, _, pid = await _team(client)
    async with fake_whatsapp() as (fake, url):
        line = await meta_channel(client, owner, pid, url)
        await say(client, line, "6281300031", "Halo")
        await until(lambda: fake.sends, lambda s: len(s) == 1, what="the bot's reply")
        cid = (await only_conversation(client, owner))["id"]
        async with app.state.sessionmaker() as db, db.begin():
            await db.execute(
                update(Conversation).values(last_inbound_at=utcnow() - timedelta(hours=25))
            )
        conversation = (await client.get(f"/conversations/{cid}", headers=owner.headers)).json()
        assert conversation["can_reply"] is False
        refused = await _post(
            client, owner, f"/conversations/{cid}/messages", text="Masih di sana?"
        )
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "outside_customer_service_window"
        assert refused.json()["error"]["details"][0]["window_expired_at"]
    assert len(fake.sends) == 1
    assert (await only_conversation(client, owner))["mode"] == "bot"  # nothing changed


async def test_another_workspace_s_conversations_and_channels_are_not_found(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner, _, pid = await _team(client)
    stranger = await factories.account(client)
    line = await meta_channel(client, owner, pid, "http://127.0.0.1:9")
    await say(client, line, "6281300041", "Halo")
    cid = (await only_conversation(client, owner))["id"]
    for method, path in (
        ("GET", f"/conversations/{cid}"),
        ("GET", f"/conversations/{cid}/messages"),
        ("POST", f"/conversations/{cid}/assign"),
        ("POST", f"/conversations/{cid}/release"),
        ("POST", f"/conversations/{cid}/messages"),
        ("GET", f"/channels/{line.id}"),
        ("PATCH", f"/channels/{line.id}"),
        ("DELETE", f"/channels/{line.id}"),
        ("POST", f"/channels/{line.id}/rotate-secret"),
        ("GET", f"/projects/{pid}/channels"),
    ):
        body = {"text": "x"} if path.endswith("/messages") and method == "POST" else {}
        response = await client.request(method, path, json=body, headers=stranger.headers)
        assert response.status_code == 404, (method, path, response.text)
    assert (await client.get("/conversations", headers=stranger.headers)).json()["items"] == []


async def test_channel_secrets_are_write_only_encrypted_and_rotatable(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner, _, pid = await _team(client)
    line = await meta_channel(client, owner, pid, "http://127.0.0.1:9")
    shown = await client.get(f"/channels/{line.id}", headers=owner.headers)
    text = shown.text
    for secret in ("EAAG-test-token", "meta-app-secret", line.verify_token):
        assert secret not in text
    assert shown.json()["has_access_token"] is True
    async with app.state.sessionmaker() as db:
        row = await db.get(Channel, uuid.UUID(line.id))
        assert row is not None
        assert "EAAG" not in row.access_token_enc and row.app_secret_enc is not None
        assert line.verify_token not in (row.verify_token_hash or "")
    rotated = await client.post(f"/channels/{line.id}/rotate-secret", headers=owner.headers)
    new_token = rotated.json()["verify_token"]
    assert new_token and new_token != line.verify_token

    def handshake(token: str) -> dict[str, str]:
        return {"hub.mode": "subscribe", "hub.challenge": "42", "hub.verify_token": token}

    old = await client.get(f"/webhooks/meta/{line.id}", params=handshake(line.verify_token))
    new = await client.get(f"/webhooks/meta/{line.id}", params=handshake(new_token))
    assert (old.status_code, new.status_code, new.text) == (403, 200, "42")
    duplicate = await client.post(
        f"/projects/{pid}/channels",
        json={
            "provider": "meta_cloud",
            "name": "again",
            "phone_number_id": line.phone_number_id,
            "access_token": "t",
            "app_secret": "s",
        },
        headers=owner.headers,
    )
    assert (duplicate.status_code, duplicate.json()["error"]["code"]) == (409, "channel_exists")
    private = await client.post(
        f"/projects/{pid}/channels",
        json={
            "provider": "whapi",
            "name": "x",
            "token": "t",
            "base_url": "http://169.254.169.254/",
        },
        headers=owner.headers,
    )
    assert private.status_code in (201, 422)  # private networks are allowed in the tests' settings
    whapi = await whapi_channel(client, owner, pid, "http://127.0.0.1:9")
    assert whapi["webhook_secret"].startswith("whs_") and whapi["verify_token"] is None


async def test_a_channel_base_url_goes_through_the_outbound_guard(
    client: httpx.AsyncClient, make_client: Callable[..., Any]
) -> None:
    guarded = await make_client(OUTBOUND_ALLOW_PRIVATE_NETWORKS=False)
    owner, _, pid = await _team(guarded)
    for url in ("http://169.254.169.254/", "http://127.0.0.1:9200"):
        response = await guarded.post(
            f"/projects/{pid}/channels",
            json={"provider": "whapi", "name": "x", "token": "t", "base_url": url},
            headers=owner.headers,
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "url_not_allowed"


async def test_rotating_the_secrets_key_re_encrypts_every_channel(
    app: FastAPI, client: httpx.AsyncClient, settings: Any
) -> None:
    owner, _, pid = await _team(client)
    line = await meta_channel(client, owner, pid, "http://127.0.0.1:9")
    old = settings.CHANNEL_SECRETS_KEY.get_secret_value()
    new = Fernet.generate_key().decode()
    rotated = await rotate_keys(app.state.sessionmaker, SecretBox(SecretStr(f"{new},{old}")))
    assert rotated == 1
    only_new = SecretBox(SecretStr(new))
    async with app.state.sessionmaker() as db:
        row = await db.get(Channel, uuid.UUID(line.id))
    assert row is not None and row.app_secret_enc is not None
    assert only_new.decrypt(row.access_token_enc) == "EAAG-test-token"
    assert only_new.decrypt(row.app_secret_enc) == "meta-app-secret-0123456789abcdef"
    with pytest.raises(SecretsKeyError):
        SecretBox(SecretStr(old)).decrypt(row.access_token_enc)
    with pytest.raises(SecretsKeyError):
        SecretBox(SecretStr("not-a-fernet-key"))


async def test_pause_resume_resolve_and_reopen(app: FastAPI, client: httpx.AsyncClient) -> None:
    owner, _, pid = await _team(client)
    async with fake_whatsapp() as (fake, url):
        line = await meta_channel(client, owner, pid, url)
        await say(client, line, "6281300051", "Halo")
        await until(lambda: fake.sends, lambda s: len(s) == 1, what="the bot's reply")
        cid = (await only_conversation(client, owner))["id"]
        paused = await _post(client, owner, f"/conversations/{cid}/pause")
        assert paused.json()["mode"] == "paused"
        await say(client, line, "6281300051", "Masih ada?")
        resumed = await _post(client, owner, f"/conversations/{cid}/resume")
        assert resumed.json()["mode"] == "bot"
        assert (await _post(client, owner, f"/conversations/{cid}/resume")).status_code == 409
        resolved = await _post(client, owner, f"/conversations/{cid}/resolve")
        assert resolved.json()["status"] == "resolved"
        refused = await _post(client, owner, f"/conversations/{cid}/pause")
        assert refused.json()["error"]["code"] == "invalid_transition"
        await say(client, line, "6281300051", "Saya kembali")  # the contact reopens it
        await until(lambda: fake.sends, lambda s: len(s) == 2, what="the bot after reopening")
        again = (await client.get(f"/conversations/{cid}", headers=owner.headers)).json()
        assert (again["mode"], again["status"]) == ("bot", "open")
        assert (await _post(client, owner, f"/conversations/{cid}/reopen")).status_code == 409
        await _post(client, owner, f"/conversations/{cid}/resolve")
        reopened = await _post(client, owner, f"/conversations/{cid}/reopen")
        assert reopened.json()["status"] == "open"
    assert len(fake.sends) == 2  # nothing was answered while paused


async def test_the_rotate_keys_command_runs_against_the_configured_database(
    app: FastAPI,
    client: httpx.AsyncClient,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    owner, _, pid = await _team(client)
    await meta_channel(client, owner, pid, "http://127.0.0.1:9")
    monkeypatch.setattr(channels_cli, "get_settings", lambda: settings)
    assert await channels_cli.main(["rotate-keys"]) == 0
    assert "re-encrypted the secrets of 1 channels" in capsys.readouterr().out
