"""The OpenAI-compatible endpoint, driven by the official `openai` SDK over real HTTP."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests import factories
from tests.conftest import Live
from tests.fake_openai import Behaviour

QUESTION = "What is machine learning?"


async def _sdk(live: Live, **project_fields: Any) -> tuple[openai.AsyncOpenAI, dict[str, Any], Any]:
    api = await live.api()
    owner = await factories.account(api)
    project = await factories.create_project(api, owner, name="Support Bot", **project_fields)
    await factories.create_prompt(api, owner, project["id"], content="You are Sam, for {{x}}.")
    key = await factories.api_key(api, owner, project["id"])
    sdk = openai.AsyncOpenAI(
        base_url=f"{str(api.base_url).rstrip('/')}/v1", api_key=key["key"], max_retries=0
    )
    return sdk, project, (api, owner)


async def test_sdk_non_streaming_completion(live: Live) -> None:
    sdk, project, _ = await _sdk(live)
    async with sdk:
        completion = await sdk.chat.completions.create(
            model=project["slug"],
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": [{"type": "text", "text": QUESTION}]},
            ],
            user="customer-42",
            temperature=0.1,
            max_tokens=50,
        )
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    assert completion.model == "support-bot"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == f"Fake reply to: {QUESTION}"
    assert choice.finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0

    sent = live.upstream.last_request
    assert sent["messages"] == [
        {"role": "system", "content": "You are Sam, for ."},
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": QUESTION},
    ]
    assert sent["temperature"] == 0.1 and sent["max_tokens"] == 50


async def test_sdk_streaming_completion_by_project_id(live: Live) -> None:
    sdk, project, _ = await _sdk(live)
    live.upstream.script(Behaviour(chunk_delay=0.01))
    async with sdk:
        stream = await sdk.chat.completions.create(
            model=project["id"],
            messages=[{"role": "user", "content": QUESTION}],
            stream=True,
            stream_options={"include_usage": True},
        )
        parts: list[str] = []
        finish: list[str] = []
        usage = None
        roles = []
        async for chunk in stream:
            assert chunk.object == "chat.completion.chunk" and chunk.model == project["id"]
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                roles.append(choice.delta.role)
                parts.append(choice.delta.content or "")
                if choice.finish_reason:
                    finish.append(choice.finish_reason)
    assert "".join(parts) == f"Fake reply to: {QUESTION}"
    assert len([p for p in parts if p]) > 1  # really streamed
    assert roles[0] == "assistant" and finish == ["stop"]
    assert usage is not None and usage.total_tokens > 0
    assert live.upstream.last_request["stream"] is True


async def test_sdk_lists_and_retrieves_the_keys_project(live: Live) -> None:
    sdk, project, _ = await _sdk(live)
    async with sdk:
        models = await sdk.models.list()
        assert [m.id for m in models.data] == ["support-bot"]
        assert models.data[0].owned_by == "chatbot-platform"
        assert (await sdk.models.retrieve(project["id"])).id == project["id"]
        with pytest.raises(openai.NotFoundError) as missing:
            await sdk.models.retrieve("gpt-4o")
    assert missing.value.code == "model_not_found"


async def test_sdk_sees_openai_shaped_errors(live: Live) -> None:
    sdk, project, (api, owner) = await _sdk(live)
    other = await factories.create_project(api, owner, name="Other")
    messages: Any = [{"role": "user", "content": QUESTION}]
    async with sdk:
        with pytest.raises(openai.NotFoundError) as wrong_model:
            await sdk.chat.completions.create(model=other["slug"], messages=messages)
        assert wrong_model.value.code == "model_not_found"
        assert isinstance(wrong_model.value.body, dict) and "message" in wrong_model.value.body

        with pytest.raises(openai.BadRequestError) as invalid:
            await sdk.chat.completions.create(model=project["slug"], messages=[])
        assert invalid.value.code == "validation_error"
        assert invalid.value.type == "invalid_request_error"  # type: ignore[attr-defined]

        with pytest.raises(openai.BadRequestError) as last_not_user:
            await sdk.chat.completions.create(
                model=project["slug"], messages=[{"role": "assistant", "content": "x"}]
            )
        assert "last non-system message" in last_not_user.value.message

        live.upstream.script(Behaviour(kind="status", status=500))
        with pytest.raises(openai.InternalServerError) as upstream:
            await sdk.chat.completions.create(model=project["slug"], messages=messages)
        assert upstream.value.status_code == 502 and upstream.value.code == "llm_upstream_error"

        live.upstream.script(Behaviour(content="one two three four", error_after=2))
        with pytest.raises(openai.APIError) as mid_stream:
            stream = await sdk.chat.completions.create(
                model=project["slug"], messages=messages, stream=True
            )
            async for _ in stream:
                pass
        assert "LLM request failed" in mid_stream.value.message

    bad_key = openai.AsyncOpenAI(base_url=sdk.base_url, api_key="cbp_" + "x" * 43, max_retries=0)
    async with bad_key:
        with pytest.raises(openai.AuthenticationError) as unauthenticated:
            await bad_key.models.list()
    assert unauthenticated.value.status_code == 401
    assert unauthenticated.value.type == "authentication_error"  # type: ignore[attr-defined]

    # A signed-in user's token is not a project key.
    jwt = openai.AsyncOpenAI(
        base_url=sdk.base_url,
        api_key=owner.headers["Authorization"].removeprefix("Bearer "),
        max_retries=0,
    )
    async with jwt:
        with pytest.raises(openai.PermissionDeniedError) as forbidden:
            await jwt.models.list()
    assert forbidden.value.code == "api_key_required"


async def test_sdk_gets_intents_and_the_fallback_reply(live: Live) -> None:
    fallback = "Mohon maaf, sistem sedang mengalami kendala."
    sdk, project, (api, owner) = await _sdk(live, fallback_reply=fallback)
    await factories.create_intent(api, owner, project["id"], reply="Hi from the intent")
    async with sdk:
        canned = await sdk.chat.completions.with_raw_response.create(
            model=project["slug"], messages=[{"role": "user", "content": "hello there"}]
        )
        assert canned.headers["x-chatbot-intent"] == "greeting"
        assert canned.parse().choices[0].message.content == "Hi from the intent"

        live.upstream.script(Behaviour(kind="status", status=503))
        failed = await sdk.chat.completions.with_raw_response.create(
            model=project["slug"], messages=[{"role": "user", "content": QUESTION}]
        )
        assert failed.headers["x-chatbot-fallback"] == "true"
        assert failed.parse().choices[0].message.content == fallback

        live.upstream.script(Behaviour(kind="status", status=503))
        stream = await sdk.chat.completions.create(
            model=project["slug"], messages=[{"role": "user", "content": QUESTION}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == fallback
    assert len(live.upstream.requests) == 2  # the intent made no upstream call
