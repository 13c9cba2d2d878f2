"""The deployment's embedding model for semantic search (EMBEDDINGS_*): any OpenAI-compatible
`/embeddings`, called through the resilient layer like a completion (retries with backoff, a
circuit breaker, one deadline). Vectors come back as float32 numpy arrays of unit length, so a
dot product is their cosine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import httpx
import numpy as np

from app.core.config import Settings
from app.llm.providers.openai_compat import OpenAICompatibleProvider
from app.llm.resilience import BreakerBoard, ResilientProvider, RetryPolicy, Target
from app.llm.types import EmbeddingRequest

Vector = np.ndarray[Any, np.dtype[np.float32]]


@dataclass(frozen=True)
class Embedder:
    """The deployment's embedding model."""

    provider: OpenAICompatibleProvider
    model: str
    dimensions: int | None
    batch_size: int
    breakers: BreakerBoard
    policy: RetryPolicy  # for a document's chunks (the job retries on top)
    query_policy: RetryPolicy  # for a question: a turn waits for it

    async def documents(self, texts: Sequence[str]) -> list[Vector]:
        """One unit vector per text, `batch_size` texts a request."""
        vectors: list[Vector] = []
        for start in range(0, len(texts), self.batch_size):
            vectors.extend(await self._embed(texts[start : start + self.batch_size], self.policy))
        return vectors

    async def query(self, question: str) -> Vector:
        return (await self._embed([question], self.query_policy))[0]

    async def _embed(self, texts: Sequence[str], policy: RetryPolicy) -> list[Vector]:
        resilient = ResilientProvider([Target(self.provider, self.model)], policy, self.breakers)
        request = EmbeddingRequest(self.model, tuple(texts), self.dimensions)
        embeddings = await resilient.embed(request)
        return [unit(np.asarray(vector, dtype=np.float32)) for vector in embeddings.vectors]


def build_embedder(
    settings: Settings, client: httpx.AsyncClient, breakers: BreakerBoard, policy: RetryPolicy
) -> Embedder | None:
    """The configured embedder, sharing the registry's breakers and retry policy (a question's
    embedding keeps to EMBEDDINGS_QUERY_TIMEOUT_SECONDS); None without EMBEDDINGS_BASE_URL."""
    if not settings.EMBEDDINGS_BASE_URL:
        return None
    key = settings.EMBEDDINGS_API_KEY
    provider = OpenAICompatibleProvider(
        name="embeddings",
        base_url=settings.EMBEDDINGS_BASE_URL,
        default_model=settings.EMBEDDINGS_MODEL,
        http_client=client,
        api_key=key.get_secret_value() if key else None,
        timeout=settings.LLM_TIMEOUT,
        connect_timeout=settings.LLM_CONNECT_TIMEOUT,
    )
    query_policy = replace(
        policy,
        base_delay=min(policy.base_delay, 0.2),
        max_delay=1.0,
        total_timeout=settings.EMBEDDINGS_QUERY_TIMEOUT_SECONDS,
    )
    return Embedder(
        provider,
        settings.EMBEDDINGS_MODEL,
        settings.EMBEDDINGS_DIMENSIONS,
        settings.EMBEDDINGS_BATCH_SIZE,
        breakers,
        policy,
        query_policy,
    )


def unit(vector: Vector) -> Vector:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector
