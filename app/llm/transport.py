"""The network under the shared LLM `httpx.AsyncClient`: aiohttp, through httpx-aiohttp.

The client keeps httpx's API (timeouts, streaming, errors); aiohttp moves the bytes at a
fraction of httpx's own transport's CPU per call (see README, "Performance": 11% fewer
instructions per chat turn). Tests replace it with `httpx.ASGITransport` or `MockTransport`.

httpx-aiohttp reports every dropped or refused connection as `httpx.ConnectTimeout` and leaves
some aiohttp errors (a malformed response) unmapped; this module turns those into the httpx
errors they are, so an upstream that hangs up reads as unreachable (503 `llm_unavailable`),
not slow (504 `llm_timeout`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except httpx.TimeoutException as exc:
        cause = exc.__cause__
        if isinstance(cause, aiohttp.ClientError) and not isinstance(cause, TimeoutError):
            error = httpx.ConnectError if isinstance(exc, httpx.ConnectTimeout) else httpx.ReadError
            raise error(str(cause) or type(cause).__name__) from cause
        raise
    except aiohttp.ClientError as exc:
        raise httpx.RemoteProtocolError(str(exc) or type(exc).__name__) from exc


class _Body(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for chunk in self._inner:
                yield chunk

    async def aclose(self) -> None:
        with _httpx_errors():
            await self._inner.aclose()


class UpstreamTransport(AiohttpTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        with _httpx_errors():
            response = await super().handle_async_request(request)
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)  # noqa: S101 - always, from aiohttp
        response.stream = _Body(stream)
        return response


def upstream_transport(limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    """A pooled aiohttp transport with httpx's `limits` (connections, keep-alive expiry)."""
    return UpstreamTransport(limits=limits)
