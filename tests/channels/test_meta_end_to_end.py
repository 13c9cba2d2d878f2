"""A WhatsApp Cloud API channel end to end: a signed inbound message gets one bot reply sent to
the (fake) Graph API, stored, with its delivery status moved forward by status webhooks."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import FastAPI

from tests import factories
from tests.channels.helpers import (
    APP_SECRET,
    fake_whatsapp,
    messages,
    meta_channel,
    only_conversation,
    post_meta,
    say,
)
from tests.fake_openai import FakeOpenAI
from tests.fake_whatsapp import encode, meta_inbound, meta_status, sign
from tests.waiting import until


async def test_a_signed_message_gets_one_reply_whose_status_moves_forward(
    app: FastAPI, client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    async with fake_whatsapp() as (fake, url):
        line = await meta_channel(client, owner, pid, url)
        await say(client, line, "16505551234", "Does it come in another color?")

        await until(lambda: fake.sends, lambda sends: len(sends) == 1, what="the reply's send")
        send = fake.sends[0]
        assert send.to == "16505551234"
        assert send.text == "Fake reply to: Does it come in another color?"
        assert send.phone_number_id == line.phone_number_id
        assert send.authorization == "Bearer EAAG-test-token"
        conversation = await only_conversation(client, owner)
        assert (conversation["mode"], conversation["status"]) == ("bot", "open")
        health = (await client.get(f"/channels/{line.id}", headers=owner.headers)).json()
        assert health["last_webhook_at"] is not None
        assert conversation["contact"] == {"id": "16505551234", "name": "Sheena Nelson"}
        stored = await until(
            lambda: messages(client, owner, conversation["id"]),
            lambda items: len(items) == 2 and items[1]["delivery_status"] == "accepted",
            what="the reply accepted",
        )
        assert [(m["author"]["type"], m["content"]) for m in stored] == [
            ("contact", "Does it come in another color?"),
            ("bot", send.text),
        ]
        assert stored[0]["delivery_status"] == "received"

        # Meta may skip `delivered` and repeat `sent`: the status only moves forward.
        for status in ("sent", "read", "delivered", "sent"):
            response = await post_meta(
                client, line, meta_status(line.phone_number_id, send.id, status, send.to)
            )
            assert response.status_code == 200, response.text
        final = await messages(client, owner, conversation["id"])
        assert final[1]["delivery_status"] == "read"
    assert len(upstream.requests) == 1


async def test_the_same_webhook_five_times_at_once_stores_one_message_and_sends_one_reply(
    app: FastAPI, client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    async with fake_whatsapp() as (fake, url):
        line = await meta_channel(client, owner, pid, url)
        payload = meta_inbound(line.phone_number_id, "6281100001", "Halo, ada promo?", "wamid.DUP1")
        answers = await asyncio.gather(*(post_meta(client, line, payload) for _ in range(5)))
        assert [a.status_code for a in answers] == [200] * 5
        await until(lambda: fake.sends, lambda sends: len(sends) >= 1, what="the reply")
        await asyncio.sleep(0.5)  # time for a second reply, were there one
        # And again, later: Meta re-delivers for days.
        assert (await post_meta(client, line, payload)).status_code == 200
        await asyncio.sleep(0.3)
        conversation = await only_conversation(client, owner)
        stored = await messages(client, owner, conversation["id"])
    assert [m["author"]["type"] for m in stored] == ["contact", "bot"]
    assert len(fake.sends) == 1
    assert len(upstream.requests) == 1


async def test_a_bad_signature_is_401_and_stores_nothing(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    line = await meta_channel(client, owner, pid, "http://127.0.0.1:9")
    payload = meta_inbound(line.phone_number_id, "16505551234", "hi", "wamid.BAD1")
    wrong = await post_meta(client, line, payload, secret="not-the-app-secret")
    missing = await client.post(f"/webhooks/meta/{line.id}", content=encode(payload))
    body = encode(payload)
    tampered = await client.post(
        f"/webhooks/meta/{line.id}",
        content=body.replace(b"hi", b"ho"),
        headers={"x-hub-signature-256": sign(body, APP_SECRET)},
    )
    for response in (wrong, missing, tampered):
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "invalid_signature"
    assert await factories_conversations(client, owner) == []


async def factories_conversations(
    client: httpx.AsyncClient, owner: factories.Account
) -> list[object]:
    response = await client.get("/conversations", headers=owner.headers)
    return list(response.json()["items"])


async def test_the_signature_is_checked_over_the_raw_bytes_of_non_ascii_text(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    async with fake_whatsapp() as (fake, url):
        line = await meta_channel(client, owner, pid, url)
        text = "Terima kasih banyak 🙏 — café"
        await say(client, line, "6281100002", text)
        await until(lambda: fake.sends, lambda sends: len(sends) == 1, what="the reply")
    assert fake.sends[0].text == f"Fake reply to: {text}"


async def test_the_verification_handshake_answers_the_challenge_as_plain_text(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    line = await meta_channel(client, owner, pid, "http://127.0.0.1:9")
    ok = await client.get(
        f"/webhooks/meta/{line.id}",
        params={
            "hub.mode": "subscribe",
            "hub.challenge": "1158201444",
            "hub.verify_token": line.verify_token,
        },
    )
    assert ok.status_code == 200
    assert ok.text == "1158201444"
    assert ok.headers["content-type"].startswith("text/plain")
    wrong = await client.get(
        f"/webhooks/meta/{line.id}",
        params={"hub.mode": "subscribe", "hub.challenge": "1", "hub.verify_token": "meatyhamhock"},
    )
    assert wrong.status_code == 403
    assert wrong.json()["error"]["code"] == "invalid_verify_token"
    unknown = await client.get(
        "/webhooks/meta/00000000-0000-0000-0000-000000000000",
        params={
            "hub.mode": "subscribe",
            "hub.challenge": "1",
            "hub.verify_token": line.verify_token,
        },
    )
    assert unknown.status_code == 404


async def test_media_is_stored_as_a_placeholder_and_a_batch_stores_every_message(
    app: FastAPI, client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    async with fake_whatsapp() as (fake, url):
        line = await meta_channel(client, owner, pid, url)
        image = meta_inbound(
            line.phone_number_id, "6281100003", "Foto KTP saya", "wamid.IMG1", kind="image"
        )
        second = {
            "from": "6281100003",
            "id": "wamid.TXT2",
            "timestamp": "1749416390",
            "type": "text",
            "text": {"body": "Sudah saya kirim"},
        }
        image["entry"][0]["changes"][0]["value"]["messages"].append(second)
        assert (await post_meta(client, line, image)).status_code == 200
        conversation = await only_conversation(client, owner)
        await until(
            lambda: [s.text for s in fake.sends],
            lambda texts: "Fake reply to: Sudah saya kirim" in texts,
            what="the reply to the last message",
        )
        stored = await until(
            lambda: messages(client, owner, conversation["id"]),
            lambda m: m[-1]["author"]["type"] == "bot" and m[-1]["seq"] > 2,
            what="the reply",
        )
    contact = [m["content"] for m in stored if m["author"]["type"] == "contact"]
    assert contact == ["[image] Foto KTP saya", "Sudah saya kirim"]
    # One turn answers both, or each gets its own if the first was answered in between.
    assert "Fake reply to: Sudah saya kirim" in [s.text for s in fake.sends]


async def test_a_webhook_body_over_the_api_limit_is_accepted_on_the_webhook_route(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    line = await meta_channel(client, owner, pid, "http://127.0.0.1:9")
    payload = meta_inbound(
        line.phone_number_id, "6281100004", "x" * (2 * 1024 * 1024), "wamid.BIG1"
    )
    assert (await post_meta(client, line, payload)).status_code == 200
    big_chat = await client.post(
        "/chat",
        content=b'{"message": "' + b"x" * (2 * 1024 * 1024) + b'"}',
        headers={**owner.headers, "content-type": "application/json"},
    )
    assert big_chat.status_code == 413


async def test_a_contact_s_messages_are_stored_with_their_events_in_session_order(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """The webhook's own statements (app/channels/contact_message.py on Postgres, the ORM on
    SQLite) write what a chat turn's do: positions, session events, their data."""
    owner = await factories.account(client)
    project = await factories.create_project(client, owner, events_include_content=True)
    pid = project["id"]
    async with fake_whatsapp() as (fake, url):
        line = await meta_channel(client, owner, pid, url)
        await say(client, line, "6281200001", "Halo")
        await until(lambda: fake.sends, lambda sends: len(sends) == 1, what="the first reply")
        await say(client, line, "6281200001", "Ada promo?")
        await until(lambda: fake.sends, lambda sends: len(sends) == 2, what="the second reply")
        conversation = await only_conversation(client, owner)
        stored = await messages(client, owner, conversation["id"])
        events = await until(
            lambda: _feed(client, owner, pid),
            lambda items: len([e for e in items if e["type"] == "reply.completed"]) == 2,
            what="the events",
        )
    session_id = conversation["chat_session_id"]
    mine = [e for e in events if e.get("sessionid") == session_id]
    assert [(e["type"], e["sequence"]) for e in mine] == [
        ("session.created", 1),
        ("message.created", 2),
        ("reply.completed", 3),
        ("message.created", 4),
        ("reply.completed", 5),
    ]
    opened = mine[0]["data"]
    assert opened == {
        "session_id": session_id,
        "end_user_id": "whatsapp:6281200001",
        "title": "Sheena Nelson",
    }
    first = mine[1]
    assert first["subject"] == stored[0]["id"]
    assert first["data"] == {
        "message_id": stored[0]["id"],
        "session_id": session_id,
        "role": "user",
        "characters": len("Halo"),
        "end_user_id": "whatsapp:6281200001",
        "author": "contact",
        "content": "Halo",
    }
    contact_said = [e["data"]["content"] for e in mine if e["data"].get("author") == "contact"]
    assert contact_said == ["Halo", "Ada promo?"]


async def test_two_first_messages_of_a_new_contact_at_once_share_one_conversation(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    async with fake_whatsapp() as (fake, url):
        line = await meta_channel(client, owner, pid, url)
        texts = [f"message {index}" for index in range(4)]
        await asyncio.gather(*(say(client, line, "6281300001", text) for text in texts))
        conversation = await only_conversation(client, owner)
        stored = await messages(client, owner, conversation["id"])
        await until(lambda: fake.sends, lambda sends: len(sends) >= 1, what="a reply")
    contact = [m for m in stored if m["author"]["type"] == "contact"]
    assert sorted(m["content"] for m in contact) == texts
    assert conversation["unread_count"] == 0


async def _feed(client: httpx.AsyncClient, owner: factories.Account, pid: str) -> list[Any]:
    response = await client.get(f"/projects/{pid}/events?limit=500", headers=owner.headers)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])
