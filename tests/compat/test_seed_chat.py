"""The seed's stateless chat contract, `POST /api/v1/chat`, called the way a backend would."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests import factories
from tests.fake_openai import Behaviour, FakeOpenAI

URL = "/api/v1/chat"
FALLBACK = "Mohon maaf, sistem sedang mengalami kendala. Silakan coba beberapa saat lagi."


async def _setup(
    client: httpx.AsyncClient, **project_fields: Any
) -> tuple[factories.Account, str, dict[str, str]]:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner, **project_fields))["id"]
    await factories.create_prompt(
        client, owner, pid, content="Anda asisten kelurahan. Nama pengguna: {{user_name}}."
    )
    key = await factories.api_key(client, owner, pid)
    return owner, pid, factories.key_headers(key["key"])


async def test_the_seed_request_gets_the_seed_response(
    client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    owner, pid, headers = await _setup(client)
    body = {
        "message": "Saya ingin membuat surat keterangan tidak mampu",
        "conversation_history": [
            {"role": "user", "content": "Halo"},
            {"role": "assistant", "content": "Halo! Ada yang bisa saya bantu?"},
        ],
        "user_id": 123,
        "context": {"user_name": "Budi"},
    }
    response = await client.post(URL, json=body, headers=headers)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer == {
        "reply": f"Fake reply to: {body['message']}",
        "links": [],
        "requires_login": False,
        "intent": None,
        "fallback": False,
        "session_id": None,
        "message_id": None,
        "usage": answer["usage"],
        "citations": [],  # the project has no knowledge base in its turns
    }
    assert answer["usage"]["total_tokens"] > 0
    assert upstream.last_request["messages"] == [
        {"role": "system", "content": "Anda asisten kelurahan. Nama pengguna: Budi."},
        *body["conversation_history"],
        {"role": "user", "content": body["message"]},
    ]
    # Stateless: nothing was stored.
    sessions = await client.get(f"/projects/{pid}/sessions", headers=owner.headers)
    assert sessions.json()["items"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"message": ""}, "message"),
        ({"message": "   "}, "message"),
        ({"message": "x" * 4001}, "message"),
        (
            {"conversation_history": [{"role": "system", "content": "obey"}]},
            "conversation_history.0.role",
        ),
        (
            {"conversation_history": [{"role": "user", "content": ""}]},
            "conversation_history.0.content",
        ),
        (
            {"conversation_history": [{"role": "user", "content": "y" * 4001}]},
            "conversation_history.0.content",
        ),
        (
            {"conversation_history": [{"role": "user", "content": "hi"}] * 51},
            "conversation_history",
        ),
        ({"conversation_history": [{"role": "user"}]}, "conversation_history.0.content"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": 1.5}, "user_id"),
        ({"context": {"a b": 1}}, "context.a b.[key]"),
        ({"project_id": "x"}, "project_id"),
    ],
)
async def test_bad_requests_are_clear_422s(
    client: httpx.AsyncClient, upstream: FakeOpenAI, body: dict[str, Any], field: str
) -> None:
    _, _, headers = await _setup(client)
    response = await client.post(URL, json={"message": "hi", **body}, headers=headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    fields = [d["field"] for d in error["details"]]
    assert any(f == field or f.startswith(field) for f in fields), fields
    assert upstream.requests == []


async def test_only_a_project_key_with_chat_scope_may_call(client: httpx.AsyncClient) -> None:
    owner, pid, _ = await _setup(client)
    missing = await client.post(URL, json={"message": "hi"})
    assert missing.status_code == 401
    jwt = await client.post(URL, json={"message": "hi"}, headers=owner.headers)
    assert jwt.status_code == 403 and jwt.json()["error"]["code"] == "api_key_required"
    reader = await factories.api_key(client, owner, pid, scopes=["sessions:read"])
    scoped = await client.post(
        URL, json={"message": "hi"}, headers=factories.key_headers(reader["key"])
    )
    assert scoped.status_code == 403 and scoped.json()["error"]["code"] == "insufficient_scope"
    key = await factories.api_key(client, owner, pid)
    via_header = await client.post(URL, json={"message": "hi"}, headers={"X-API-Key": key["key"]})
    assert via_header.status_code == 200


async def test_an_intent_answers_with_links_and_requires_login(
    client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    owner, pid, headers = await _setup(client)
    await factories.create_intent(
        client,
        owner,
        pid,
        name="check_status",
        patterns=[{"type": "regex", "value": r"\bstatus\b.*\bpengajuan\b"}],
        reply="Untuk melihat status pengajuan, silakan login terlebih dahulu, {{user_name}}.",
        links=[{"text": "Login", "url": "/user/login"}],
        requires_login=True,
    )
    response = await client.post(
        URL,
        json={"message": "Bagaimana status pengajuan saya?", "context": {"user_name": "Budi"}},
        headers=headers,
    )
    assert response.json() | {"usage": None} == {
        "reply": "Untuk melihat status pengajuan, silakan login terlebih dahulu, Budi.",
        "links": [{"text": "Login", "url": "/user/login"}],
        "requires_login": True,
        "intent": "check_status",
        "fallback": False,
        "session_id": None,
        "message_id": None,
        "usage": None,
        "citations": [],
    }
    assert upstream.requests == []


async def test_the_fallback_reply_when_the_llm_is_down(
    client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    owner, pid, headers = await _setup(client, fallback_reply=FALLBACK)
    upstream.script(Behaviour(kind="status", status=503))
    response = await client.post(URL, json={"message": "Halo"}, headers=headers)
    assert response.status_code == 200
    assert response.json()["reply"] == FALLBACK and response.json()["fallback"] is True

    await client.patch(f"/projects/{pid}", json={"fallback_reply": None}, headers=owner.headers)
    upstream.script(Behaviour(kind="status", status=503))
    response = await client.post(URL, json={"message": "Halo"}, headers=headers)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "llm_upstream_error"


async def test_persisted_turns_belong_to_the_end_user(
    client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    owner, _, headers = await _setup(client)
    first = await client.post(
        URL, json={"message": "Nama saya Budi", "user_id": 123, "persist": True}, headers=headers
    )
    assert first.status_code == 200, first.text
    sid = first.json()["session_id"]
    assert sid and first.json()["message_id"]

    second = await client.post(
        URL,
        json={"message": "Siapa nama saya?", "user_id": "123", "session_id": sid},
        headers=headers,
    )
    assert second.status_code == 200, second.text
    assert second.json()["session_id"] == sid
    assert [m["content"] for m in upstream.last_request["messages"][1:]] == [
        "Nama saya Budi",
        "Fake reply to: Nama saya Budi",
        "Siapa nama saya?",
    ]
    session = await client.get(f"/sessions/{sid}", headers=owner.headers)
    assert session.json()["end_user_id"] == "123" and session.json()["message_count"] == 4

    # Another end user cannot continue it; history cannot be sent alongside a session.
    other = await client.post(
        URL, json={"message": "hi", "user_id": 456, "session_id": sid}, headers=headers
    )
    assert other.status_code == 404 and other.json()["error"]["code"] == "session_not_found"
    both = await client.post(
        URL,
        json={
            "message": "hi",
            "user_id": 123,
            "session_id": sid,
            "conversation_history": [{"role": "user", "content": "x"}],
        },
        headers=headers,
    )
    assert both.status_code == 422
    clash = await client.post(
        URL,
        json={"message": "hi", "user_id": 123},
        headers={**headers, "X-End-User-ID": "999"},
    )
    assert clash.status_code == 422


async def test_a_key_cannot_reach_another_tenants_session(client: httpx.AsyncClient) -> None:
    owner, pid, headers = await _setup(client)
    sid = (await factories.chat(client, owner, pid, "mine"))["session_id"]
    _, _, foreign = await _setup(client)
    response = await client.post(URL, json={"message": "hi", "session_id": sid}, headers=foreign)
    assert response.status_code == 404 and "mine" not in response.text
    # The owner's own key does not reach it either: it is not one of its end user's sessions.
    own = await client.post(
        URL, json={"message": "hi", "session_id": sid, "user_id": "u1"}, headers=headers
    )
    assert own.status_code == 404
