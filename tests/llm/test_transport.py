"""The production transport (aiohttp under the shared httpx client) over real sockets: replies,
streams as they arrive, and each way an upstream can fail typed as the provider expects."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from app.llm.base import LLMConnectionError, LLMError, LLMTimeoutError
from app.llm.providers.openai_compat import OpenAICompatibleProvider
from app.llm.transport import upstream_transport
from app.llm.types import CompletionRequest, LLMMessage
from tests.fake_openai import Behaviour, FakeOpenAI
from tests.live import serve

REQUEST = CompletionRequest(
    model="m", messages=(LLMMessage("user", "hello there world"),), temperature=0.5, max_tokens=10
)
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def provider_at(
    base_url: str, seconds: float = 5.0
) -> AsyncIterator[OpenAICompatibleProvider]:
    limits = httpx.Limits(max_connections=10)
    async with httpx.AsyncClient(transport=upstream_transport(limits)) as client:
        yield OpenAICompatibleProvider(
            name="openai",
            base_url=f"{base_url}/v1",
            default_model="m",
            http_client=client,
            api_key="sk-x",
            timeout=seconds,
            connect_timeout=seconds,
        )


@contextlib.asynccontextmanager
async def raw_server(handle: Handler) -> AsyncIterator[str]:
    """A TCP server on loopback that answers however `handle` does."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


async def test_a_reply_and_a_stream_over_real_sockets() -> None:
    upstream = FakeOpenAI(Behaviour(chunk_delay=0.15))
    async with serve(upstream.asgi()) as url, provider_at(url) as provider:
        completion = await provider.complete(REQUEST)
        assert completion.content == "Fake reply to: hello there world"
        assert upstream.last_request["messages"] == [
            {"role": "user", "content": "hello there world"}
        ]

        started, arrivals, text = time.monotonic(), [], ""
        async for chunk in provider.stream(REQUEST):
            arrivals.append(time.monotonic() - started)
            text += chunk.delta
    assert text == "Fake reply to: hello there world"
    # Each chunk is handed on as it arrives, not when the whole body is in.
    assert arrivals[0] < arrivals[-1] - 0.3


async def _hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.close()


async def _stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    await asyncio.sleep(5)
    writer.close()


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"this is not HTTP at all\r\n\r\n")
    await writer.drain()
    writer.close()


async def _cut_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 500\r\n\r\n"
    writer.write(head + b"data: {")
    await writer.drain()
    writer.close()


@pytest.mark.parametrize(
    ("handle", "error", "words"),
    [
        (_hang_up, LLMConnectionError, "could not reach"),
        (_garbage, LLMConnectionError, "could not reach"),
        (_cut_body, LLMConnectionError, "could not reach"),
        (_stall, LLMTimeoutError, "did not answer in time"),
    ],
    ids=["hangs-up", "not-http", "cut-body", "stalls"],
)
async def test_upstream_failures_are_typed(
    handle: Handler, error: type[LLMError], words: str
) -> None:
    async with raw_server(handle) as url, provider_at(url, seconds=0.5) as provider:
        with pytest.raises(error) as info:
            await provider.complete(REQUEST)
        assert words in info.value.message
        with pytest.raises(error):
            await _drain(provider)


async def test_a_refused_connection_is_unreachable_not_slow() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with provider_at(f"http://127.0.0.1:{port}") as provider:
        with pytest.raises(LLMConnectionError):
            await provider.complete(REQUEST)


async def _drain(provider: OpenAICompatibleProvider) -> None:
    async for _ in provider.stream(REQUEST):
        pass
