"""Our own value types for LLM calls. Vendor JSON never leaves the provider modules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class LLMMessage:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    model: str
    messages: tuple[LLMMessage, ...]
    temperature: float
    max_tokens: int


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Completion:
    content: str
    model: str
    finish_reason: str | None = None
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """One piece of a streamed reply: a text delta, and on the last chunks the finish/usage."""

    delta: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """Texts to embed, in order; `dimensions` asks a model that can shorten its vectors
    (OpenAI's text-embedding-3) to do so."""

    model: str
    inputs: tuple[str, ...]
    dimensions: int | None = None


@dataclass(frozen=True, slots=True)
class Embeddings:
    vectors: tuple[tuple[float, ...], ...]  # one per input, in the inputs' order
    model: str
    usage: Usage | None = None
