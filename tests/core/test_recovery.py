"""The service recovers by itself when the database drops its connections, and reports a
database outage as 503 (not 500) while it lasts."""

from __future__ import annotations

import os

import httpx
import pytest
from sqlalchemy import text

from app.core.db import create_engine
from app.main import create_app
from tests import factories
from tests.conftest import make_settings
from tests.fake_openai import FakeOpenAI

postgres_only = pytest.mark.skipif(
    not os.environ.get("TEST_DATABASE_URL", "").startswith("postgresql"),
    reason="kills Postgres server connections",
)


@postgres_only
async def test_the_pool_recovers_after_postgres_drops_every_connection(
    client: httpx.AsyncClient, database_url: str, upstream: FakeOpenAI
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    for _ in range(3):  # warm the pool
        assert (await client.get(f"/projects/{pid}", headers=owner.headers)).status_code == 200

    # What a Postgres restart does to the pool: every server connection of the database dies.
    admin = create_engine(make_settings(database_url))
    try:
        async with admin.connect() as connection:
            killed = await connection.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
    finally:
        await admin.dispose()
    assert killed and killed >= 1

    for _ in range(5):
        response = await client.get(f"/projects/{pid}", headers=owner.headers)
        assert response.status_code == 200, response.text
    chat = await client.post(
        "/chat", json={"project_id": pid, "message": "still there?"}, headers=owner.headers
    )
    assert chat.status_code == 200, chat.text


async def test_an_unreachable_database_is_a_503(upstream: FakeOpenAI) -> None:
    # Nothing listens on port 1: every connection attempt is refused.
    settings = make_settings("postgresql+asyncpg://postgres@127.0.0.1:1/nowhere")
    app = create_app(settings, llm_transport=httpx.ASGITransport(upstream.asgi()))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
            base_url="http://testserver",
        ) as client,
    ):
        response = await client.post(
            "/auth/register", json={"email": "a@example.com", "password": "password123"}
        )
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "database_unavailable"
        assert response.headers["retry-after"] == "5"
        assert (await client.get("/ready")).status_code == 503
