"""Test fixtures: a migrated database (SQLite, or Postgres via TEST_DATABASE_URL), a fresh app per
test talking to a fake OpenAI upstream at the wire, and row cleanup between tests.

    TEST_DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1/postgres python3 scripts/dev.py test

With a Postgres URL the suite creates its own throwaway database beside the one named, and drops
it at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from alembic.config import Config
from fastapi import FastAPI
from sqlalchemy import delete, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.core.config import Settings
from app.core.db import create_engine
from app.main import create_app
from app.models import Base
from tests.fake_openai import FakeOpenAI
from tests.kafka import kafka_bootstrap  # noqa: F401 - a fixture
from tests.live import serve
from tests.smtp import SMTPServer

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM_BASE_URL = "http://upstream.test/v1"


def alembic_config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


async def _admin(url: str, sql: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.exec_driver_sql(sql)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def database_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], str]]:
    """Makes empty throwaway databases of the kind under test; drops them at the end."""
    base = os.environ.get("TEST_DATABASE_URL", "")
    created: list[str] = []

    def make() -> str:
        if not base.startswith("postgresql"):
            path = tmp_path_factory.mktemp("db") / "test.db"
            return f"sqlite+aiosqlite:///{path}"
        name = f"chatbot_test_{uuid.uuid4().hex[:12]}"
        asyncio.run(_admin(base, f'CREATE DATABASE "{name}"'))
        created.append(name)
        return make_url(base).set(database=name).render_as_string(hide_password=False)

    yield make
    for name in created:
        asyncio.run(_admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def database_url(database_factory: Callable[[], str]) -> str:
    """The suite's database, migrated once with the real Alembic migrations."""
    url = database_factory()
    command.upgrade(alembic_config(url), "head")
    return url


def make_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings that ignore the developer's .env and environment for everything that matters."""
    values: dict[str, Any] = {
        "DATABASE_URL": database_url,
        "ENVIRONMENT": "development",
        "LLM_PROVIDER": "openai",
        "OPENAI_API_KEY": "sk-test-key",
        "GROQ_API_KEY": None,
        "OPENROUTER_API_KEY": None,
        "LLM_BASE_URL": UPSTREAM_BASE_URL,
        "LLM_MODEL": None,
        "LLM_TIMEOUT": 5.0,
        # One attempt per call unless a test asks for retries (tests/llm/test_resilience.py).
        "LLM_MAX_ATTEMPTS": 1,
        "LLM_RETRY_BASE_SECONDS": 0.05,
        "REDIS_URL": None,
        "CORS_ORIGINS": [],
        "SECRET_KEY": "test-secret-key-with-enough-length-0123456789",
        # Webhook receivers in the tests listen on 127.0.0.1.
        "OUTBOUND_ALLOW_PRIVATE_NETWORKS": True,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
async def cleanup_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(make_settings(database_url))
    yield engine
    await engine.dispose()


@pytest.fixture
async def clean_database(cleanup_engine: AsyncEngine) -> AsyncIterator[None]:
    """Per-test isolation: every row a test writes is deleted after it."""
    yield
    async with cleanup_engine.begin() as connection:
        if connection.dialect.name == "postgresql":  # as the retention purge does
            await connection.execute(text("SET LOCAL app.audit_retention = 'on'"))
        for table in reversed(Base.metadata.sorted_tables):
            await connection.execute(delete(table))


@pytest.fixture
def smtp() -> Iterator[SMTPServer]:
    """A real SMTP server on 127.0.0.1 for the test; `smtp.settings()` points an app at it."""
    with SMTPServer() as server:
        yield server


@pytest.fixture
def upstream() -> FakeOpenAI:
    return FakeOpenAI()


@pytest.fixture
def settings(database_url: str, clean_database: None) -> Settings:
    return make_settings(database_url)


@pytest.fixture
def llm_transport(upstream: FakeOpenAI) -> httpx.AsyncBaseTransport:
    return httpx.ASGITransport(app=upstream.asgi())


@pytest.fixture
async def app(
    settings: Settings, llm_transport: httpx.AsyncBaseTransport
) -> AsyncIterator[FastAPI]:
    application = create_app(settings, llm_transport=llm_transport)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
async def make_client(
    database_url: str, clean_database: None, upstream: FakeOpenAI
) -> AsyncIterator[Callable[..., Any]]:
    """Build one more in-process app with settings overrides (and optionally another LLM
    transport than the fake upstream); returns a client for it. Closed at the test's end."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(
            transport: httpx.AsyncBaseTransport | None = None, **overrides: Any
        ) -> httpx.AsyncClient:
            app = create_app(
                make_settings(database_url, **overrides),
                llm_transport=transport or httpx.ASGITransport(upstream.asgi()),
            )
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                base_url="http://testserver",
            )
            return await stack.enter_async_context(client)

        yield make


@dataclass
class Live:
    upstream: FakeOpenAI
    upstream_url: str
    database_url: str
    stack: contextlib.AsyncExitStack

    async def api(self, **overrides: Any) -> httpx.AsyncClient:
        """Start one more API instance (sharing the database); returns a client for it."""
        values: dict[str, Any] = {
            "LLM_BASE_URL": f"{self.upstream_url}/v1",
            "STREAM_FLUSH_SECONDS": 0.05,
            "STREAM_POLL_SECONDS": 0.05,
            "SHUTDOWN_GRACE_SECONDS": 0,
        }
        settings = make_settings(self.database_url, **(values | overrides))
        url = await self.stack.enter_async_context(serve(create_app(settings)))
        client = httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(20.0))
        return await self.stack.enter_async_context(client)


@pytest.fixture
async def live(database_url: str, clean_database: None) -> AsyncIterator[Live]:
    upstream = FakeOpenAI()
    async with contextlib.AsyncExitStack() as stack:
        upstream_url = await stack.enter_async_context(serve(upstream.asgi()))
        yield Live(upstream, upstream_url, database_url, stack)
