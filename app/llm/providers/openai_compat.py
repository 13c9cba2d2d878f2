"""One provider for every OpenAI-compatible chat-completions API: Groq, OpenAI, OpenRouter,
Ollama, vLLM, or any `LLM_BASE_URL`. Vendor JSON stays in this module; failures become LLMErrors.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from httpx_sse import EventSource, SSEError

from app.llm.base import (
    LLMAuthError,
    LLMBadRequestError,
    LLMConnectionError,
    LLMError,
    LLMRateLimitError,
    LLMResponseError,
    LLMServerError,
    LLMTimeoutError,
)
from app.llm.types import (
    Completion,
    CompletionRequest,
    EmbeddingRequest,
    Embeddings,
    StreamChunk,
    Usage,
)

_MAX_UPSTREAM_MESSAGE = 300


class OpenAICompatibleProvider:
    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        default_model: str,
        http_client: httpx.AsyncClient,
        api_key: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.name = name
        self.default_model = default_model
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._embeddings_url = base_url.rstrip("/") + "/embeddings"
        self._client = http_client
        self._headers = {"Content-Type": "application/json", **(extra_headers or {})}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        # Per attempt: the read timeout bounds the wait for each chunk; connect is kept short.
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, connect_timeout))

    def _payload(self, request: CompletionRequest, *, stream: bool) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": request.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "stream": stream,
        }
        if stream:
            payload["stream_options"] = {"include_usage": True}
        return payload

    async def complete(self, request: CompletionRequest) -> Completion:
        try:
            response = await self._client.post(
                self._url,
                json=self._payload(request, stream=False),
                headers=self._headers,
                timeout=self._timeout,
            )
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        if response.status_code >= 400:
            raise self._status_error(response.status_code, response.headers, response.content)
        return self._parse_completion(response.content, request.model)

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[StreamChunk, None]:
        finished = False
        try:
            async with self._client.stream(
                "POST",
                self._url,
                json=self._payload(request, stream=True),
                headers={**self._headers, "Accept": "text/event-stream"},
                timeout=self._timeout,
            ) as response:
                if response.status_code >= 400:
                    body = await response.aread()
                    raise self._status_error(response.status_code, response.headers, body)
                async for event in EventSource(response).aiter_sse():
                    if event.data.strip() == "[DONE]":
                        finished = True
                        break
                    chunk = self._parse_chunk(event.data)
                    if chunk is not None:
                        yield chunk
        except LLMError:
            raise
        except SSEError as exc:
            raise LLMResponseError(
                f"{self.name} did not answer with an event stream", provider=self.name
            ) from exc
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        if not finished:
            raise LLMConnectionError(
                f"{self.name} closed the stream before it finished", provider=self.name
            )

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        """`POST /embeddings` with `encoding_format: float`: one vector per input, in order."""
        payload: dict[str, Any] = {
            "model": request.model,
            "input": list(request.inputs),
            "encoding_format": "float",
        }
        if request.dimensions is not None:
            payload["dimensions"] = request.dimensions
        try:
            response = await self._client.post(
                self._embeddings_url, json=payload, headers=self._headers, timeout=self._timeout
            )
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        if response.status_code >= 400:
            raise self._status_error(response.status_code, response.headers, response.content)
        return self._parse_embeddings(response.content, request)

    # -- parsing ---------------------------------------------------------------------------

    def _parse_completion(self, body: bytes, requested_model: str) -> Completion:
        data = self._json(body)
        self._raise_embedded_error(data)
        try:
            choice = data["choices"][0]
            content = choice["message"].get("content") or ""
            if not isinstance(content, str):
                raise TypeError("content is not a string")
            return Completion(
                content=content,
                model=str(data.get("model") or requested_model),
                finish_reason=choice.get("finish_reason"),
                usage=_usage(data.get("usage")),
            )
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise LLMResponseError(
                f"{self.name} returned a completion without choices", provider=self.name
            ) from exc

    def _parse_embeddings(self, body: bytes, request: EmbeddingRequest) -> Embeddings:
        data = self._json(body)
        self._raise_embedded_error(data)
        try:
            items = sorted(data["data"], key=lambda item: int(item["index"]))
            vectors = tuple(tuple(float(x) for x in item["embedding"]) for item in items)
        except (KeyError, TypeError, ValueError) as exc:
            raise LLMResponseError(
                f"{self.name} returned embeddings without `data[].embedding`", provider=self.name
            ) from exc
        widths = {len(vector) for vector in vectors}
        if len(vectors) != len(request.inputs) or len(widths) != 1 or 0 in widths:
            raise LLMResponseError(
                f"{self.name} returned {len(vectors)} embeddings of widths {sorted(widths)} "
                f"for {len(request.inputs)} inputs",
                provider=self.name,
            )
        return Embeddings(
            vectors, str(data.get("model") or request.model), _usage(data.get("usage"))
        )

    def _parse_chunk(self, raw: str) -> StreamChunk | None:
        data = self._json(raw.encode())
        self._raise_embedded_error(data)
        try:
            usage = _usage(data.get("usage") or (data.get("x_groq") or {}).get("usage"))
            choices = data.get("choices") or []
            if not choices:
                return StreamChunk(usage=usage, model=data.get("model")) if usage else None
            choice = choices[0]
            delta = (choice.get("delta") or {}).get("content") or ""
            if not isinstance(delta, str):
                raise TypeError("delta content is not a string")
            return StreamChunk(
                delta=delta,
                finish_reason=choice.get("finish_reason"),
                usage=usage,
                model=data.get("model"),
            )
        except (TypeError, AttributeError) as exc:
            raise LLMResponseError(
                f"{self.name} sent a malformed stream chunk", provider=self.name
            ) from exc

    def _json(self, body: bytes) -> dict[str, Any]:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise LLMResponseError(
                f"{self.name} returned a body that is not JSON", provider=self.name
            ) from exc
        if not isinstance(data, dict):
            raise LLMResponseError(f"{self.name} returned unexpected JSON", provider=self.name)
        return data

    def _raise_embedded_error(self, data: dict[str, Any]) -> None:
        """Some upstreams (OpenRouter) report failures as an `error` object inside a 200."""
        error = data.get("error")
        if error:
            message = error.get("message") if isinstance(error, dict) else str(error)
            code = error.get("code") if isinstance(error, dict) else None
            status = code if isinstance(code, int) else None
            text = _clip(f"{self.name} reported an error: {message or 'unknown error'}")
            if status == 429:
                raise LLMRateLimitError(text, provider=self.name)
            raise LLMServerError(text, provider=self.name, status_code=status)

    # -- errors ----------------------------------------------------------------------------

    def _transport_error(self, exc: httpx.HTTPError) -> LLMError:
        if isinstance(exc, httpx.TimeoutException):
            return LLMTimeoutError(f"{self.name} did not answer in time", provider=self.name)
        return LLMConnectionError(
            f"could not reach {self.name} ({type(exc).__name__})", provider=self.name
        )

    def _status_error(self, status: int, headers: httpx.Headers, body: bytes) -> LLMError:
        detail = _upstream_message(body)
        message = f"{self.name} answered HTTP {status}" + (f": {detail}" if detail else "")
        if status == 429:
            return LLMRateLimitError(
                message, provider=self.name, retry_after=_retry_after(headers.get("retry-after"))
            )
        if status in (401, 403):
            return LLMAuthError(
                f"{self.name} rejected the deployment's credentials (HTTP {status})",
                provider=self.name,
                status_code=status,
            )
        if status >= 500:
            return LLMServerError(message, provider=self.name, status_code=status)
        return LLMBadRequestError(message, provider=self.name, status_code=status)


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt = int(raw.get("prompt_tokens") or 0)
    completion = int(raw.get("completion_tokens") or 0)
    total = int(raw.get("total_tokens") or prompt + completion)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)


def _upstream_message(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    error = data.get("error") if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    return _clip(str(message)) if message else None


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_UPSTREAM_MESSAGE else text[: _MAX_UPSTREAM_MESSAGE - 1] + "…"


def _retry_after(value: str | None) -> int | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0, int(float(value)))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0, int((when - datetime.now(UTC)).total_seconds()))
