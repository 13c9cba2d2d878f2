"""Prometheus metrics at /metrics: requests by route template, LLM calls, tokens, generations."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx

from tests import factories
from tests.fake_openai import Behaviour, FakeOpenAI


def _value(text: str, name: str, **labels: str) -> float:
    """The sample `name{labels}` (labels in any order) from the exposition text."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name} {labels}")


async def test_metrics_count_requests_llm_calls_and_tokens(
    client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    turn = await factories.chat(client, owner, pid, "hello there")
    await client.get(f"/sessions/{turn['session_id']}", headers=owner.headers)
    upstream.script(Behaviour(kind="status", status=500))
    failed = await client.post(
        "/chat", json={"project_id": pid, "message": "x"}, headers=owner.headers
    )
    assert failed.status_code == 502

    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert _value(text, "http_requests_total", method="POST", route="/chat", status="200") == 1
    assert _value(text, "http_requests_total", method="POST", route="/chat", status="502") == 1
    # Ids never become labels: the route template is used.
    assert (
        _value(
            text, "http_requests_total", method="GET", route="/sessions/{session_id}", status="200"
        )
        == 1
    )
    assert turn["session_id"] not in text
    labels = {"provider": "openai", "model": "gpt-4o-mini"}
    assert _value(text, "llm_calls_total", outcome="success", **labels) == 1
    assert _value(text, "llm_calls_total", outcome="LLMServerError", **labels) == 1
    prompt = _value(text, "llm_tokens_total", kind="prompt", **labels)
    assert prompt == turn["usage"]["prompt_tokens"] > 0
    assert _value(text, "llm_call_duration_seconds_count", **labels) == 2
    assert _value(text, "chat_active_generations") == 0
    assert _value(text, "http_request_duration_seconds_count", method="POST", route="/chat") == 2


async def test_metrics_token_protects_the_endpoint(make_client: Callable[..., Any]) -> None:
    client = await make_client(METRICS_TOKEN="scrape-secret")
    assert (await client.get("/metrics")).status_code == 401
    wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    ok = await client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
    assert ok.status_code == 200 and "http_requests_total" in ok.text
