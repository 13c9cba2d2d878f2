"""The provider interface (a two-method Protocol) and the one typed error tree."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol, runtime_checkable

from app.llm.types import (
    Completion,
    CompletionRequest,
    EmbeddingRequest,
    Embeddings,
    StreamChunk,
)


@runtime_checkable
class LLMProvider(Protocol):
    """Anything that can complete a chat. Implementations raise only `LLMError` subclasses."""

    name: str
    default_model: str

    async def complete(self, request: CompletionRequest) -> Completion:
        """The whole reply at once."""
        ...

    def stream(self, request: CompletionRequest) -> AsyncGenerator[StreamChunk, None]:
        """The reply as it is generated."""
        ...


@runtime_checkable
class EmbeddingProvider(Protocol):
    """Anything that can embed texts (an OpenAI-compatible `/embeddings`)."""

    name: str

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        """One vector per input, in order."""
        ...


class LLMError(Exception):
    """Base of every provider failure. `retryable` says whether trying again may help."""

    retryable = False

    def __init__(self, message: str, *, provider: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status_code = status_code


class LLMTimeoutError(LLMError):
    retryable = True


class LLMConnectionError(LLMError):
    retryable = True


class LLMRateLimitError(LLMError):
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status_code: int | None = 429,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status_code=status_code)
        self.retry_after = retry_after


class LLMServerError(LLMError):
    """The upstream answered 5xx."""

    retryable = True


class LLMAuthError(LLMError):
    """The upstream refused our credentials (401/403): a deployment problem."""


class LLMBadRequestError(LLMError):
    """The upstream rejected the request (other 4xx), e.g. an unknown model or too many tokens."""


class LLMResponseError(LLMError):
    """The upstream's reply was not what the protocol promises (bad JSON, missing fields)."""


class LLMNotConfiguredError(LLMError):
    """The requested provider is not configured in this deployment."""
