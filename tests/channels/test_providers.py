"""The provider modules on their own: parsing every shape of webhook the brief documents, and
classifying every kind of send failure, through httpx's MockTransport (the real code path)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from ipaddress import ip_address
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from app.channels.links import link_for
from app.channels.outbound import split_text
from app.channels.providers.base import Failure, Link, SendError, transport_failure
from app.channels.providers.meta_cloud import MetaCloudProvider, verify_signature
from app.channels.providers.whapi import WhapiProvider, contact_of
from app.channels.schemas import (
    ChannelSettings,
    ChannelUpdate,
    MetaChannelCreate,
    WhapiChannelCreate,
)
from app.channels.secrets import SecretBox
from app.channels.service import apply_changes, new_channel
from app.channels.statuses import advanced
from app.channels.webhooks import name_messages, parse_json
from app.conversations import commands
from app.conversations.policy import HandoffPolicy, model_handoff, policy_of
from app.conversations.service import conversation_read, message_read
from app.conversations.transitions import Action, Actor, authorize
from app.core.errors import ForbiddenError
from app.core.outbound import OutboundAddressRefused
from app.core.types import utcnow
from app.models import Channel, ChannelMessage, ChatMessage, Conversation
from tests.conftest import make_settings
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


def test_statuses_only_move_forward() -> None:
    assert advanced("accepted", "sent") == "sent"
    assert advanced("accepted", "read") == "read"  # `delivered` may never come
    assert advanced("read", "delivered") is None
    assert advanced("sent", "sent") is None
    assert advanced("failed", "read") is None
    assert advanced("sent", "deleted") is None


def test_a_patch_changes_only_what_it_names_and_new_credentials_revive_the_channel() -> None:
    box = SecretBox(SecretStr(Fernet.generate_key().decode()))
    body = MetaChannelCreate(
        provider="meta_cloud",
        name="Support",
        phone_number_id="106540352242922",
        access_token="EAAG",
        app_secret="sec",
    )
    channel = new_channel(uuid.uuid4(), body, box)
    assert box.decrypt(channel.access_token_enc) == "EAAG"
    assert channel.app_secret_enc and box.decrypt(channel.app_secret_enc) == "sec"
    channel.status = "auth_error"
    apply_changes(channel, ChannelUpdate(name="Renamed"), box)
    assert (channel.name, channel.status) == ("Renamed", "auth_error")
    apply_changes(
        channel,
        ChannelUpdate(access_token="EAAG-2", settings=ChannelSettings(handoff_message="Tunggu")),
        box,
    )
    assert channel.status == "active" and box.decrypt(channel.access_token_enc) == "EAAG-2"
    assert channel.settings == {"handoff_message": "Tunggu"}
    apply_changes(channel, ChannelUpdate(status="disabled", base_url=None), box)
    assert (channel.status, channel.base_url) == ("disabled", None)
    whapi = new_channel(
        uuid.uuid4(),
        WhapiChannelCreate(provider="whapi", name="S", token="t", admin_numbers=["62811"]),
        box,
    )
    assert whapi.admin_numbers == ["62811"] and whapi.app_secret_enc is None


def _conversation(**fields: Any) -> Conversation:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "workspace_id": uuid.uuid4(),
        "project_id": uuid.uuid4(),
        "channel_id": uuid.uuid4(),
        "chat_session_id": uuid.uuid4(),
        "contact_id": "6281",
        "mode": "bot",
        "status": "open",
        "unread_count": 0,
        "version": 1,
        "window_closed": False,
        "created_at": utcnow(),
        "updated_at": utcnow(),
    }
    return Conversation(**(values | fields))


def test_agents_act_on_their_own_or_unassigned_conversations_only() -> None:
    me, other = uuid.uuid4(), uuid.uuid4()
    agent = Actor("user", me, "a@example.com", "agent")
    admin = Actor("user", other, "b@example.com", "admin")
    mine, theirs, nobodys = (
        _conversation(assignee_user_id=me),
        _conversation(assignee_user_id=other),
        _conversation(),
    )
    for action in (Action.RELEASE, Action.PAUSE, Action.RESOLVE, Action.TAKEOVER):
        authorize(agent, action, mine)
        authorize(agent, action, nobodys)
        with pytest.raises(ForbiddenError):
            authorize(agent, action, theirs)
        authorize(admin, action, mine)
    authorize(agent, Action.ASSIGN, nobodys, assignee_id=me)
    with pytest.raises(ForbiddenError):
        authorize(agent, Action.ASSIGN, nobodys, assignee_id=other)
    with pytest.raises(ForbiddenError):
        authorize(agent, Action.ASSIGN, theirs, assignee_id=me, force=True)
    authorize(admin, Action.ASSIGN, mine, assignee_id=other, force=True)
    authorize(Actor("bot"), Action.HANDOFF, theirs)


def test_the_window_and_the_delivery_status_a_reader_sees() -> None:
    fresh = _conversation(last_inbound_at=utcnow() - timedelta(hours=1))
    stale = _conversation(last_inbound_at=utcnow() - timedelta(hours=25))
    closed = _conversation(last_inbound_at=utcnow(), window_closed=True)
    assert conversation_read(fresh, "meta_cloud").can_reply is True
    assert conversation_read(stale, "meta_cloud").can_reply is False
    assert conversation_read(closed, "meta_cloud").can_reply is False
    assert conversation_read(stale, "whapi").can_reply is True  # no such window on Whapi
    assert conversation_read(_conversation(), "meta_cloud").window_expires_at is None
    message = ChatMessage(
        id=uuid.uuid4(),
        seq=2,
        role="assistant",
        content="hi",
        status="complete",
        author_type="bot",
        created_at=utcnow(),
    )

    def part(status: str, code: str | None = None) -> ChannelMessage:
        return ChannelMessage(status=status, error_code=code, error_title="t" if code else None)

    assert message_read(message, [part("read"), part("sent")]).delivery_status == "sent"
    failed = message_read(message, [part("read"), part("failed", "131026")])
    assert failed.delivery_status == "failed" and failed.error is not None
    assert failed.error.code == "131026"
    assert message_read(message, []).delivery_status is None
    message.status = "suppressed"
    assert message_read(message, [part("queued")]).delivery_status == "suppressed"


def test_links_seed_names_and_bodies_that_are_not_json() -> None:
    settings = make_settings("sqlite+aiosqlite://", WHAPI_BASE_URL="https://whapi.test")
    box = SecretBox(settings.CHANNEL_SECRETS_KEY)
    meta = Channel(
        provider="meta_cloud", access_token_enc=box.encrypt("tok"), phone_number_id="111"
    )
    link = link_for(meta, box, settings)
    assert (link.base_url, link.api_version, link.token) == (
        "https://graph.facebook.com",
        "v23.0",
        "tok",
    )
    whapi = Channel(provider="whapi", access_token_enc=box.encrypt("t2"), base_url=None)
    assert link_for(whapi, box, settings).base_url == "https://whapi.test"
    payload: dict[str, Any] = {
        "messages": [{"from": "62811xxxx", "text": {"body": "Halo"}}, {"id": "kept"}]
    }
    name_messages(payload, b"the raw body")
    assert (
        payload["messages"][0]["id"].startswith("seed:") and payload["messages"][1]["id"] == "kept"
    )
    again: dict[str, Any] = {"messages": [{"from": "62811xxxx", "text": {"body": "Halo"}}]}
    name_messages(again, b"the raw body")
    assert again["messages"][0]["id"] == payload["messages"][0]["id"]  # a re-delivery dedupes
    assert parse_json(b"{not json", meta) is None
    assert contact_of("+62811@s.whatsapp.net") == "62811"


def test_a_refused_address_fails_for_good_and_other_network_errors_are_retried() -> None:
    refused = transport_failure(
        OutboundAddressRefused("internal.test", ip_address("10.0.0.5"), "private")
    )
    assert (refused.failure, refused.code) == (Failure.PERMANENT, "url_not_allowed")
    assert transport_failure(httpx.ConnectError("refused")).failure == Failure.RETRY
    assert transport_failure(httpx.RemoteProtocolError("cut")).failure == Failure.AMBIGUOUS
