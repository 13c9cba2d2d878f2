from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from tests import factories
from tests.fake_openai import Behaviour, FakeOpenAI


async def _setup(
    client: httpx.AsyncClient, **project_fields: object
) -> tuple[factories.Account, str]:
    owner = await factories.account(client)
    project = await factories.create_project(client, owner, **project_fields)
    return owner, project["id"]


async def test_first_message_creates_a_session(
    client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    owner, pid = await _setup(client)
    body = await factories.chat(client, owner, pid, "What is machine learning?")
    session_id = body["session_id"]
    user, reply = body["message"], body["assistant_message"]
    assert user["role"] == "user" and user["content"] == "What is machine learning?"
    assert user["chat_session_id"] == session_id and user["status"] == "complete"
    assert reply["role"] == "assistant" and reply["status"] == "complete"
    assert reply["content"] == "Fake reply to: What is machine learning?"
    assert reply["provider"] == "openai" and reply["model"] == "gpt-4o-mini"
    assert reply["finish_reason"] == "stop" and reply["latency_ms"] >= 0
    assert body["usage"] == reply["usage"] and body["usage"]["total_tokens"] > 0
    assert reply["timestamp"] >= user["timestamp"]
    # No prompts yet: a sensible default system message, then the user's message.
    sent = upstream.last_request["messages"]
    assert sent == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is machine learning?"},
    ]
    assert upstream.headers[-1]["authorization"] == "Bearer sk-test-key"

    session = (await client.get(f"/sessions/{session_id}", headers=owner.headers)).json()
    assert session["project_id"] == pid and session["message_count"] == 2
    assert session["title"] == "What is machine learning?"


async def test_conversation_continues_with_history_and_prompts(
    client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    owner, pid = await _setup(client)
    await factories.create_prompt(client, owner, pid, content="Second rule", position=2)
    await factories.create_prompt(client, owner, pid, content="First rule", position=1)
    await factories.create_prompt(client, owner, pid, content="Inactive", is_active=False)
    first = await factories.chat(client, owner, pid, "Hello")
    await factories.chat(client, owner, pid, "And then?", session_id=first["session_id"])
    assert upstream.last_request["messages"] == [
        {"role": "system", "content": "First rule"},
        {"role": "system", "content": "Second rule"},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Fake reply to: Hello"},
        {"role": "user", "content": "And then?"},
    ]


async def test_history_window_limits_the_context(
    client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    owner, pid = await _setup(client, history_window=2)
    sid = (await factories.chat(client, owner, pid, "one"))["session_id"]
    await factories.chat(client, owner, pid, "two", session_id=sid)
    await factories.chat(client, owner, pid, "three", session_id=sid)
    messages = upstream.last_request["messages"]
    assert [m["content"] for m in messages[1:]] == ["two", "Fake reply to: two", "three"]

    await client.patch(f"/projects/{pid}", json={"history_window": 0}, headers=owner.headers)
    await factories.chat(client, owner, pid, "four", session_id=sid)
    assert [m["role"] for m in upstream.last_request["messages"]] == ["system", "user"]


@contextlib.contextmanager
def recorded_statements(app: FastAPI) -> Iterator[list[tuple[str, Any]]]:
    """(SQL, parameters) of every statement sent meanwhile: through SQLAlchemy, and on
    Postgres also those the hot path runs on asyncpg directly (app/core/driver.py)."""
    statements: list[tuple[str, Any]] = []
    engine = app.state.engine.sync_engine
    drivers: list[Any] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        statements.append((statement, parameters))

    def logged(query: Any) -> None:
        statements.append((query.query, query.args))

    def attach(dbapi_connection: Any, *_: Any) -> None:
        driver = dbapi_connection.driver_connection
        if hasattr(driver, "add_query_logger"):  # asyncpg
            driver.add_query_logger(logged)
            drivers.append(driver)

    event.listen(engine, "before_cursor_execute", record)
    event.listen(engine.pool, "checkout", attach)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)
        event.remove(engine.pool, "checkout", attach)
        for driver in drivers:
            driver.remove_query_logger(logged)


async def test_only_the_history_window_is_read(client: httpx.AsyncClient, app: FastAPI) -> None:
    owner, pid = await _setup(client, history_window=4)
    sid = (await factories.chat(client, owner, pid, "start"))["session_id"]
    for i in range(5):
        await factories.chat(client, owner, pid, f"m{i}", session_id=sid)

    with recorded_statements(app) as statements:
        await factories.chat(client, owner, pid, "last", session_id=sid)
    reads = [
        (sql, params)
        for sql, params in statements
        if sql.lstrip().upper().startswith("SELECT") and "FROM chat_messages" in sql
    ]
    history = [(sql, params) for sql, params in reads if "ORDER BY chat_messages.seq DESC" in sql]
    assert len(history) == 1
    sql, params = history[0]
    assert "LIMIT" in sql.upper() and 4 in list(params)  # type: ignore[call-overload]
    # Every other read of messages is by primary key (storing the reply).
    for sql, _ in reads:
        assert "LIMIT" in sql.upper() or "chat_messages.id =" in sql


async def test_project_llm_settings_reach_the_upstream(
    client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    owner, pid = await _setup(client, model="llama-3.1-8b", temperature=0.1, max_tokens=64)
    body = await factories.chat(client, owner, pid, "hi")
    sent = upstream.last_request
    assert (sent["model"], sent["temperature"], sent["max_tokens"]) == ("llama-3.1-8b", 0.1, 64)
    assert sent["stream"] is False
    assert body["assistant_message"]["model"] == "llama-3.1-8b"
    # Deployment defaults when the project leaves them unset.
    owner2, pid2 = await _setup(client)
    await factories.chat(client, owner2, pid2, "hi")
    assert (upstream.last_request["temperature"], upstream.last_request["max_tokens"]) == (
        0.7,
        1000,
    )


async def test_unknown_foreign_or_mismatched_session_is_404(client: httpx.AsyncClient) -> None:
    owner, pid = await _setup(client)
    other_pid = (await factories.create_project(client, owner))["id"]
    sid = (await factories.chat(client, owner, pid, "hi"))["session_id"]
    stranger, stranger_pid = await _setup(client)

    cases = [
        (owner, {"project_id": pid, "session_id": str(uuid.uuid4())}, "session_not_found"),
        (owner, {"project_id": other_pid, "session_id": sid}, "session_not_found"),
        (stranger, {"project_id": stranger_pid, "session_id": sid}, "session_not_found"),
        (stranger, {"project_id": pid}, "project_not_found"),
        (owner, {"project_id": str(uuid.uuid4())}, "project_not_found"),
    ]
    for who, fields, code in cases:
        response = await client.post(
            "/chat", json={"message": "hello", **fields}, headers=who.headers
        )
        assert response.status_code == 404, fields
        assert response.json()["error"]["code"] == code
    # No silent new session was created anywhere.
    listing = await client.get(f"/projects/{pid}/sessions", headers=owner.headers)
    assert len(listing.json()["items"]) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"project_id": "<missing>", "message": "hi"},
        {"project_id": "not-a-uuid", "message": "hi"},
        {"project_id": None, "message": "hi"},
        {"message": ""},
        {"message": "   \n\t"},
        {"message": "x" * 4001},
        {"message": 42},
        {"message": ["a"]},
        {"message": "hi", "session_id": "nope"},
    ],
)
async def test_chat_rejects_bad_input(client: httpx.AsyncClient, body: dict[str, object]) -> None:
    owner, pid = await _setup(client)
    payload = {"project_id": pid, **body}
    if payload["project_id"] == "<missing>":
        del payload["project_id"]
    response = await client.post("/chat", json=payload, headers=owner.headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"


async def test_message_limit_is_configurable_and_inclusive(client: httpx.AsyncClient) -> None:
    owner, pid = await _setup(client)
    await factories.chat(client, owner, pid, "x" * 4000)


@pytest.mark.parametrize(
    ("behaviour", "status", "code"),
    [
        (Behaviour(kind="status", status=500), 502, "llm_upstream_error"),
        (Behaviour(kind="status", status=503), 502, "llm_upstream_error"),
        (Behaviour(kind="status", status=400), 502, "llm_request_rejected"),
        (Behaviour(kind="status", status=404), 502, "llm_request_rejected"),
        (Behaviour(kind="status", status=401), 502, "llm_auth_failed"),
        (Behaviour(kind="invalid_json"), 502, "llm_bad_response"),
        (Behaviour(kind="embedded_error"), 502, "llm_upstream_error"),
        (Behaviour(kind="reply", body=None, content=None, usage=True, status=200), 200, None),
    ],
)
async def test_upstream_failures_are_typed_and_the_message_is_kept(
    client: httpx.AsyncClient, upstream: FakeOpenAI, behaviour: Behaviour, status: int, code: str
) -> None:
    owner, pid = await _setup(client)
    upstream.script(behaviour)
    response = await client.post(
        "/chat", json={"project_id": pid, "message": "keep me"}, headers=owner.headers
    )
    assert response.status_code == status, response.text
    if code is None:
        return
    error = response.json()["error"]
    assert error["code"] == code
    ids = error["details"][0]
    messages = (
        await client.get(f"/sessions/{ids['session_id']}/messages", headers=owner.headers)
    ).json()["items"]
    assert [m["content"] for m in messages] == ["keep me", ""]
    assert messages[0]["id"] == ids["message_id"] and messages[0]["status"] == "complete"
    failed = messages[1]
    assert failed["id"] == ids["assistant_message_id"]
    assert failed["status"] == "failed" and failed["error"]["code"] == code


async def test_upstream_429_is_passed_on_with_retry_after(
    client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    owner, pid = await _setup(client)
    upstream.script(Behaviour(kind="status", status=429, headers={"Retry-After": "17"}))
    response = await client.post(
        "/chat", json={"project_id": pid, "message": "hi"}, headers=owner.headers
    )
    assert response.status_code == 429
    assert response.headers["retry-after"] == "17"
    assert response.json()["error"]["code"] == "llm_rate_limited"

    upstream.script(Behaviour(kind="status", status=429))
    response = await client.post(
        "/chat", json={"project_id": pid, "message": "hi"}, headers=owner.headers
    )
    assert int(response.headers["retry-after"]) > 0


def _raising_transport(exc: Exception) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    ("llm_transport", "status", "code"),
    [
        (_raising_transport(httpx.ReadTimeout("slow")), 504, "llm_timeout"),
        (_raising_transport(httpx.ConnectTimeout("slow")), 504, "llm_timeout"),
        (_raising_transport(httpx.ConnectError("refused")), 503, "llm_unavailable"),
        (_raising_transport(httpx.RemoteProtocolError("cut")), 503, "llm_unavailable"),
    ],
)
async def test_transport_failures(client: httpx.AsyncClient, status: int, code: str) -> None:
    owner, pid = await _setup(client)
    response = await client.post(
        "/chat", json={"project_id": pid, "message": "hi"}, headers=owner.headers
    )
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    sid = response.json()["error"]["details"][0]["session_id"]
    session = (await client.get(f"/sessions/{sid}", headers=owner.headers)).json()
    assert session["message_count"] == 2


async def test_unconfigured_provider_is_503_and_message_kept(client: httpx.AsyncClient) -> None:
    owner, pid = await _setup(client, provider="groq")
    response = await client.post(
        "/chat", json={"project_id": pid, "message": "hi"}, headers=owner.headers
    )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "llm_not_configured"
    sid = response.json()["error"]["details"][0]["session_id"]
    items = (await client.get(f"/sessions/{sid}/messages", headers=owner.headers)).json()["items"]
    assert items[0]["content"] == "hi" and items[1]["status"] == "failed"


async def test_failed_replies_are_left_out_of_the_next_context(
    client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    owner, pid = await _setup(client)
    sid = (await factories.chat(client, owner, pid, "one"))["session_id"]
    upstream.script(Behaviour(kind="status", status=500))
    await client.post(
        "/chat",
        json={"project_id": pid, "message": "two", "session_id": sid},
        headers=owner.headers,
    )
    await factories.chat(client, owner, pid, "three", session_id=sid)
    contents = [m["content"] for m in upstream.last_request["messages"][1:]]
    assert contents == ["one", "Fake reply to: one", "two", "three"]


async def test_echo_provider_answers_without_a_key(database_url: str, clean_database: None) -> None:
    from app.main import create_app
    from tests.conftest import make_settings

    settings = make_settings(
        database_url, LLM_PROVIDER=None, OPENAI_API_KEY=None, LLM_BASE_URL=None
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            health = (await client.get("/health")).json()
            assert health["llm"]["provider"] == "echo" and health["llm"]["warning"]
            owner, pid = await _setup(client)
            body = await factories.chat(client, owner, pid, "What is machine learning?")
    assert body["assistant_message"]["content"] == "Echo: What is machine learning?"
    assert body["assistant_message"]["provider"] == "echo"
