"""The built-in `echo` provider: answers without any LLM, so a fresh clone works with no key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from app.llm.types import Completion, CompletionRequest, StreamChunk, Usage


class EchoProvider:
    """Replies `Echo: <the last user message>`. For development and demos only."""

    name = "echo"
    default_model = "echo"
    word_delay = 0.02  # seconds between streamed words, so streaming is visible with curl -N

    def _reply(self, request: CompletionRequest) -> tuple[str, Usage]:
        last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        reply = f"Echo: {last_user}"
        prompt_tokens = sum(len(m.content.split()) for m in request.messages)
        completion_tokens = len(reply.split())
        return reply, Usage(prompt_tokens, completion_tokens, prompt_tokens + completion_tokens)

    async def complete(self, request: CompletionRequest) -> Completion:
        reply, usage = self._reply(request)
        return Completion(content=reply, model=request.model, finish_reason="stop", usage=usage)

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[StreamChunk, None]:
        reply, usage = self._reply(request)
        words = reply.split(" ")
        for index, word in enumerate(words):
            if index:
                await asyncio.sleep(self.word_delay)
            yield StreamChunk(delta=word if index == 0 else " " + word, model=request.model)
        yield StreamChunk(finish_reason="stop", usage=usage, model=request.model)
