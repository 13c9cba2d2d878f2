"""Rate limits and token quotas per user, API key, project and end user; brute-force throttles;
counters shared through Redis; and the documented behaviour when Redis is unreachable."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests import factories

REDIS_URL = "redis://127.0.0.1:6379/0"


async def _chat(
    client: httpx.AsyncClient, headers: dict[str, str], pid: str, message: str = "hi"
) -> httpx.Response:
    return await client.post("/chat", json={"project_id": pid, "message": message}, headers=headers)


def _assert_limited(
    response: httpx.Response, scope: str, limit: int, window_seconds: int = 60
) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(response.headers["retry-after"]) <= window_seconds
    assert response.headers["x-ratelimit-limit"] == str(limit)
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert response.headers["x-ratelimit-scope"] == scope
    assert int(response.headers["x-ratelimit-reset"]) > 0


async def test_each_end_user_has_their_own_limit(make_client: Callable[..., Any]) -> None:
    client = await make_client()
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner, end_user_rate_limit_per_minute=2))["id"]
    key = (await factories.api_key(client, owner, pid))["key"]
    alice, bob = factories.key_headers(key, "alice"), factories.key_headers(key, "bob")
    assert [(await _chat(client, alice, pid)).status_code for _ in range(2)] == [200, 200]
    _assert_limited(await _chat(client, alice, pid), "end_user", 2)
    assert (await _chat(client, bob, pid)).status_code == 200
    # The stateless and OpenAI-compatible endpoints count against the same limits.
    seed = await client.post(
        "/api/v1/chat", json={"message": "x", "user_id": "alice"}, headers=alice
    )
    _assert_limited(seed, "end_user", 2)
    project = (await client.get(f"/projects/{pid}", headers=owner.headers)).json()
    oai = await client.post(
        "/v1/chat/completions",
        json={
            "model": project["slug"],
            "messages": [{"role": "user", "content": "x"}],
            "user": "bob",
        },
        headers=factories.key_headers(key),
    )
    assert oai.status_code == 200
    oai = await client.post(
        "/v1/chat/completions",
        json={
            "model": project["slug"],
            "messages": [{"role": "user", "content": "x"}],
            "user": "bob",
        },
        headers=factories.key_headers(key),
    )
    assert oai.status_code == 429 and oai.json()["error"]["type"] == "rate_limit_error"


async def test_key_project_and_user_limits(make_client: Callable[..., Any]) -> None:
    client = await make_client(RATE_LIMIT_USER_PER_MINUTE=3)
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner, rate_limit_per_minute=5))["id"]
    key = (await factories.api_key(client, owner, pid, rate_limit_per_minute=1))["key"]
    assert (await _chat(client, factories.key_headers(key, "u1"), pid)).status_code == 200
    _assert_limited(await _chat(client, factories.key_headers(key, "u2"), pid), "api_key", 1)

    for _ in range(3):
        assert (await _chat(client, owner.headers, pid)).status_code == 200
    _assert_limited(await _chat(client, owner.headers, pid), "user", 3)

    # The project's limit (5) holds across callers: 1 (key) + 3 (user) + 1 more.
    other_key = (await factories.api_key(client, owner, pid))["key"]
    assert (await _chat(client, factories.key_headers(other_key, "u3"), pid)).status_code == 200
    _assert_limited(await _chat(client, factories.key_headers(other_key, "u4"), pid), "project", 5)


async def test_token_quota_is_enforced_after_it_is_used_up(
    make_client: Callable[..., Any],
) -> None:
    client = await make_client()
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner, end_user_tokens_per_day=5))["id"]
    key = (await factories.api_key(client, owner, pid))["key"]
    carol = factories.key_headers(key, "carol")
    first = await _chat(client, carol, pid, "a fairly long question with many words")
    assert first.status_code == 200 and first.json()["usage"]["total_tokens"] > 5
    refused = await _chat(client, carol, pid)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "quota_exceeded"
    assert int(refused.headers["retry-after"]) > 3600
    assert (await _chat(client, factories.key_headers(key, "dave"), pid)).status_code == 200


async def test_limits_are_validated(make_client: Callable[..., Any]) -> None:
    client = await make_client()
    owner = await factories.account(client)
    response = await client.post(
        "/projects", json={"name": "p", "tokens_per_day": -1}, headers=owner.headers
    )
    assert response.status_code == 422


async def test_login_and_registration_are_throttled(make_client: Callable[..., Any]) -> None:
    client = await make_client(
        LOGIN_FAILURES_PER_ACCOUNT=3,
        LOGIN_ATTEMPTS_PER_IP_PER_MINUTE=6,
        REGISTRATIONS_PER_IP_PER_HOUR=2,
    )
    user = await factories.register(client)
    for _ in range(3):
        wrong = await client.post(
            "/auth/login", data={"username": user["email"], "password": "wrong-password"}
        )
        assert wrong.status_code == 401
    # The account is locked for a while, even for the right password.
    locked = await client.post(
        "/auth/login", data={"username": user["email"].upper(), "password": factories.PASSWORD}
    )
    _assert_limited(locked, "login_account", 3, 15 * 60)
    # Other accounts still sign in, until the IP's own limit (6 per minute).
    other = await factories.register(client)
    assert (
        await client.post(
            "/auth/login", data={"username": other["email"], "password": factories.PASSWORD}
        )
    ).status_code == 200
    for _ in range(1):
        await client.post("/auth/login", data={"username": other["email"], "password": "x" * 8})
    _assert_limited(
        await client.post(
            "/auth/login", data={"username": other["email"], "password": factories.PASSWORD}
        ),
        "login_ip",
        6,
    )
    third = await client.post(
        "/auth/register", json={"email": "third@example.com", "password": factories.PASSWORD}
    )
    _assert_limited(third, "register_ip", 2, 3600)


async def test_redis_shares_one_limit_between_processes(make_client: Callable[..., Any]) -> None:
    # Redis outlives test runs: per-IP counters (every test client shares one IP) would pile up
    # across runs, so they are off here; the per-end-user limit under test is unique per run.
    shared = {
        "REDIS_URL": REDIS_URL,
        "REGISTRATIONS_PER_IP_PER_HOUR": 0,
        "LOGIN_ATTEMPTS_PER_IP_PER_MINUTE": 0,
    }
    first = await make_client(**shared)
    second = await make_client(**shared)
    owner = await factories.account(first)
    pid = (await factories.create_project(first, owner, end_user_rate_limit_per_minute=3))["id"]
    key = (await factories.api_key(first, owner, pid))["key"]
    headers = factories.key_headers(key, f"user-{uuid.uuid4().hex}")
    codes = [
        (await _chat(client, headers, pid)).status_code for client in (first, second, first, second)
    ]
    assert codes == [200, 200, 200, 429]


@pytest.mark.parametrize(("fail_open", "status"), [(True, 200), (False, 503)])
async def test_unreachable_redis_follows_the_fail_open_setting(
    make_client: Callable[..., Any], fail_open: bool, status: int
) -> None:
    setup = await make_client()
    owner = await factories.account(setup)
    pid = (await factories.create_project(setup, owner))["id"]
    client = await make_client(REDIS_URL="redis://127.0.0.1:1/0", RATE_LIMIT_FAIL_OPEN=fail_open)
    for _ in range(2):
        response = await _chat(client, owner.headers, pid)
        assert response.status_code == status, response.text
    if status == 503:
        assert response.json()["error"]["code"] == "rate_limiter_unavailable"
