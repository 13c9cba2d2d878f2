"""Fault injection at the LLM boundary: retries, Retry-After, deadlines, the fallback chain and
circuit breakers. Each case ends in its documented outcome, never a 500, and the user's message
is always stored."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests import factories
from tests.conftest import Live
from tests.fake_openai import Behaviour, FakeOpenAI
from tests.live import stream_request

RETRYING = {"LLM_MAX_ATTEMPTS": 3, "LLM_RETRY_BASE_SECONDS": 0.05, "LLM_RETRY_MAX_SECONDS": 0.2}


@pytest.fixture
def make_client(make_client: Callable[..., Any]) -> Callable[..., Any]:
    """conftest's `make_client`, with retries on by default."""

    def make(transport: httpx.AsyncBaseTransport | None = None, **overrides: Any) -> Any:
        return make_client(transport, **(RETRYING | overrides))

    return make


async def _turn(
    client: httpx.AsyncClient, **project_fields: Any
) -> tuple[factories.Account, str, httpx.Response]:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner, **project_fields))["id"]
    response = await client.post(
        "/chat", json={"project_id": pid, "message": "Hello"}, headers=owner.headers
    )
    return owner, pid, response


async def _stored(client: httpx.AsyncClient, owner: factories.Account, pid: str) -> list[Any]:
    sessions = (await client.get(f"/projects/{pid}/sessions", headers=owner.headers)).json()
    sid = sessions["items"][0]["id"]
    items: list[Any] = (
        await client.get(f"/sessions/{sid}/messages", headers=owner.headers)
    ).json()["items"]
    return items


@pytest.mark.parametrize(
    ("failures", "attempts"),
    [
        ([Behaviour(kind="status", status=500)], 2),
        ([Behaviour(kind="status", status=503), Behaviour(kind="status", status=502)], 3),
        ([Behaviour(kind="status", status=429, headers={"Retry-After": "0"})], 2),
        ([Behaviour(kind="embedded_error")], 2),
    ],
)
async def test_retryable_failures_are_retried_to_success(
    make_client: Callable[..., Any],
    upstream: FakeOpenAI,
    failures: list[Behaviour],
    attempts: int,
) -> None:
    client = await make_client()
    upstream.script(*failures)
    owner, pid, response = await _turn(client)
    assert response.status_code == 200, response.text
    assert response.headers["x-llm-attempts"] == str(attempts)
    assert response.headers["x-llm-fallback"] == "false"
    reply = response.json()["assistant_message"]
    assert reply["status"] == "complete" and reply["attempts"] == attempts
    assert len(upstream.requests) == attempts
    assert (await _stored(client, owner, pid))[1]["attempts"] == attempts


async def test_retry_after_is_honoured_when_it_fits_the_deadline(
    make_client: Callable[..., Any], upstream: FakeOpenAI
) -> None:
    client = await make_client(LLM_TOTAL_TIMEOUT=10)
    upstream.script(Behaviour(kind="status", status=429, headers={"Retry-After": "1"}))
    started = time.monotonic()
    _, _, response = await _turn(client)
    assert response.status_code == 200 and time.monotonic() - started >= 0.9
    assert len(upstream.requests) == 2

    # A Retry-After past the deadline is not waited for: the 429 is reported at once.
    upstream.script(Behaviour(kind="status", status=429, headers={"Retry-After": "60"}))
    started = time.monotonic()
    owner, pid, response = await _turn(client)
    assert time.monotonic() - started < 5
    assert response.status_code == 429 and response.headers["retry-after"] == "60"
    assert response.json()["error"]["code"] == "llm_rate_limited"
    assert len(upstream.requests) == 3
    assert (await _stored(client, owner, pid))[0]["content"] == "Hello"


@pytest.mark.parametrize(
    ("behaviour", "status", "code"),
    [
        (Behaviour(kind="status", status=400), 502, "llm_request_rejected"),
        (Behaviour(kind="status", status=401), 502, "llm_auth_failed"),
        (Behaviour(kind="invalid_json"), 502, "llm_bad_response"),
    ],
)
async def test_other_failures_are_never_retried(
    make_client: Callable[..., Any],
    upstream: FakeOpenAI,
    behaviour: Behaviour,
    status: int,
    code: str,
) -> None:
    client = await make_client()
    upstream.script(behaviour)
    owner, pid, response = await _turn(client)
    assert response.status_code == status and response.json()["error"]["code"] == code
    assert response.headers["x-llm-attempts"] == "1"
    assert len(upstream.requests) == 1
    user, reply = await _stored(client, owner, pid)
    assert user["content"] == "Hello" and reply["status"] == "failed"


async def test_a_hanging_upstream_ends_at_the_turn_deadline(
    make_client: Callable[..., Any], upstream: FakeOpenAI
) -> None:
    client = await make_client(LLM_TOTAL_TIMEOUT=1.0, LLM_TIMEOUT=30, STREAM_STALE_SECONDS=60)
    upstream.script(*[Behaviour(delay=20)] * 3)
    started = time.monotonic()
    owner, pid, response = await _turn(client)
    assert time.monotonic() - started < 5
    assert response.status_code == 504 and response.json()["error"]["code"] == "llm_timeout"
    assert (await _stored(client, owner, pid))[0]["content"] == "Hello"


async def test_a_project_deadline_overrides_the_default(
    make_client: Callable[..., Any], upstream: FakeOpenAI
) -> None:
    client = await make_client(LLM_TOTAL_TIMEOUT=60, LLM_TIMEOUT=30, STREAM_STALE_SECONDS=90)
    upstream.script(*[Behaviour(delay=20)] * 3)
    started = time.monotonic()
    _, _, response = await _turn(client, llm_timeout=1)
    assert response.status_code == 504 and time.monotonic() - started < 5


async def test_an_unreachable_upstream_is_retried_then_reported(
    make_client: Callable[..., Any],
) -> None:
    calls: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        raise httpx.ConnectError("connection refused", request=request)

    client = await make_client(transport=httpx.MockTransport(refuse))
    owner, pid, response = await _turn(client)
    assert response.status_code == 503 and response.json()["error"]["code"] == "llm_unavailable"
    assert response.headers["x-llm-attempts"] == "3" and len(calls) == 3
    assert (await _stored(client, owner, pid))[1]["attempts"] == 3


async def test_the_fallback_chain_answers_when_the_primary_fails(
    make_client: Callable[..., Any], upstream: FakeOpenAI
) -> None:
    client = await make_client(LLM_MAX_ATTEMPTS=2)
    upstream.script(Behaviour(kind="status", status=503), Behaviour(kind="status", status=503))
    owner, pid, response = await _turn(
        client, model="primary-model", fallback_models=[{"model": "backup-model"}]
    )
    assert response.status_code == 200, response.text
    assert [r["model"] for r in upstream.requests] == [
        "primary-model",
        "primary-model",
        "backup-model",
    ]
    assert response.headers["x-llm-fallback"] == "true"
    assert response.headers["x-llm-model"] == "backup-model"
    reply = response.json()["assistant_message"]
    assert reply["model"] == "backup-model" and reply["attempts"] == 3

    # A non-retryable failure does not fall back.
    upstream.script(Behaviour(kind="status", status=400))
    response = await client.post(
        "/chat", json={"project_id": pid, "message": "again"}, headers=owner.headers
    )
    assert response.status_code == 502 and upstream.requests[-1]["model"] == "primary-model"


async def test_fallback_models_are_validated(make_client: Callable[..., Any]) -> None:
    client = await make_client()
    owner = await factories.account(client)
    for bad in (
        [{"provider": "nope", "model": "x"}],
        [{"model": ""}],
        [{"model": "m"}] * 4,
        [{"model": "m", "extra": 1}],
    ):
        response = await client.post(
            "/projects", json={"name": "p", "fallback_models": bad}, headers=owner.headers
        )
        assert response.status_code == 422, bad


async def test_the_circuit_opens_after_repeated_failures_and_shows_in_health(
    make_client: Callable[..., Any], upstream: FakeOpenAI
) -> None:
    client = await make_client(
        LLM_MAX_ATTEMPTS=1, LLM_BREAKER_THRESHOLD=2, LLM_BREAKER_COOLDOWN_SECONDS=60
    )
    upstream.script(Behaviour(kind="status", status=500), Behaviour(kind="status", status=500))
    owner, pid, first = await _turn(client)
    second = await client.post(
        "/chat", json={"project_id": pid, "message": "b"}, headers=owner.headers
    )
    assert first.status_code == second.status_code == 502
    third = await client.post(
        "/chat", json={"project_id": pid, "message": "c"}, headers=owner.headers
    )
    assert third.status_code == 503 and third.json()["error"]["code"] == "llm_circuit_open"
    assert int(third.headers["retry-after"]) > 0
    assert len(upstream.requests) == 2  # the open circuit spared the upstream
    circuits = (await client.get("/health")).json()["llm"]["circuits"]
    assert circuits == [
        {
            "provider": "openai",
            "model": "gpt-4o-mini",
            "state": "open",
            "consecutive_failures": 2,
            "retry_in_seconds": circuits[0]["retry_in_seconds"],
        }
    ]
    assert 0 < circuits[0]["retry_in_seconds"] <= 60


async def test_an_open_circuit_sends_turns_to_the_fallback(
    make_client: Callable[..., Any], upstream: FakeOpenAI
) -> None:
    client = await make_client(
        LLM_MAX_ATTEMPTS=1, LLM_BREAKER_THRESHOLD=1, LLM_BREAKER_COOLDOWN_SECONDS=60
    )
    upstream.script(Behaviour(kind="status", status=500))
    owner, pid, first = await _turn(client, fallback_models=[{"model": "backup"}])
    assert first.status_code == 200 and first.headers["x-llm-fallback"] == "true"
    second = await client.post(
        "/chat", json={"project_id": pid, "message": "b"}, headers=owner.headers
    )
    assert second.status_code == 200
    assert [r["model"] for r in upstream.requests] == ["gpt-4o-mini", "backup", "backup"]


async def test_streams_retry_before_the_first_chunk_but_never_after(live: Live) -> None:
    api = await live.api(**RETRYING)
    owner = await factories.account(api)
    pid = (await factories.create_project(api, owner))["id"]
    body = {"project_id": pid, "message": "one two three", "stream": True}

    live.upstream.script(Behaviour(kind="status", status=503))
    _, stream = await stream_request(api, "POST", "/chat", json=body, headers=owner.headers)
    assert stream.last.event == "done" and stream.last.data["message"]["attempts"] == 2
    assert len(live.upstream.requests) == 2

    live.upstream.script(Behaviour(cut_after=2))
    _, stream = await stream_request(api, "POST", "/chat", json=body, headers=owner.headers)
    assert stream.last.event == "error" and stream.text
    assert stream.last.data["message"]["attempts"] == 1
    assert len(live.upstream.requests) == 3  # text had been sent: no retry


async def test_a_stream_that_sends_nothing_in_time_is_retried(live: Live) -> None:
    api = await live.api(**RETRYING, LLM_FIRST_TOKEN_TIMEOUT=1.5)
    owner = await factories.account(api)
    pid = (await factories.create_project(api, owner))["id"]
    live.upstream.script(Behaviour(stall_before=0, stall_seconds=4))
    body = {"project_id": pid, "message": "hi there", "stream": True}
    _, stream = await stream_request(api, "POST", "/chat", json=body, headers=owner.headers)
    assert stream.last.event == "done", stream.last
    assert stream.last.data["message"]["attempts"] == 2


async def test_a_dropped_connection_is_retried_and_the_retry_answers(
    make_client: Callable[..., Any], upstream: FakeOpenAI
) -> None:
    """The upstream closes the connection without answering, the first two times only."""
    real = httpx.ASGITransport(upstream.asgi())
    drops = 0

    class Flaky(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            nonlocal drops
            if drops < 2:
                drops += 1
                raise httpx.RemoteProtocolError("Server disconnected without sending a response")
            return await real.handle_async_request(request)

    client = await make_client(transport=Flaky())
    owner, pid, response = await _turn(client)
    assert response.status_code == 200, response.text
    assert response.headers["x-llm-attempts"] == "3" and drops == 2
    assert (await _stored(client, owner, pid))[1]["status"] == "complete"
