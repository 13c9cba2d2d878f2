"""Callers are cached for AUTH_CACHE_SECONDS: a revoked key stops working at once where it was
revoked, and within that time everywhere else; a user deactivated in the database too."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.cache import Found, PrincipalCache
from app.auth.dependencies import Principal
from app.models import User
from tests import factories

Make = Callable[..., Awaitable[httpx.AsyncClient]]


async def status_within(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], want: int, seconds: float
) -> float:
    """Seconds until GET `url` answers `want` (fails after `seconds`)."""
    started = time.monotonic()
    while True:
        response = await client.get(url, headers=headers)
        if response.status_code == want:
            return time.monotonic() - started
        assert time.monotonic() - started < seconds, response.text
        await asyncio.sleep(0.05)


async def test_a_revoked_key_stops_at_once_here_and_within_the_cache_time_elsewhere(
    client: httpx.AsyncClient, make_client: Make
) -> None:
    other_process = await make_client(AUTH_CACHE_SECONDS=0.5)
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    created = await factories.api_key(client, owner, pid, scopes=["chat", "sessions:read"])
    headers = factories.key_headers(created["key"])
    url = f"/projects/{pid}/sessions"
    for api in (client, other_process):  # both processes cache the key
        assert (await api.get(url, headers=headers)).status_code == 200

    revoked = await client.delete(
        f"/projects/{pid}/api-keys/{created['id']}", headers=owner.headers
    )
    assert revoked.status_code == 204

    assert (await client.get(url, headers=headers)).status_code == 401
    assert await status_within(other_process, url, headers, 401, seconds=3) <= 1.5


async def test_a_user_deactivated_in_the_database_is_refused_within_the_cache_time(
    make_client: Make, cleanup_engine: AsyncEngine
) -> None:
    cached = await make_client(AUTH_CACHE_SECONDS=0.5)
    uncached = await make_client(AUTH_CACHE_SECONDS=0)
    owner = await factories.account(cached)
    for api in (cached, uncached):
        assert (await api.get("/projects", headers=owner.headers)).status_code == 200

    async with cleanup_engine.begin() as connection:
        await connection.execute(
            update(User).where(User.id == uuid.UUID(owner.user_id)).values(is_active=False)
        )

    assert (await uncached.get("/projects", headers=owner.headers)).status_code == 401
    assert await status_within(cached, "/projects", owner.headers, 401, seconds=3) <= 1.5


def _principal() -> Principal:
    return Principal(
        user_id=uuid.uuid4(),
        email="a@example.com",
        created_at=datetime.now(UTC),
        workspace_id=uuid.uuid4(),
        role="owner",
    )


async def test_concurrent_requests_for_an_expired_caller_share_one_lookup() -> None:
    cache = PrincipalCache(ttl_seconds=60)
    principal, calls = _principal(), 0

    async def lookup() -> Found:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return principal, None

    first = await asyncio.gather(*(cache.load("user:1", lookup) for _ in range(20)))
    assert first == [principal] * 20 and calls == 1
    assert await cache.load("user:1", lookup) is principal and calls == 1  # cached now


async def test_a_shared_lookup_survives_the_request_that_started_it_going_away() -> None:
    cache = PrincipalCache(ttl_seconds=60)
    principal, started = _principal(), asyncio.Event()

    async def lookup() -> Found:
        started.set()
        await asyncio.sleep(0.05)
        return principal, None

    leaving = asyncio.create_task(cache.load("key:a", lookup))
    await started.wait()
    staying = asyncio.create_task(cache.load("key:a", lookup))
    leaving.cancel()
    assert await staying is principal
    assert leaving.cancelled()


async def test_an_unknown_caller_or_a_failed_lookup_is_not_cached() -> None:
    cache = PrincipalCache(ttl_seconds=60)
    calls = 0

    async def unknown() -> Found:
        nonlocal calls
        calls += 1
        return None

    async def failing() -> Found:
        raise ConnectionError("database down")

    assert await cache.load("key:x", unknown) is None
    assert await cache.load("key:x", unknown) is None and calls == 2
    results = await asyncio.gather(
        *(cache.load("key:y", failing) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(result, ConnectionError) for result in results)
    assert await cache.load("key:y", unknown) is None  # the next request looks again
