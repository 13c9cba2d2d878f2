"""Streaming over real HTTP: uvicorn-served API instances and a uvicorn-served fake upstream that
speaks the OpenAI streaming wire format and can stall, cut and fail mid-stream."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from app.core.db import create_engine
from app.models import ChatMessage
from tests import factories
from tests.conftest import Live, make_settings
from tests.fake_openai import Behaviour
from tests.live import Stream, read_events, stream_request

LONG_REPLY = " ".join(f"word{i}" for i in range(40))


async def _setup(client: httpx.AsyncClient) -> tuple[factories.Account, str]:
    owner = await factories.account(client)
    project = await factories.create_project(client, owner)
    return owner, project["id"]


async def _stream_chat(
    client: httpx.AsyncClient, owner: factories.Account, pid: str, message: str, **extra: Any
) -> tuple[httpx.Response, Stream]:
    body = {"project_id": pid, "message": message, "stream": True, **extra}
    return await stream_request(client, "POST", "/chat", json=body, headers=owner.headers)


async def _messages(client: httpx.AsyncClient, owner: factories.Account, sid: str) -> list[Any]:
    response = await client.get(f"/sessions/{sid}/messages", headers=owner.headers)
    assert response.status_code == 200, response.text
    items: list[Any] = response.json()["items"]
    return items


def _assert_well_formed(stream: Stream) -> None:
    """One `session` first, deltas, exactly one terminal event last, ids as documented."""
    assert stream.names[0] == "session" and stream.events[0].id == "0"
    terminals = [e for e in stream.events if e.event in ("done", "error")]
    assert len(terminals) == 1 and stream.last is terminals[0]
    assert stream.last.id == "end"
    assert set(stream.names[1:-1]) <= {"delta"}
    length = 0
    for event in stream.of("delta"):
        length += len(event.data["content"])
        assert event.id == str(length)


async def test_stream_delivers_deltas_then_done_and_stores_the_reply(live: Live) -> None:
    api = await live.api()
    owner, pid = await _setup(api)
    # Chunks spaced out so they reach the client as separate deltas; with no gap a follower that
    # falls behind may (correctly) get the text accumulated so far in one delta.
    live.upstream.script(Behaviour(chunk_delay=0.02))
    response, stream = await _stream_chat(api, owner, pid, "Hello there")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-request-id"]
    _assert_well_formed(stream)
    assert stream.last.event == "done"
    assert len(stream.of("delta")) > 1
    assert stream.text == "Fake reply to: Hello there"

    ids = stream.events[0].data
    done = stream.last.data
    assert done["message"]["id"] == ids["assistant_message_id"]
    assert done["message"]["content"] == stream.text and done["message"]["status"] == "complete"
    assert done["finish_reason"] == "stop" and done["latency_ms"] >= 0
    assert done["usage"]["total_tokens"] > 0 and done["usage"] == done["message"]["usage"]
    # The upstream was asked to stream, with usage in the final chunk.
    assert live.upstream.last_request["stream"] is True
    assert live.upstream.last_request["stream_options"] == {"include_usage": True}

    user, reply = await _messages(api, owner, ids["session_id"])
    assert user["id"] == ids["message_id"] and user["content"] == "Hello there"
    assert reply["content"] == stream.text and reply["status"] == "complete"
    session = (await api.get(f"/sessions/{ids['session_id']}", headers=owner.headers)).json()
    assert session["usage"] == done["usage"] and session["title"] == "Hello there"


async def test_accept_header_asks_for_a_stream_and_stream_false_wins(live: Live) -> None:
    api = await live.api()
    owner, pid = await _setup(api)
    headers = {**owner.headers, "Accept": "text/event-stream"}
    body = {"project_id": pid, "message": "Hi"}
    response, stream = await stream_request(api, "POST", "/chat", json=body, headers=headers)
    assert response.status_code == 200 and stream.last.event == "done"

    response = await api.post("/chat", json={**body, "stream": False}, headers=headers)
    assert response.status_code == 200
    assert response.json()["assistant_message"]["content"] == "Fake reply to: Hi"


async def test_errors_before_the_stream_are_plain_json(live: Live) -> None:
    api = await live.api()
    owner, pid = await _setup(api)
    body = {"project_id": pid, "message": "Hi", "stream": True}
    cases = [
        ({}, body, 401, "not_authenticated"),
        (owner.headers, {**body, "project_id": "00000000-0000-0000-0000-000000000000"}, 404, None),
        (owner.headers, {**body, "message": "   "}, 422, "validation_error"),
        (
            owner.headers,
            {**body, "session_id": "00000000-0000-0000-0000-000000000000"},
            404,
            "session_not_found",
        ),
    ]
    for headers, payload, status, code in cases:
        response = await api.post("/chat", json=payload, headers=headers)
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/json")
        if code:
            assert response.json()["error"]["code"] == code
    assert live.upstream.requests == []


@pytest.mark.parametrize(
    ("behaviour", "code", "status", "partial"),
    [
        (Behaviour(cut_after=3), "llm_unavailable", "incomplete", "Fake reply to:"),
        (Behaviour(garbage_after=3), "llm_bad_response", "incomplete", "Fake reply to:"),
        (Behaviour(error_after=3), "llm_upstream_error", "incomplete", "Fake reply to:"),
        (Behaviour(kind="status", status=500), "llm_upstream_error", "failed", ""),
        (
            Behaviour(kind="status", status=429, headers={"Retry-After": "7"}),
            "llm_rate_limited",
            "failed",
            "",
        ),
        (Behaviour(kind="not_sse"), "llm_bad_response", "failed", ""),
    ],
    ids=["cut", "garbage", "error-payload", "http-500", "http-429", "not-sse"],
)
async def test_upstream_failures_end_in_one_error_event_with_the_partial_reply_kept(
    live: Live, behaviour: Behaviour, code: str, status: str, partial: str
) -> None:
    api = await live.api()
    owner, pid = await _setup(api)
    live.upstream.script(behaviour)
    response, stream = await _stream_chat(api, owner, pid, "Tell me")
    assert response.status_code == 200
    _assert_well_formed(stream)
    assert stream.last.event == "error"
    assert stream.last.data["error"]["code"] == code
    assert stream.last.data["error"]["message"]
    assert stream.text == partial
    stored = stream.last.data["message"]
    assert stored["status"] == status and stored["content"] == partial
    assert stored["error"]["code"] == code

    sid = stream.events[0].data["session_id"]
    user, reply = await _messages(api, owner, sid)
    assert user["content"] == "Tell me" and user["status"] == "complete"
    assert reply["status"] == status and reply["content"] == partial


async def test_slow_upstream_gets_keepalive_pings(live: Live) -> None:
    api = await live.api(STREAM_PING_SECONDS=0.2)
    owner, pid = await _setup(api)
    live.upstream.script(Behaviour(stall_before=1, stall_seconds=1.0))
    _, stream = await _stream_chat(api, owner, pid, "Hi")
    assert stream.comments.count("ping") >= 3
    assert stream.last.event == "done" and stream.text == "Fake reply to: Hi"


async def test_an_upstream_that_stalls_past_the_timeout_ends_in_llm_timeout(live: Live) -> None:
    api = await live.api(LLM_TIMEOUT=0.5)
    owner, pid = await _setup(api)
    live.upstream.script(Behaviour(stall_before=2, stall_seconds=3.0))
    _, stream = await _stream_chat(api, owner, pid, "Hi")
    _assert_well_formed(stream)
    assert stream.last.event == "error"
    assert stream.last.data["error"]["code"] == "llm_timeout"
    assert stream.text == "Fake reply"
    assert stream.last.data["message"]["status"] == "incomplete"


async def test_disconnect_then_resume_on_another_instance_gets_the_full_reply(
    live: Live,
) -> None:
    first, second = await live.api(), await live.api()
    owner, pid = await _setup(first)
    live.upstream.script(Behaviour(content=LONG_REPLY, chunk_delay=0.03))
    body = {"project_id": pid, "message": "Long one", "stream": True}
    async with first.stream("POST", "/chat", json=body, headers=owner.headers) as response:
        seen = await read_events(response, stop_after=4)  # session + 3 deltas, then hang up
    assert seen.names == ["session", "delta", "delta", "delta"]
    ids = seen.events[0].data
    last_id = seen.last.id
    assert last_id == str(len(seen.text))

    url = f"/sessions/{ids['session_id']}/messages/{ids['assistant_message_id']}/stream"
    response, rest = await stream_request(
        second, "GET", url, headers={**owner.headers, "Last-Event-ID": last_id}
    )
    assert response.status_code == 200
    assert rest.names[0] == "delta" and rest.last.event == "done"
    assert rest.events[0].id != "0"
    assert seen.text + rest.text == LONG_REPLY
    assert rest.last.data["message"]["content"] == LONG_REPLY

    _, reply = await _messages(second, owner, ids["session_id"])
    assert reply["status"] == "complete" and reply["content"] == LONG_REPLY


async def test_a_disconnected_client_does_not_stop_the_reply(live: Live) -> None:
    api = await live.api()
    owner, pid = await _setup(api)
    live.upstream.script(Behaviour(content=LONG_REPLY, chunk_delay=0.02))
    body = {"project_id": pid, "message": "Long one", "stream": True}
    async with api.stream("POST", "/chat", json=body, headers=owner.headers) as response:
        seen = await read_events(response, stop_after=2)
    sid = seen.events[0].data["session_id"]
    for _ in range(200):
        _, reply = await _messages(api, owner, sid)
        if reply["status"] != "pending":
            break
        # While it runs, what has arrived is already stored.
        await asyncio.sleep(0.05)
    assert reply["status"] == "complete" and reply["content"] == LONG_REPLY


async def test_following_a_finished_reply_and_last_event_id_forms(live: Live) -> None:
    api = await live.api()
    owner, pid = await _setup(api)
    _, stream = await _stream_chat(api, owner, pid, "Hi")
    ids = stream.events[0].data
    url = f"/sessions/{ids['session_id']}/messages/{ids['assistant_message_id']}/stream"

    _, replay = await stream_request(api, "GET", url, headers=owner.headers)
    assert replay.names == ["session", "delta", "done"]
    assert replay.events[0].data == ids and replay.text == stream.text

    _, tail = await stream_request(api, "GET", url, headers={**owner.headers, "Last-Event-ID": "9"})
    assert tail.names == ["delta", "done"] and tail.text == stream.text[9:]

    # EventSource-style: token and last id in the query string.
    token = owner.headers["Authorization"].removeprefix("Bearer ")
    _, query = await stream_request(api, "GET", f"{url}?access_token={token}&last_event_id=9")
    assert query.text == stream.text[9:]

    response = await api.get(url, headers={**owner.headers, "Last-Event-ID": "end"})
    assert response.status_code == 204 and response.content == b""
    response = await api.get(url, headers={**owner.headers, "Last-Event-ID": "nope"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_last_event_id"
    response = await api.get(
        f"/sessions/{ids['session_id']}/messages/{ids['message_id']}/stream", headers=owner.headers
    )
    assert response.status_code == 409 and response.json()["error"]["code"] == "not_a_reply"
    assert (await api.get(url)).status_code == 401


async def test_cancel_from_another_instance_stops_the_stream(live: Live) -> None:
    first, second = await live.api(), await live.api()
    owner, pid = await _setup(first)
    live.upstream.script(Behaviour(content=LONG_REPLY, stall_before=3, stall_seconds=10.0))
    body = {"project_id": pid, "message": "Go", "stream": True}
    async with first.stream("POST", "/chat", json=body, headers=owner.headers) as response:
        stream = await read_events(response, stop_after=2)  # session + the first delta
        ids = stream.events[0].data
        url = f"/sessions/{ids['session_id']}/messages/{ids['assistant_message_id']}/cancel"
        cancelled = await second.post(url, headers=owner.headers)
        await read_events(response, stream)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "incomplete"
    assert cancelled.json()["error"]["code"] == "cancelled"
    _assert_well_formed(stream)
    assert stream.last.event == "error" and stream.last.data["error"]["code"] == "cancelled"
    assert stream.text == "word0 word1 word2"
    assert stream.last.data["message"]["content"] == "word0 word1 word2"

    # Cancelling a finished reply changes nothing; a user message is not a reply.
    again = await first.post(url, headers=owner.headers)
    assert again.status_code == 200 and again.json() == cancelled.json()
    user_url = f"/sessions/{ids['session_id']}/messages/{ids['message_id']}/cancel"
    assert (await first.post(user_url, headers=owner.headers)).status_code == 409


async def test_cancel_on_the_generating_instance_is_immediate(live: Live) -> None:
    api = await live.api(STREAM_FLUSH_SECONDS=5.0, STREAM_STALE_SECONDS=60)
    owner, pid = await _setup(api)
    live.upstream.script(Behaviour(stall_before=1, stall_seconds=10.0))
    body = {"project_id": pid, "message": "Go", "stream": True}
    async with api.stream("POST", "/chat", json=body, headers=owner.headers) as response:
        stream = await read_events(response, stop_after=2)
        ids = stream.events[0].data
        url = f"/sessions/{ids['session_id']}/messages/{ids['assistant_message_id']}/cancel"
        cancelled = await api.post(url, headers=owner.headers)
        await read_events(response, stream)
    assert cancelled.status_code == 200 and cancelled.json()["content"] == "Fake"
    assert stream.last.data["error"]["code"] == "cancelled"


async def test_a_reply_whose_process_died_is_reported_as_interrupted(live: Live) -> None:
    api = await live.api()
    owner, pid = await _setup(api)
    _, stream = await _stream_chat(api, owner, pid, "Hi")
    ids = stream.events[0].data
    # Make the stored reply look like a pending one whose generator stopped beating long ago.
    engine = create_engine(make_settings(live.database_url))
    try:
        async with engine.begin() as connection:
            await connection.execute(
                update(ChatMessage)
                .where(ChatMessage.id == uuid.UUID(ids["assistant_message_id"]))
                .values(
                    status="pending",
                    content="Fake reply",
                    heartbeat_at=datetime.now(UTC) - timedelta(minutes=10),
                )
            )
    finally:
        await engine.dispose()
    url = f"/sessions/{ids['session_id']}/messages/{ids['assistant_message_id']}/stream"
    _, follow = await stream_request(api, "GET", url, headers=owner.headers)
    assert follow.last.event == "error"
    assert follow.last.data["error"]["code"] == "generation_interrupted"
    assert follow.text == "Fake reply"
    _, reply = await _messages(api, owner, ids["session_id"])
    assert reply["status"] == "incomplete" and reply["error"]["code"] == "generation_interrupted"


async def test_shutdown_stores_running_replies_as_interrupted(live: Live) -> None:
    doomed = await live.api()
    survivor = await live.api()
    owner, pid = await _setup(survivor)
    live.upstream.script(Behaviour(stall_before=1, stall_seconds=30.0))
    body = {"project_id": pid, "message": "Go", "stream": True}
    async with doomed.stream("POST", "/chat", json=body, headers=owner.headers) as response:
        stream = await read_events(response, stop_after=2)
    ids = stream.events[0].data
    await live.stack.aclose()  # stops every server, the generating one included
    api = await live.api()
    _, reply = await _messages(api, owner, ids["session_id"])
    assert reply["status"] == "incomplete" and reply["content"] == "Fake"
    assert reply["error"]["code"] == "generation_interrupted"


async def test_deleting_the_session_mid_stream_ends_it(live: Live) -> None:
    api = await live.api()
    owner, pid = await _setup(api)
    live.upstream.script(Behaviour(stall_before=1, stall_seconds=10.0))
    body = {"project_id": pid, "message": "Go", "stream": True}
    async with api.stream("POST", "/chat", json=body, headers=owner.headers) as response:
        stream = await read_events(response, stop_after=2)
        sid = stream.events[0].data["session_id"]
        assert (await api.delete(f"/sessions/{sid}", headers=owner.headers)).status_code == 204
        await read_events(response, stream)
    assert stream.last.event == "error"
    assert stream.last.data["error"]["code"] == "reply_deleted"


async def test_regenerate_streams_a_new_reply_and_supersedes_the_old(live: Live) -> None:
    api = await live.api()
    owner, pid = await _setup(api)
    _, first = await _stream_chat(api, owner, pid, "Hi")
    sid = first.events[0].data["session_id"]
    live.upstream.script(Behaviour(content="A better answer"))
    _, again = await stream_request(
        api, "POST", f"/sessions/{sid}/regenerate", json={"stream": True}, headers=owner.headers
    )
    _assert_well_formed(again)
    assert again.text == "A better answer"
    assert again.events[0].data["message_id"] == first.events[0].data["message_id"]
    _user, old, new = await _messages(api, owner, sid)
    assert old["status"] == "superseded" and old["content"] == "Fake reply to: Hi"
    assert new["status"] == "complete" and new["content"] == "A better answer"
    assert live.upstream.last_request["messages"][-1] == {"role": "user", "content": "Hi"}
