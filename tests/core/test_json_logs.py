"""Structured JSON logs: one line per request and one per LLM call, with the documented fields."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import httpx

from app.main import create_app
from tests import factories
from tests.conftest import make_settings
from tests.fake_openai import FakeOpenAI


async def test_json_lines_for_requests_and_llm_calls(
    database_url: str, clean_database: None, upstream: FakeOpenAI
) -> None:
    app = create_app(
        make_settings(database_url, LOG_FORMAT="json", LOG_LEVEL="INFO"),
        llm_transport=httpx.ASGITransport(upstream.asgi()),
    )
    stream = io.StringIO()
    handler = logging.getLogger("app").handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client,
    ):
        owner = await factories.account(client)
        pid = (await factories.create_project(client, owner))["id"]
        turn = await factories.chat(client, owner, pid, "a private question")
        me = (await client.get("/users/me", headers=owner.headers)).json()["workspace_id"]
        key = (await factories.api_key(client, owner, pid))["key"]
        slug = (await client.get(f"/projects/{pid}", headers=owner.headers)).json()["slug"]
        streamed = await client.post(
            "/v1/chat/completions",
            json={"model": slug, "messages": [{"role": "user", "content": "hi"}], "stream": True},
            headers=factories.key_headers(key),
        )
        assert streamed.status_code == 200 and "[DONE]" in streamed.text
    lines: list[dict[str, Any]] = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert all({"time", "level", "logger", "request_id", "message"} <= set(line) for line in lines)

    request = next(line for line in lines if line.get("route") == "/chat")
    assert request["event"] == "request" and request["status"] == 200
    assert request["method"] == "POST" and request["duration_ms"] >= 0
    assert request["workspace_id"] == me and request["user_id"] == owner.user_id
    assert request["request_id"] != "-"

    call = next(line for line in lines if line.get("event") == "llm_call")
    assert call["outcome"] == "success" and call["provider"] == "openai"
    assert call["model"] == "gpt-4o-mini" and call["attempts"] == 1
    assert call["total_tokens"] == turn["usage"]["total_tokens"] and call["latency_ms"] >= 0
    assert call["request_id"] == request["request_id"]
    assert "a private question" not in stream.getvalue()
    streamed_call = next(
        line
        for line in lines
        if line.get("event") == "llm_call" and line["logger"] == "app.chat.stateless"
    )
    assert streamed_call["outcome"] == "success" and streamed_call["attempts"] == 1
    assert streamed_call["total_tokens"] > 0 and streamed_call["model"] == "gpt-4o-mini"
