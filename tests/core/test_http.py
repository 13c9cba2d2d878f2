"""The HTTP envelope: one error shape, request ids, size limits, CORS, health and readiness."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI

from app.core.config import Settings
from app.main import create_app
from tests import factories
from tests.conftest import make_settings
from tests.fake_openai import Behaviour, FakeOpenAI


def _assert_error_shape(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert response.headers["x-request-id"]


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    _assert_error_shape(await client.get("/nope"), 404, "not_found")
    _assert_error_shape(await client.put("/projects"), 405, "method_not_allowed")


async def test_bad_json_and_wrong_content_type(client: httpx.AsyncClient) -> None:
    owner = await factories.account(client)
    bad = await client.post(
        "/projects",
        content=b'{"name": ',
        headers={**owner.headers, "Content-Type": "application/json"},
    )
    _assert_error_shape(bad, 422, "validation_error")
    assert "not valid JSON" in bad.json()["error"]["message"]
    form = await client.post("/projects", data={"name": "x"}, headers=owner.headers)
    _assert_error_shape(form, 422, "validation_error")
    array = await client.post("/projects", json=[1, 2], headers=owner.headers)
    _assert_error_shape(array, 422, "validation_error")


async def test_body_size_limit(client: httpx.AsyncClient) -> None:
    owner = await factories.account(client)
    big = b'{"name": "' + b"x" * (1024 * 1024) + b'"}'
    declared = await client.post(
        "/projects", content=big, headers={**owner.headers, "Content-Type": "application/json"}
    )
    _assert_error_shape(declared, 413, "payload_too_large")

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(20):
            yield b"x" * 65536

    streamed = await client.post(
        "/chat", content=chunks(), headers={**owner.headers, "Content-Type": "application/json"}
    )
    _assert_error_shape(streamed, 413, "payload_too_large")


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    echoed = await client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    generated = await client.get("/health", headers={"X-Request-ID": "bad id with spaces\x01"})
    assert generated.headers["x-request-id"] != "bad id with spaces\x01"
    assert len(generated.headers["x-request-id"]) == 32
    error = await client.get("/nope", headers={"X-Request-ID": "trace-1"})
    assert error.headers["x-request-id"] == "trace-1"


async def test_unhandled_errors_are_500_without_details(
    settings: Settings, llm_transport: httpx.AsyncBaseTransport
) -> None:
    app = create_app(settings, llm_transport=llm_transport)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internal detail")

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/boom", headers={"X-Request-ID": "r-500"})
    _assert_error_shape(response, 500, "internal_error")
    assert "secret" not in response.text and "Traceback" not in response.text
    assert response.headers["x-request-id"] == "r-500"


async def test_health_and_ready(client: httpx.AsyncClient) -> None:
    health = await client.get("/health")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok" and body["version"]
    assert body["llm"]["provider"] == "openai" and body["llm"]["warning"] is None
    ready = await client.get("/ready")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}


async def test_ready_is_503_when_the_database_is_down() -> None:
    app = create_app(make_settings("postgresql+asyncpg://nobody@127.0.0.1:1/none"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/ready")
            assert (await client.get("/health")).status_code == 200
    _assert_error_shape(response, 503, "not_ready")


async def test_cors_allows_configured_origins(database_url: str, clean_database: None) -> None:
    app = create_app(make_settings(database_url, CORS_ORIGINS=["https://app.example.com"]))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            preflight = await client.options(
                "/chat",
                headers={
                    "Origin": "https://app.example.com",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization,content-type",
                },
            )
            other = await client.get("/health", headers={"Origin": "https://evil.example.com"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "access-control-allow-origin" not in other.headers


async def test_logs_never_contain_secrets_or_bodies(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, upstream: FakeOpenAI
) -> None:
    caplog.set_level(logging.INFO)
    logging.getLogger("app").addHandler(caplog.handler)
    try:
        owner = await factories.account(client, "secretive@example.com")
        pid = (await factories.create_project(client, owner))["id"]
        await factories.chat(client, owner, pid, "my private question")
        await client.post("/auth/login", data={"username": owner.email, "password": "wrongpass1"})
        key = (await factories.api_key(client, owner, pid))["key"]
        await client.post(
            "/api/v1/chat",
            json={"message": "confidential seed message", "context": {"user_name": "Rahasia"}},
            headers={**factories.key_headers(key, "end-user-7"), "Idempotency-Key": "idem-42"},
        )
        slug = (await client.get(f"/projects/{pid}", headers=owner.headers)).json()["slug"]
        upstream.script(Behaviour(kind="status", status=500))
        await client.post(
            "/v1/chat/completions",
            json={"model": slug, "messages": [{"role": "user", "content": "openai secret text"}]},
            headers=factories.key_headers(key),
        )
    finally:
        logging.getLogger("app").removeHandler(caplog.handler)
    text = caplog.text
    assert "path=/chat" in text  # the access log is there
    assert "path=/api/v1/chat" in text and "stateless reply failed" in text
    token = owner.headers["Authorization"].split()[1]
    for secret in (
        factories.PASSWORD,
        "wrongpass1",
        token,
        owner.refresh_token,
        "my private question",
        "sk-test-key",
        key,
        key[12:],
        "confidential seed message",
        "Rahasia",
        "openai secret text",
    ):
        assert secret not in text


async def test_openapi_documents_every_route(app: FastAPI, client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert operation.get("tags"), (method, path)
            assert operation.get("summary"), (method, path)
            assert operation.get("description"), (method, path)
    assert (await client.get("/docs")).status_code == 200


async def test_security_headers_on_every_response(client: httpx.AsyncClient) -> None:
    for response in (await client.get("/health"), await client.get("/projects")):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
        assert response.headers["cache-control"] == "no-store"
        assert "strict-transport-security" not in response.headers  # not in development
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "content-security-policy" not in docs.headers
    assert docs.headers["x-content-type-options"] == "nosniff"


async def test_production_adds_hsts(make_client: Callable[..., Any]) -> None:
    client = await make_client(
        ENVIRONMENT="production", CHANNEL_SECRETS_KEY=Fernet.generate_key().decode()
    )
    response = await client.get("/health")
    assert response.headers["strict-transport-security"].startswith("max-age=")


async def test_nul_characters_are_refused_up_front(client: httpx.AsyncClient) -> None:
    owner = await factories.account(client)
    raw = b'{"name": "bad\\u0000name"}'
    headers = {**owner.headers, "Content-Type": "application/json"}
    response = await client.post("/projects", content=raw, headers=headers)
    assert response.status_code == 422 and response.json()["error"]["code"] == "validation_error"
    assert "NUL" in response.json()["error"]["message"]
    listed = await client.get("/projects?cursor=%00", headers=owner.headers)
    assert listed.status_code == 422
    # The text "\u0000" (an escaped backslash, then u0000) is ordinary text and is kept.
    fine = await client.post("/projects", content=b'{"name": "literal \\\\u0000"}', headers=headers)
    assert fine.status_code == 201 and fine.json()["name"] == "literal \\u0000"


async def test_database_errors_never_carry_statement_values(database_url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from app.core.db import create_engine

    engine = create_engine(make_settings(database_url))
    try:
        async with engine.connect() as connection:
            with pytest.raises(DBAPIError) as failure:
                await connection.execute(
                    text("SELECT * FROM no_such_table WHERE x = :x"), {"x": "private-value-42"}
                )
    finally:
        await engine.dispose()
    assert "private-value-42" not in str(failure.value)
