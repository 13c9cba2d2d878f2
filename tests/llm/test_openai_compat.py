"""The OpenAI-compatible provider against a fake upstream speaking the real wire format."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.core.config import Settings
from app.llm.base import (
    LLMConnectionError,
    LLMError,
    LLMNotConfiguredError,
    LLMRateLimitError,
    LLMResponseError,
    LLMServerError,
    LLMTimeoutError,
)
from app.llm.providers.openai_compat import OpenAICompatibleProvider, _retry_after
from app.llm.registry import build_registry
from app.llm.types import CompletionRequest, EmbeddingRequest, LLMMessage, StreamChunk
from tests.fake_openai import Behaviour, FakeOpenAI

REQUEST = CompletionRequest(
    model="m", messages=(LLMMessage("user", "hello there world"),), temperature=0.5, max_tokens=10
)


@pytest.fixture
async def provider(upstream: FakeOpenAI) -> AsyncIterator[OpenAICompatibleProvider]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=upstream.asgi())) as client:
        yield OpenAICompatibleProvider(
            name="openai",
            base_url="http://upstream.test/v1/",
            default_model="m",
            http_client=client,
            api_key="sk-x",
        )


async def _collect(provider: OpenAICompatibleProvider) -> list[StreamChunk]:
    return [chunk async for chunk in provider.stream(REQUEST)]


async def test_complete(provider: OpenAICompatibleProvider, upstream: FakeOpenAI) -> None:
    completion = await provider.complete(REQUEST)
    assert completion.content == "Fake reply to: hello there world"
    assert completion.finish_reason == "stop" and completion.usage
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 6
    assert upstream.last_request["messages"] == [{"role": "user", "content": "hello there world"}]


async def test_stream_yields_deltas_then_usage(
    provider: OpenAICompatibleProvider, upstream: FakeOpenAI
) -> None:
    chunks = await _collect(provider)
    assert "".join(c.delta for c in chunks) == "Fake reply to: hello there world"
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    assert upstream.last_request["stream"] is True
    assert upstream.last_request["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("behaviour", "error", "partial"),
    [
        (Behaviour(cut_after=2), LLMConnectionError, "Fake reply"),
        (Behaviour(error_after=1), LLMServerError, "Fake"),
        (Behaviour(garbage_after=3), LLMResponseError, "Fake reply to:"),
        (Behaviour(kind="not_sse"), LLMResponseError, ""),
        (Behaviour(kind="status", status=429), LLMRateLimitError, ""),
    ],
)
async def test_stream_failures_keep_what_arrived(
    provider: OpenAICompatibleProvider,
    upstream: FakeOpenAI,
    behaviour: Behaviour,
    error: type[LLMError],
    partial: str,
) -> None:
    upstream.script(behaviour)
    received: list[str] = []
    with pytest.raises(error):
        async for chunk in provider.stream(REQUEST):
            received.append(chunk.delta)
    assert "".join(received) == partial


async def test_stream_timeout_is_typed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("stalled", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        provider = OpenAICompatibleProvider(
            name="groq", base_url="http://x/v1", default_model="m", http_client=client
        )
        with pytest.raises(LLMTimeoutError) as info:
            await _collect(provider)
    assert info.value.retryable and info.value.provider == "groq"


async def test_completion_without_choices_is_a_bad_response(
    provider: OpenAICompatibleProvider, upstream: FakeOpenAI
) -> None:
    upstream.script(Behaviour(kind="status", status=200, body={"choices": []}))
    with pytest.raises(LLMResponseError):
        await provider.complete(REQUEST)


def test_retry_after_parsing() -> None:
    assert _retry_after("12") == 12
    assert _retry_after("1.5") == 1
    assert _retry_after(None) is None
    assert _retry_after("soon") is None
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0


async def test_registry_builds_configured_providers() -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        GROQ_API_KEY="gsk",
        OPENROUTER_API_KEY="or",
        OPENAI_API_KEY=None,
        LLM_PROVIDER=None,
        LLM_BASE_URL=None,
        LLM_MODEL=None,
        OPENROUTER_SITE_URL="https://myapp.example.com",
    )
    async with httpx.AsyncClient() as client:
        registry = build_registry(settings, client)
    assert registry.default_name == "groq"
    assert set(registry.providers) == {"groq", "openrouter", "echo"}
    openrouter = registry.get("openrouter")
    assert isinstance(openrouter, OpenAICompatibleProvider)
    assert openrouter._headers["HTTP-Referer"] == "https://myapp.example.com"
    assert openrouter._headers["X-Title"] == "Chatbot Platform"
    assert openrouter._headers["Authorization"] == "Bearer or"
    assert registry.model_for(registry.get(None), None) == "llama-3.3-70b-versatile"
    assert registry.model_for(openrouter, None) == "openai/gpt-4o-mini"
    with pytest.raises(LLMNotConfiguredError):
        registry.get("openai")


EMBED = EmbeddingRequest(model="e", inputs=("kettle", "descaling the kettle"), dimensions=16)


async def test_embed(provider: OpenAICompatibleProvider, upstream: FakeOpenAI) -> None:
    embeddings = await provider.embed(EMBED)
    assert [len(vector) for vector in embeddings.vectors] == [16, 16]
    assert embeddings.model == "e" and embeddings.usage and embeddings.usage.prompt_tokens == 4
    assert upstream.embedding_requests == [
        {
            "model": "e",
            "input": ["kettle", "descaling the kettle"],
            "encoding_format": "float",
            "dimensions": 16,
        }
    ]


def _embeddings_answer(body: object, status: int = 200) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/embeddings"
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"data": [{"index": 0, "embedding": [1.0]}]}, 200, LLMResponseError),  # one of two
        (
            {"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [1.0, 2.0]}]},
            200,
            LLMResponseError,  # widths differ
        ),
        ({"data": [{"index": 0}, {"index": 1}]}, 200, LLMResponseError),
        ({"object": "list"}, 200, LLMResponseError),
        ({"error": {"message": "overloaded"}}, 200, LLMServerError),
        ({"error": {"message": "slow down"}}, 429, LLMRateLimitError),
        ({"error": {"message": "down"}}, 503, LLMServerError),
    ],
)
async def test_embed_failures_are_typed(body: object, status: int, error: type[LLMError]) -> None:
    async with httpx.AsyncClient(transport=_embeddings_answer(body, status)) as client:
        provider = OpenAICompatibleProvider(
            name="openai", base_url="http://x/v1", default_model="m", http_client=client
        )
        with pytest.raises(error):
            await provider.embed(EMBED)


async def test_embeddings_come_back_in_input_order() -> None:
    body = {"data": [{"index": 1, "embedding": [0.0, 1.0]}, {"index": 0, "embedding": [1.0, 0.0]}]}
    async with httpx.AsyncClient(transport=_embeddings_answer(body)) as client:
        provider = OpenAICompatibleProvider(
            name="openai", base_url="http://x/v1", default_model="m", http_client=client
        )
        embeddings = await provider.embed(EMBED)
    assert embeddings.vectors == ((1.0, 0.0), (0.0, 1.0))
