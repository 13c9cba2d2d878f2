"""Whapi channels and the seed's `POST /webhook/whapi`: the seed's own curl payload, its admin
commands from WHAPI_ADMINS numbers, our own echoes, and a human typing on the linked phone."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
from fastapi import FastAPI

from tests import factories
from tests.channels.helpers import (
    conversations,
    fake_whatsapp,
    messages,
    only_conversation,
    post_whapi,
    whapi_channel,
)
from tests.fake_openai import FakeOpenAI
from tests.fake_whatsapp import whapi_inbound
from tests.waiting import until

ADMIN = "62811000999"


async def _seed(client: httpx.AsyncClient, text: str, sender: str = "62811xxxx") -> httpx.Response:
    return await client.post(
        "/webhook/whapi", json={"messages": [{"from": sender, "text": {"body": text}}]}
    )


async def test_the_seed_curl_gets_ok_and_the_bot_answers_through_whapi(
    client: httpx.AsyncClient, make_client: Callable[..., Any], upstream: FakeOpenAI
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    async with fake_whatsapp() as (fake, url):
        seed = await make_client(
            WHAPI_TOKEN="seed-whapi-token",
            WHAPI_PROJECT_ID=pid,
            WHAPI_BASE_URL=url,
            WHAPI_ADMINS=ADMIN,
            # the deployment's own WHAPI_BASE_URL is trusted: the guard is for tenants' URLs
            OUTBOUND_ALLOW_PRIVATE_NETWORKS=False,
        )
        response = await _seed(seed, "Halo saya butuh bantuan")
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "ok"}
        await until(lambda: fake.sends, lambda s: len(s) == 1, what="the bot's answer")
        assert fake.sends[0].provider == "whapi"
        assert fake.sends[0].to == "62811xxxx"
        assert fake.sends[0].text == "Fake reply to: Halo saya butuh bantuan"
        assert fake.sends[0].authorization == "Bearer seed-whapi-token"
        # The same curl again (an exact re-delivery) is recognised.
        assert (await _seed(seed, "Halo saya butuh bantuan")).status_code == 200
        await asyncio.sleep(0.4)
    assert len(fake.sends) == 1
    assert len(upstream.requests) == 1


async def test_the_seed_admin_commands_assign_reply_and_unassign(
    client: httpx.AsyncClient, make_client: Callable[..., Any], upstream: FakeOpenAI
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    async with fake_whatsapp() as (fake, url):
        seed = await make_client(
            WHAPI_TOKEN="seed-whapi-token",
            WHAPI_PROJECT_ID=pid,
            WHAPI_BASE_URL=url,
            WHAPI_ADMINS=ADMIN,
        )
        await _seed(seed, "Halo", sender="62812xxxx")
        await until(lambda: fake.sends, lambda s: len(s) == 1, what="the bot's first answer")

        await _seed(seed, "assign 62812xxxx", sender=ADMIN)
        await until(
            lambda: fake.texts_to(ADMIN), lambda t: len(t) == 1, what="assign's confirmation"
        )
        assert "mode human" in fake.texts_to(ADMIN)[0]

        await _seed(seed, "reply 62812xxxx Saya akan bantu sekarang", sender=ADMIN)
        await until(
            lambda: fake.texts_to("62812xxxx"), lambda t: len(t) == 2, what="the admin's reply"
        )
        assert fake.texts_to("62812xxxx")[1] == "Saya akan bantu sekarang"

        await _seed(seed, "Oke terima kasih", sender="62812xxxx")  # a human has it: no bot reply
        await asyncio.sleep(0.5)
        assert len(upstream.requests) == 1

        await _seed(seed, "unassign 62812xxxx", sender=ADMIN)
        await until(
            lambda: fake.texts_to(ADMIN), lambda t: len(t) == 3, what="unassign's confirmation"
        )
        await _seed(seed, "Pertanyaan baru", sender="62812xxxx")
        await until(lambda: fake.texts_to("62812xxxx"), lambda t: len(t) == 3, what="the bot again")

        await _seed(seed, "assign 62899", sender=ADMIN)
        await until(
            lambda: fake.texts_to(ADMIN), lambda t: len(t) == 4, what="the unknown user's answer"
        )
        for index, command in enumerate(
            ("pause 62812xxxx", "status 62812xxxx", "resume 62812xxxx")
        ):
            await _seed(seed, command, sender=ADMIN)
            await until(
                lambda n=index: len(fake.texts_to(ADMIN)) == 5 + n, bool, what=f"{command}'s answer"
            )
    confirmations = fake.texts_to(ADMIN)
    assert "reply queued" in confirmations[1]
    assert "mode bot" in confirmations[2]
    assert "no conversation" in confirmations[3]
    assert "mode paused" in confirmations[4]
    assert confirmations[5].startswith("62812xxxx: mode paused")
    assert "mode bot" in confirmations[6]
    # The admin's commands never reached the bot, nor became a conversation.
    assert [c["contact"]["id"] for c in await conversations(client, owner)] == ["62812xxxx"]
    assert len(upstream.requests) == 2


async def test_the_seed_endpoint_is_404_unconfigured_and_checks_its_secret(
    client: httpx.AsyncClient, make_client: Callable[..., Any]
) -> None:
    unconfigured = await _seed(client, "Halo")
    assert unconfigured.status_code == 404
    assert unconfigured.json()["error"]["code"] == "channel_not_configured"
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    seed = await make_client(WHAPI_TOKEN="t", WHAPI_PROJECT_ID=pid, WHAPI_WEBHOOK_SECRET="s3cret")
    missing = await _seed(seed, "Halo")
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_signature"
    with_secret = await seed.post(
        "/webhook/whapi",
        json={"messages": [{"from": "62811xxxx", "text": {"body": "Halo"}}]},
        headers={"x-webhook-secret": "s3cret"},
    )
    assert with_secret.status_code == 200


async def test_whapi_echoes_of_our_sends_are_ignored_and_a_human_on_the_phone_takes_over(
    app: FastAPI, client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    async with fake_whatsapp() as (fake, url):
        channel = await whapi_channel(client, owner, pid, url)
        assert channel["webhook_url"].endswith(f"/webhooks/whapi/{channel['id']}")
        first = await post_whapi(
            client, channel, whapi_inbound("919984351847", "Hello world", "p.in.1")
        )
        assert first.status_code == 200, first.text
        await until(lambda: fake.sends, lambda s: len(s) == 1, what="the reply")
        sent = fake.sends[0]
        echo = whapi_inbound("919984351847", sent.text, sent.id, from_me=True)
        assert (await post_whapi(client, channel, echo)).status_code == 200
        conversation = await only_conversation(client, owner)
        assert conversation["mode"] == "bot"

        typed = whapi_inbound(
            "919984351847", "Saya dari toko, sebentar ya", "p.device.1", from_me=True
        )
        assert (await post_whapi(client, channel, typed)).status_code == 200
        conversation = await only_conversation(client, owner)
        assert (conversation["mode"], conversation["handoff_reason"]) == ("human", "device")
        await post_whapi(client, channel, whapi_inbound("919984351847", "Oke", "p.in.2"))
        await asyncio.sleep(0.4)
        stored = await messages(client, owner, conversation["id"])
    assert [m["author"]["type"] for m in stored] == ["contact", "bot", "device", "contact"]
    assert len(upstream.requests) == 1
    assert len(fake.sends) == 1


async def test_a_whapi_webhook_without_its_secret_is_401(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    channel = await whapi_channel(client, owner, pid, "http://127.0.0.1:9")
    for headers in ({}, {"x-webhook-secret": "wrong"}):
        response = await client.post(
            f"/webhooks/whapi/{channel['id']}",
            json=whapi_inbound("62811", "hi", "p.1"),
            headers=headers,
        )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_signature"
    assert await conversations(client, owner) == []
