"""The service recovers by itself when the database drops its connections, and reports a
database outage as 503 (not 500) while it lasts."""

from __future__ import annotations

import asyncio
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
    # The restart is over once those backends are gone; a request caught in the middle of it
    # may get a 503 (retryable), the requests after it must all succeed.
    admin = create_engine(make_settings(database_url))
    try:
        async with admin.connect() as connection:
            # Autocommit: pg_stat_activity is read afresh by each statement, not once per
            # transaction.
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            others = (
                "datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'"
            )
            killed = (
                (
                    await connection.execute(
                        text(f"SELECT pid FROM pg_stat_activity WHERE {others}")  # noqa: S608
                    )
                )
                .scalars()
                .all()
            )
            for pid_ in killed:
                await connection.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid_})
            for _ in range(100):  # at most 5 s
                left = await connection.scalar(
                    text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)"),
                    {"pids": list(killed)},
                )
                if not left:
                    break
                await asyncio.sleep(0.05)
            assert not left
    finally:
        await admin.dispose()
    assert len(killed) >= 1
    await asyncio.sleep(0.2)  # the client's event loop sees the closed sockets

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
