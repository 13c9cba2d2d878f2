"""Conversation features: feedback, export, usage accounting, regenerate, titles, isolation."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from app.chat.usage import percentile
from tests import factories
from tests.fake_openai import Behaviour, FakeOpenAI


async def _turn(client: httpx.AsyncClient) -> tuple[factories.Account, str, dict[str, object]]:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    return owner, pid, await factories.chat(client, owner, pid, "What is ML?")


async def test_feedback_is_shown_on_the_message_and_can_be_withdrawn(
    client: httpx.AsyncClient,
) -> None:
    owner, _, body = await _turn(client)
    reply = body["assistant_message"]
    assert isinstance(reply, dict) and reply["feedback"] is None
    url = f"/messages/{reply['id']}/feedback"
    response = await client.post(
        url, json={"rating": "down", "comment": "  Too vague.  "}, headers=owner.headers
    )
    assert response.status_code == 200, response.text
    feedback = response.json()["feedback"]
    assert feedback["rating"] == "down" and feedback["comment"] == "Too vague."
    listed = await client.get(f"/sessions/{body['session_id']}/messages", headers=owner.headers)
    assert listed.json()["items"][1]["feedback"]["rating"] == "down"

    response = await client.post(url, json={"rating": "up"}, headers=owner.headers)
    assert response.json()["feedback"]["rating"] == "up"
    assert response.json()["feedback"]["comment"] is None
    response = await client.post(url, json={"rating": None}, headers=owner.headers)
    assert response.status_code == 200 and response.json()["feedback"]["rating"] is None


@pytest.mark.parametrize(
    "payload",
    [{}, {"rating": "meh"}, {"rating": "up", "comment": "x" * 2001}, {"rating": "up", "id": 1}],
)
async def test_feedback_rejects_bad_bodies(
    client: httpx.AsyncClient, payload: dict[str, object]
) -> None:
    owner, _, body = await _turn(client)
    reply = body["assistant_message"]
    assert isinstance(reply, dict)
    response = await client.post(
        f"/messages/{reply['id']}/feedback", json=payload, headers=owner.headers
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


async def test_feedback_is_for_replies_only(client: httpx.AsyncClient) -> None:
    owner, _, body = await _turn(client)
    user = body["message"]
    assert isinstance(user, dict)
    response = await client.post(
        f"/messages/{user['id']}/feedback", json={"rating": "up"}, headers=owner.headers
    )
    assert response.status_code == 409 and response.json()["error"]["code"] == "not_a_reply"
    response = await client.post(
        f"/messages/{uuid.uuid4()}/feedback", json={"rating": "up"}, headers=owner.headers
    )
    assert response.status_code == 404


async def test_export_as_json_and_markdown(client: httpx.AsyncClient) -> None:
    owner, pid, body = await _turn(client)
    sid = body["session_id"]
    await factories.chat(client, owner, pid, "And deep learning?", session_id=sid)

    response = await client.get(f"/sessions/{sid}/export", headers=owner.headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert f'filename="session-{sid}.json"' in response.headers["content-disposition"]
    document = json.loads(response.text)
    assert document["session"]["id"] == sid and document["session"]["title"] == "What is ML?"
    assert [m["content"] for m in document["messages"]] == [
        "What is ML?",
        "Fake reply to: What is ML?",
        "And deep learning?",
        "Fake reply to: And deep learning?",
    ]
    assert document["exported_at"]

    response = await client.get(
        f"/sessions/{sid}/export", params={"format": "markdown"}, headers=owner.headers
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/markdown")
    text = response.text
    assert text.startswith("# What is ML?\n")
    assert "### User ·" in text and "### Assistant ·" in text
    assert text.index("What is ML?\n\n---") < text.index("And deep learning?")

    bad = await client.get(
        f"/sessions/{sid}/export", params={"format": "pdf"}, headers=owner.headers
    )
    assert bad.status_code == 422


async def test_export_streams_long_sessions_in_order(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("app.chat.export.BATCH_SIZE", 3)
    owner, pid, body = await _turn(client)
    sid = body["session_id"]
    for index in range(3):
        await factories.chat(client, owner, pid, f"q{index}", session_id=sid)
    response = await client.get(f"/sessions/{sid}/export", headers=owner.headers)
    messages = json.loads(response.text)["messages"]
    assert len(messages) == 8
    assert [m["content"] for m in messages][2::2] == ["q0", "q1", "q2"]


async def test_usage_counts_messages_tokens_failures_latency_and_feedback(
    client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    owner, pid, body = await _turn(client)
    sid = body["session_id"]
    reply = body["assistant_message"]
    assert isinstance(reply, dict)
    first_usage = body["usage"]
    assert isinstance(first_usage, dict)
    await client.post(
        f"/messages/{reply['id']}/feedback", json={"rating": "up"}, headers=owner.headers
    )
    upstream.script(Behaviour(kind="status", status=503))
    failed = await client.post(
        "/chat",
        json={"project_id": pid, "message": "again", "session_id": sid},
        headers=owner.headers,
    )
    assert failed.status_code == 502

    response = await client.get(f"/projects/{pid}/usage", headers=owner.headers)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["group_by"] == "day" and report["project_id"] == pid
    totals = report["totals"]
    assert totals["messages"] == 4 and totals["user_messages"] == 2 and totals["replies"] == 2
    assert totals["failed"] == 1 and totals["incomplete"] == 0
    assert totals["total_tokens"] == first_usage["total_tokens"]
    assert totals["feedback"] == {"up": 1, "down": 0}
    assert totals["latency_ms"]["p50"] is not None and totals["latency_ms"]["p95"] is not None
    assert len(report["buckets"]) in (30, 31)
    today = [b for b in report["buckets"] if b["messages"]]
    assert len(today) == 1 and today[0]["messages"] == 4
    assert today[0]["start"].startswith(datetime.now(UTC).date().isoformat())

    # Session totals match.
    session = (await client.get(f"/sessions/{sid}", headers=owner.headers)).json()
    assert session["usage"]["total_tokens"] == totals["total_tokens"]

    # Outside the range: nothing.
    past = datetime.now(UTC) - timedelta(days=400)
    response = await client.get(
        f"/projects/{pid}/usage",
        params={"from": past.isoformat(), "to": (past + timedelta(days=2)).isoformat()},
        headers=owner.headers,
    )
    assert response.json()["totals"]["messages"] == 0
    assert len(response.json()["buckets"]) in (2, 3)
    only_totals = await client.get(
        f"/projects/{pid}/usage", params={"group_by": "none"}, headers=owner.headers
    )
    assert only_totals.json()["buckets"] == [] and only_totals.json()["totals"]["messages"] == 4


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
        {"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
        {"group_by": "week"},
        {"from": "yesterday"},
    ],
)
async def test_usage_rejects_bad_ranges(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    response = await client.get(f"/projects/{pid}/usage", params=params, headers=owner.headers)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


def test_percentile_matches_linear_interpolation() -> None:
    assert percentile([], 0.5) is None
    assert percentile([7], 0.95) == 7
    assert percentile([1, 2, 3, 4], 0.5) == 2.5
    assert percentile(list(range(1, 101)), 0.95) == pytest.approx(95.05)


async def test_regenerate_keeps_the_old_reply_superseded(
    client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    owner, pid, body = await _turn(client)
    sid = body["session_id"]
    upstream.script(Behaviour(content="Second try"))
    response = await client.post(f"/sessions/{sid}/regenerate", headers=owner.headers)
    assert response.status_code == 200, response.text
    again = response.json()
    assert again["session_id"] == sid and again["message"] == body["message"]
    assert again["assistant_message"]["content"] == "Second try"
    # The agent saw the question once, not the superseded answer.
    sent = upstream.last_request["messages"]
    assert sent[-1] == {"role": "user", "content": "What is ML?"} and len(sent) == 2

    listed = await client.get(f"/sessions/{sid}/messages", headers=owner.headers)
    statuses = [m["status"] for m in listed.json()["items"]]
    assert statuses == ["complete", "superseded", "complete"]
    session = (await client.get(f"/sessions/{sid}", headers=owner.headers)).json()
    assert session["message_count"] == 3

    # The next turn's history skips the superseded reply.
    await factories.chat(client, owner, pid, "Thanks", session_id=sid)
    assert [m["content"] for m in upstream.last_request["messages"][1:]] == [
        "What is ML?",
        "Second try",
        "Thanks",
    ]


async def test_regenerate_after_a_failure_retries_the_turn(
    client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    upstream.script(Behaviour(kind="status", status=500))
    failed = await client.post(
        "/chat", json={"project_id": pid, "message": "Hello"}, headers=owner.headers
    )
    sid = failed.json()["error"]["details"][0]["session_id"]
    response = await client.post(f"/sessions/{sid}/regenerate", json={}, headers=owner.headers)
    assert response.status_code == 200
    assert response.json()["assistant_message"]["content"] == "Fake reply to: Hello"


async def test_regenerate_conflicts(client: httpx.AsyncClient) -> None:
    owner, _, body = await _turn(client)
    sid = body["session_id"]
    response = await client.post(
        f"/sessions/{sid}/regenerate", json={"stream": "maybe"}, headers=owner.headers
    )
    assert response.status_code == 422
    response = await client.post(
        f"/sessions/{sid}/regenerate", json={"session_id": sid}, headers=owner.headers
    )
    assert response.status_code == 422


async def test_cancel_and_stream_of_unknown_messages(client: httpx.AsyncClient) -> None:
    owner, _, body = await _turn(client)
    sid = body["session_id"]
    other = uuid.uuid4()
    for method, url in [
        ("POST", f"/sessions/{sid}/messages/{other}/cancel"),
        ("GET", f"/sessions/{sid}/messages/{other}/stream"),
        ("POST", f"/sessions/{uuid.uuid4()}/messages/{other}/cancel"),
    ]:
        response = await client.request(method, url, headers=owner.headers)
        assert response.status_code == 404, (method, url)


async def test_new_routes_are_isolated_between_tenants(client: httpx.AsyncClient) -> None:
    alice, pid, body = await _turn(client)
    bob = await factories.account(client)
    sid = body["session_id"]
    user, reply = body["message"], body["assistant_message"]
    assert isinstance(user, dict) and isinstance(reply, dict)
    calls: list[tuple[str, str, dict[str, object]]] = [
        ("GET", f"/projects/{pid}/usage", {}),
        ("GET", f"/sessions/{sid}/export", {}),
        ("GET", f"/sessions/{sid}/export?format=markdown", {}),
        ("POST", f"/sessions/{sid}/regenerate", {}),
        ("GET", f"/sessions/{sid}/messages/{reply['id']}/stream", {}),
        ("POST", f"/sessions/{sid}/messages/{reply['id']}/cancel", {}),
        ("POST", f"/messages/{reply['id']}/feedback", {"json": {"rating": "down"}}),
    ]
    for method, url, kwargs in calls:
        response = await client.request(method, url, headers=bob.headers, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 404, (method, url, response.text)
        assert "What is ML" not in response.text
    # Bob's token in the query string reaches nothing either.
    token = bob.headers["Authorization"].removeprefix("Bearer ")
    response = await client.get(
        f"/sessions/{sid}/messages/{reply['id']}/stream", params={"access_token": token}
    )
    assert response.status_code == 404
    listed = await client.get(f"/sessions/{sid}/messages", headers=alice.headers)
    assert [m["status"] for m in listed.json()["items"]] == ["complete", "complete"]
    assert listed.json()["items"][1]["feedback"] is None
