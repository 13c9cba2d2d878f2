"""A local OpenAI-compatible upstream that speaks the real wire format (JSON and SSE).

Used in-process by the tests (through `httpx.ASGITransport`) and as a real server for manual
checks and benchmarks:

    .venv/bin/uvicorn --factory tests.fake_openai:create_app --port 9100

By default it answers `Fake reply to: <last user message>`. Faults are scripted: push behaviours
with `FakeOpenAI.script(...)` in-process, or `POST /_control/script` on a running server; each
request pops the next one. Every request received is recorded (`GET /_control/requests`).

`POST /v1/embeddings` answers with hashed character trigrams of each input (`embedding`): texts
that share spellings are near, so a misspelt word still finds its chunk; `dimensions` is
honoured (default 256). Its requests and faults are kept apart from the chat completions'
(`embedding_requests`, `script_embeddings`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import zlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Behaviour:
    """What the next request gets.

    kind: "reply" (default), "status" (an HTTP error), "invalid_json", "embedded_error"
    (an `error` object inside a 200), "not_sse" (JSON when a stream was asked for).
    Streaming extras: `cut_after` chunks then close without [DONE]; `stall_before` a chunk index
    for `stall_seconds`; `error_after` chunks then an error payload; `garbage_after` chunks then a
    non-JSON data line; `chunk_delay` seconds between chunks. `delay` is waited before answering.
    """

    kind: str = "reply"
    content: str | None = None
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    delay: float = 0.0
    usage: bool = True
    cut_after: int | None = None
    stall_before: int | None = None
    stall_seconds: float = 0.0
    error_after: int | None = None
    garbage_after: int | None = None
    finish_reason: str = "stop"
    chunk_delay: float = 0.0  # seconds between streamed chunks


class FakeOpenAI:
    def __init__(
        self,
        default: Behaviour | None = None,
        *,
        record: bool = True,
        model_delays: dict[str, float] | None = None,
    ) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.default = default or Behaviour()
        self.record = record
        # Seconds the default behaviour waits for these models (instead of `default.delay`).
        self.model_delays = model_delays or {}
        self._script: deque[Behaviour] = deque()
        self.embedding_requests: list[dict[str, Any]] = []
        self._embedding_script: deque[Behaviour] = deque()

    def script(self, *behaviours: Behaviour) -> None:
        self._script.extend(behaviours)

    def script_embeddings(self, *behaviours: Behaviour) -> None:
        self._embedding_script.extend(behaviours)

    def reset(self) -> None:
        self.requests.clear()
        self.headers.clear()
        self._script.clear()
        self.embedding_requests.clear()
        self._embedding_script.clear()

    @property
    def last_request(self) -> dict[str, Any]:
        return self.requests[-1]

    def asgi(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._completions, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                Route("/_control/script", self._control_script, methods=["POST"]),
                Route("/_control/requests", self._control_requests, methods=["GET"]),
                Route("/_control/reset", self._control_reset, methods=["POST"]),
            ]
        )

    async def _control_script(self, request: Request) -> Response:
        items = await request.json()
        self.script(*(Behaviour(**item) for item in items))
        return JSONResponse({"queued": len(self._script)})

    async def _control_requests(self, _: Request) -> Response:
        return JSONResponse({"requests": self.requests})

    async def _control_reset(self, _: Request) -> Response:
        self.reset()
        return JSONResponse({"ok": True})

    async def _completions(self, request: Request) -> Response:
        payload = await request.json()
        if self.record:
            self.requests.append(payload)
            self.headers.append({k.lower(): v for k, v in request.headers.items()})
        behaviour = self._script.popleft() if self._script else self.default
        delay = behaviour.delay
        if behaviour is self.default:
            delay = self.model_delays.get(payload.get("model"), delay)
        if delay:
            await asyncio.sleep(delay)
        if behaviour.kind == "status":
            body = behaviour.body or {"error": {"message": f"upstream error {behaviour.status}"}}
            return JSONResponse(body, status_code=behaviour.status, headers=behaviour.headers)
        if behaviour.kind == "invalid_json":
            return Response("<html>Bad Gateway</html>", media_type="application/json")
        if behaviour.kind == "embedded_error":
            error = behaviour.body or {"error": {"message": "provider overloaded", "code": 502}}
            return JSONResponse(error)
        content = behaviour.content
        if content is None:
            last_user = next(
                (m["content"] for m in reversed(payload["messages"]) if m["role"] == "user"), ""
            )
            content = f"Fake reply to: {last_user}"
        prompt_tokens = sum(len(str(m["content"]).split()) for m in payload["messages"])
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(content.split()),
            "total_tokens": prompt_tokens + len(content.split()),
        }
        if payload.get("stream") and behaviour.kind != "not_sse":
            return StreamingResponse(
                self._sse(payload, behaviour, content, usage), media_type="text/event-stream"
            )
        return JSONResponse(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "model": payload["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": behaviour.finish_reason,
                    }
                ],
                "usage": usage if behaviour.usage else None,
            }
        )

    async def _embeddings(self, request: Request) -> Response:
        payload = await request.json()
        if self.record:
            self.embedding_requests.append(payload)
        behaviour = self._embedding_script.popleft() if self._embedding_script else None
        if behaviour is not None and behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        if behaviour is not None and behaviour.kind == "status":
            body = behaviour.body or {"error": {"message": f"upstream error {behaviour.status}"}}
            return JSONResponse(body, status_code=behaviour.status, headers=behaviour.headers)
        inputs = payload["input"]
        inputs = [inputs] if isinstance(inputs, str) else inputs
        dims = int(payload.get("dimensions") or 256)
        tokens = sum(len(str(text).split()) for text in inputs)
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": trigram_vector(text, dims)}
                    for i, text in enumerate(inputs)
                ],
                "model": payload["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def _sse(
        self, payload: dict[str, Any], behaviour: Behaviour, content: str, usage: dict[str, int]
    ) -> AsyncIterator[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            data = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "model": payload["model"],
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(data)}\n\n".encode()

        yield b": OPENROUTER PROCESSING\n\n"
        yield chunk({"role": "assistant", "content": ""})
        words = content.split(" ")
        for index, word in enumerate(words):
            if behaviour.stall_before == index:
                await asyncio.sleep(behaviour.stall_seconds)
            if behaviour.cut_after == index:
                return
            if behaviour.error_after == index:
                error = {"error": {"message": "upstream failed mid-stream", "code": 502}}
                yield f"data: {json.dumps(error)}\n\n".encode()
                return
            if behaviour.garbage_after == index:
                yield b"data: {not json\n\n"
                return
            yield chunk({"content": word if index == 0 else " " + word})
            await asyncio.sleep(behaviour.chunk_delay)
        yield chunk({}, behaviour.finish_reason)
        include_usage = (payload.get("stream_options") or {}).get("include_usage")
        if include_usage and behaviour.usage:
            data = {"id": "chatcmpl-fake", "choices": [], "usage": usage}
            yield f"data: {json.dumps(data)}\n\n".encode()
        yield b"data: [DONE]\n\n"


_WORD = re.compile(r"\w+")


def trigram_vector(text: str, dims: int) -> list[float]:
    """Each word's character trigrams (with `#` at its ends), hashed into `dims` signed
    buckets: a deterministic stand-in for an embedding model, close for similar spellings."""
    vector = [0.0] * dims
    for word in _WORD.findall(text.lower()):
        padded = f"#{word}#"
        for start in range(len(padded) - 2):
            code = zlib.crc32(padded[start : start + 3].encode())
            vector[code % dims] += 1.0 if code & 0x80000000 else -1.0
    return vector


def create_app() -> Starlette:
    """Factory for running the fake as a real server (uvicorn --factory).

    `FAKE_OPENAI_LATENCY_MS` delays every answer (a fixed upstream latency for benchmarks);
    `FAKE_OPENAI_MODEL_LATENCY_MS` overrides it per requested model, e.g.
    `bench-slow=200,bench-fast=0` (scripted behaviours keep their own `delay`);
    `FAKE_OPENAI_CHUNK_DELAY_MS` spaces streamed chunks; `FAKE_OPENAI_RECORD=0` stops recording
    requests (for long load runs).
    """
    default = Behaviour(
        delay=float(os.environ.get("FAKE_OPENAI_LATENCY_MS", "0")) / 1000,
        chunk_delay=float(os.environ.get("FAKE_OPENAI_CHUNK_DELAY_MS", "0")) / 1000,
    )
    model_delays = {
        model.strip(): float(ms) / 1000
        for model, _, ms in (
            item.partition("=")
            for item in os.environ.get("FAKE_OPENAI_MODEL_LATENCY_MS", "").split(",")
            if item.strip()
        )
    }
    record = os.environ.get("FAKE_OPENAI_RECORD", "1") != "0"
    return FakeOpenAI(default, record=record, model_delays=model_delays).asgi()
