"""The provider modules on their own: parsing every shape of webhook the brief documents, and
classifying every kind of send failure, through httpx's MockTransport (the real code path)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from app.channels.outbound import split_text
from app.channels.providers.base import Failure, Link, SendError
from app.channels.providers.meta_cloud import MetaCloudProvider, verify_signature
from app.channels.providers.whapi import WhapiProvider
from app.conversations import commands
from app.conversations.policy import HandoffPolicy, model_handoff, policy_of
from app.models import Channel
from tests.fake_whatsapp import meta_error, meta_inbound, meta_status, sign, whapi_inbound

META = MetaCloudProvider()
WHAPI = WhapiProvider()
LINK = Link(base_url="https://graph.test", token="tok", phone_number_id="111", api_version="v23.0")


def test_meta_parses_every_entry_change_message_and_status() -> None:
    payload = meta_inbound("111", "6281", "hello", "wamid.1")
    value = payload["entry"][0]["changes"][0]["value"]
    value["messages"] += [
        {
            "from": "6281",
            "id": "wamid.2",
            "type": "interactive",
            "interactive": {"type": "button_reply", "button_reply": {"id": "b", "title": "Yes"}},
        },
        {"from": "6281", "id": "wamid.3", "type": "button", "button": {"text": "Stop"}},
        {"from": "6281", "id": "wamid.4", "type": "sticker", "sticker": {"id": "s"}},
        {"from": "6281", "id": "wamid.5", "type": "reaction", "reaction": {"emoji": "👍"}},
        {"from": "6281", "type": "text", "text": {"body": "no id"}},
    ]
    value["errors"] = [{"code": 130429, "title": "Rate limit hit"}]
    other = meta_inbound("222", "6282", "not ours", "wamid.9")["entry"][0]
    statuses = meta_status("111", "wamid.out", "failed", "6281", error_code=131047, callback="cb")
    payload["entry"] += [other, statuses["entry"][0], {"changes": [{"field": "account_update"}]}]
    inbound = META.parse(payload, "111")
    assert [(m.external_id, m.kind, m.text) for m in inbound.messages] == [
        ("wamid.1", "text", "hello"),
        ("wamid.2", "interactive", "Yes"),
        ("wamid.3", "button", "Stop"),
        ("wamid.4", "sticker", "[sticker]"),
        ("wamid.5", "reaction", "[unsupported: reaction]"),
    ]
    assert inbound.messages[0].contact_name == "Sheena Nelson"
    assert [(s.status, s.error_code, s.callback) for s in inbound.statuses] == [
        ("failed", "131047", "cb")
    ]
    assert inbound.errors == ["130429"]
    assert inbound.ignored == 3  # the message without an id, another number, another field
    assert META.parse("not a dict", "111").messages == []


def test_meta_signature_needs_the_prefix_and_the_right_secret() -> None:
    body = b'{"a": "\\u00e9"}'
    assert verify_signature("s", body, sign(body, "s"))
    assert not verify_signature("s", body, sign(body, "t"))
    assert not verify_signature("s", body, sign(body, "s").removeprefix("sha256="))
    assert not verify_signature("s", body, None)


def _meta_answer(response: httpx.Response) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(lambda request: response))


@pytest.mark.parametrize(
    ("code", "status", "failure"),
    [
        (130429, 400, Failure.THROTTLED),
        (4, 400, Failure.THROTTLED),
        (131056, 429, Failure.PACE_CONTACT),
        (190, 401, Failure.AUTH),
        (200, 403, Failure.AUTH),
        (131047, 400, Failure.WINDOW_CLOSED),
        (131000, 500, Failure.RETRY),
        (131057, 400, Failure.RETRY),
        (131026, 400, Failure.PERMANENT),
        (100, 400, Failure.PERMANENT),
    ],
)
async def test_meta_send_errors_are_classified_by_code(
    code: int, status: int, failure: Failure
) -> None:
    error = meta_error(code, status)
    response = httpx.Response(status, content=error.body, headers={"retry-after": "7"})
    async with _meta_answer(response) as client:
        with pytest.raises(SendError) as raised:
            await META.send_text(client, LINK, "6281", "hi")
    assert raised.value.failure == failure
    assert raised.value.code == str(code)


@pytest.mark.parametrize(
    ("response", "failure"),
    [
        (httpx.Response(503, text="<html>"), Failure.RETRY),
        (httpx.Response(429, text=""), Failure.RETRY),
        (httpx.Response(401, text=""), Failure.AUTH),
        (httpx.Response(404, text=""), Failure.PERMANENT),
        (
            httpx.Response(200, json={"messaging_product": "whatsapp", "messages": []}),
            Failure.AMBIGUOUS,
        ),
    ],
)
async def test_meta_answers_without_an_error_envelope(
    response: httpx.Response, failure: Failure
) -> None:
    async with _meta_answer(response) as client:
        with pytest.raises(SendError) as raised:
            await META.send_text(client, LINK, "6281", "hi")
    assert raised.value.failure == failure


async def test_meta_sends_the_callback_and_network_failures_are_retry_or_ambiguous() -> None:
    seen: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        assert request.url.path == "/v23.0/111/messages"
        return httpx.Response(200, json={"messages": [{"id": "wamid.X"}]})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        sent = await META.send_text(client, LINK, "6281", "hi", callback="part-1")
    assert sent.external_id == "wamid.X"
    assert seen[0]["biz_opaque_callback_data"] == "part-1"
    assert seen[0]["text"] == {"preview_url": False, "body": "hi"}
    for exc, failure in (
        (httpx.ConnectError("no"), Failure.RETRY),
        (httpx.ReadTimeout("slow"), Failure.AMBIGUOUS),
    ):

        def fail(request: httpx.Request, exc: Exception = exc) -> httpx.Response:
            raise exc

        async with httpx.AsyncClient(transport=httpx.MockTransport(fail)) as client:
            with pytest.raises(SendError) as raised:
                await WHAPI.send_text(client, LINK, "6281", "hi")
        assert raised.value.failure == failure


def test_whapi_parses_messages_echoes_media_and_statuses_and_skips_groups() -> None:
    payload = whapi_inbound("919984351847", "Hello world", "p.1")
    payload["messages"] += [
        {
            "id": "p.2",
            "from_me": True,
            "type": "text",
            "chat_id": "919984351847@s.whatsapp.net",
            "text": {"body": "typed on the phone"},
        },
        {
            "id": "p.3",
            "type": "image",
            "chat_id": "919984351847@s.whatsapp.net",
            "from": "919984351847",
            "image": {"caption": "receipt"},
        },
        {
            "id": "p.4",
            "type": "text",
            "chat_id": "1203@g.us",
            "from": "62811",
            "text": {"body": "group"},
        },
        {"type": "text", "chat_id": "62811@s.whatsapp.net", "from": "62811"},
        "not a message",
    ]
    payload["statuses"] = [
        {
            "id": "p.out",
            "status": "read",
            "recipient_id": "919984351847@s.whatsapp.net",
            "timestamp": "1712995290",
        },
        {"status": "read"},
    ]
    inbound = WHAPI.parse(payload, None)
    assert [(m.external_id, m.contact_id, m.from_me, m.text) for m in inbound.messages] == [
        ("p.1", "919984351847", False, "Hello world"),
        ("p.2", "919984351847", True, "typed on the phone"),
        ("p.3", "919984351847", False, "[image] receipt"),
    ]
    assert [(s.external_id, s.status, s.timestamp) for s in inbound.statuses] == [
        ("p.out", "read", 1712995290)
    ]
    assert inbound.ignored == 4
    assert WHAPI.parse(["not", "a", "dict"], None).messages == []


@pytest.mark.parametrize(
    ("response", "failure", "title"),
    [
        (
            httpx.Response(
                429, json={"error": {"message": "slow down"}}, headers={"retry-after": "3"}
            ),
            Failure.THROTTLED,
            "slow down",
        ),
        (httpx.Response(502, text="bad gateway"), Failure.RETRY, "HTTP 502"),
        (httpx.Response(401, json={"error": "Unauthorized"}), Failure.AUTH, "Unauthorized"),
        (httpx.Response(400, json={"error": {"code": 400}}), Failure.PERMANENT, "HTTP 400"),
        (
            httpx.Response(200, json={"sent": True}),
            Failure.AMBIGUOUS,
            "an answer without a message id",
        ),
    ],
)
async def test_whapi_send_errors_are_classified_by_status(
    response: httpx.Response, failure: Failure, title: str
) -> None:
    async with _meta_answer(response) as client:
        with pytest.raises(SendError) as raised:
            await WHAPI.send_text(client, LINK, "62811", "hi")
    assert (raised.value.failure, raised.value.title) == (failure, title)
    if failure == Failure.THROTTLED:
        assert raised.value.retry_after == 3.0


def test_admin_commands_parse_and_numbers_normalise() -> None:
    assert commands.normalize("0812-3456 789", "62") == "628123456789"
    assert commands.normalize("+62 811@s.whatsapp.net", "62") == "62811"
    channel = Channel(admin_numbers=["0811000999"])
    assert commands.is_admin(channel, "62811000999", "62")
    assert not commands.is_admin(channel, "62811000998", "62")
    parsed = commands.parse("REPLY 62812 Saya akan bantu\nsekarang")
    assert parsed == commands.Command("reply", "62812", "Saya akan bantu\nsekarang")
    assert commands.parse("reply 62812") is None  # a reply needs its message
    assert commands.parse("tolong assign saya") is None
    assert commands.parse("status 62812") == commands.Command("status", "62812", None)


def test_handoff_keywords_match_whole_words_and_the_marker_is_stripped() -> None:
    policy = HandoffPolicy()
    assert policy.keyword_in("Saya mau bicara dengan MANUSIA!") == "manusia"
    assert policy.keyword_in("I need customer service please") == "customer service"
    assert policy.keyword_in("humanity and csv files") is None
    custom = policy_of(
        {"handoff_keywords": ["komplain", " "], "handoff_message": "Tunggu", "llm_handoff": False}
    )
    assert (custom.keywords, custom.message, custom.ask_model) == (("komplain",), "Tunggu", False)
    assert model_handoff("Sorry.\nHANDOFF: refund") == ("Sorry.", "refund")
    assert model_handoff("handoff:") == ("", "the model asked for a human")
    assert model_handoff("All good") == ("All good", None)


def test_long_text_is_split_at_paragraphs_lines_or_words() -> None:
    assert split_text("short") == ["short"]
    paragraphs = split_text(("a" * 3000) + "\n\n" + ("b" * 3000))
    assert paragraphs == ["a" * 3000, "b" * 3000]
    words = split_text(" ".join(["word"] * 2000), limit=100)
    assert all(len(p) <= 100 for p in words) and " ".join(words).split() == ["word"] * 2000
    unbroken = split_text("x" * 250, limit=100)
    assert unbroken == ["x" * 100, "x" * 100, "x" * 50]
