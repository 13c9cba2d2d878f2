"""Channel test helpers: connect a number pointing at the fake WhatsApp, post webhooks as the
providers do (signed over the raw bytes), and read a conversation back."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from tests import factories
from tests.fake_whatsapp import FakeWhatsApp, encode, meta_inbound, sign, whapi_inbound
from tests.live import serve

APP_SECRET = "meta-app-secret-0123456789abcdef"
_numbers = itertools.count(106540352242922)
_wamids = itertools.count(1)


@dataclass
class MetaLine:
    """A connected Meta channel and what the test needs to act as Meta for it."""

    id: str
    phone_number_id: str
    verify_token: str
    created: dict[str, Any]


@contextlib.asynccontextmanager
async def fake_whatsapp() -> AsyncIterator[tuple[FakeWhatsApp, str]]:
    fake = FakeWhatsApp()
    async with serve(fake.asgi()) as url:
        yield fake, url


async def meta_channel(
    client: httpx.AsyncClient,
    owner: factories.Account,
    project_id: str,
    base_url: str,
    **fields: Any,
) -> MetaLine:
    number = str(next(_numbers))
    body = {
        "provider": "meta_cloud",
        "name": "Support",
        "phone_number_id": number,
        "access_token": "EAAG-test-token",
        "app_secret": APP_SECRET,
        "base_url": base_url,
        **fields,
    }
    response = await client.post(
        f"/projects/{project_id}/channels", json=body, headers=owner.headers
    )
    assert response.status_code == 201, response.text
    created = response.json()
    return MetaLine(created["id"], number, created["verify_token"], created)


async def whapi_channel(
    client: httpx.AsyncClient,
    owner: factories.Account,
    project_id: str,
    base_url: str,
    **fields: Any,
) -> dict[str, Any]:
    body = {
        "provider": "whapi",
        "name": "Sales",
        "token": "whapi-token",
        "base_url": base_url,
        **fields,
    }
    response = await client.post(
        f"/projects/{project_id}/channels", json=body, headers=owner.headers
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def wamid() -> str:
    return f"wamid.TEST{next(_wamids):08d}"


async def post_meta(
    client: httpx.AsyncClient, line: MetaLine, payload: dict[str, Any], secret: str = APP_SECRET
) -> httpx.Response:
    body = encode(payload)
    return await client.post(
        f"/webhooks/meta/{line.id}",
        content=body,
        headers={"content-type": "application/json", "x-hub-signature-256": sign(body, secret)},
    )


async def say(
    client: httpx.AsyncClient, line: MetaLine, sender: str, text: str, message_id: str | None = None
) -> str:
    """The contact writes; returns the message's wamid."""
    message_id = message_id or wamid()
    response = await post_meta(
        client, line, meta_inbound(line.phone_number_id, sender, text, message_id)
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok"}
    return message_id


async def post_whapi(
    client: httpx.AsyncClient, channel: dict[str, Any], payload: dict[str, Any]
) -> httpx.Response:
    return await client.post(
        f"/webhooks/whapi/{channel['id']}",
        content=encode(payload),
        headers={"content-type": "application/json", "x-webhook-secret": channel["webhook_secret"]},
    )


async def conversations(
    client: httpx.AsyncClient, account: factories.Account, **query: str
) -> list[dict[str, Any]]:
    response = await client.get("/conversations", params=query, headers=account.headers)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def messages(
    client: httpx.AsyncClient, account: factories.Account, conversation_id: str
) -> list[dict[str, Any]]:
    response = await client.get(
        f"/conversations/{conversation_id}/messages?limit=100", headers=account.headers
    )
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def only_conversation(
    client: httpx.AsyncClient, account: factories.Account
) -> dict[str, Any]:
    found = await conversations(client, account)
    assert len(found) == 1, found
    return found[0]


__all__ = ["meta_inbound", "whapi_inbound"]


async def channel_with_a_conversation(
    client: httpx.AsyncClient, owner: factories.Account, project_id: str
) -> tuple[str, str]:
    """A Meta channel (sending to a closed local port) and one contact's conversation on it."""
    line = await meta_channel(client, owner, project_id, "http://127.0.0.1:9")
    await say(client, line, "6281999000", "Halo")
    found = await conversations(client, owner, channel_id=line.id)
    return line.id, found[0]["id"]
