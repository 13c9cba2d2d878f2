"""The provider registry: a plain dict of configured providers, built once at startup."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

from app.core.config import PROVIDER_BASE_URLS, PROVIDER_DEFAULT_MODELS, Settings
from app.llm.base import LLMNotConfiguredError, LLMProvider
from app.llm.embeddings import Embedder, build_embedder
from app.llm.providers.echo import EchoProvider
from app.llm.providers.openai_compat import OpenAICompatibleProvider
from app.llm.resilience import BreakerBoard, RetryPolicy

if TYPE_CHECKING:  # the metrics sink is optional and framework-bound
    from app.core.metrics import Metrics


@dataclass(frozen=True)
class ProviderRegistry:
    providers: Mapping[str, LLMProvider]
    default_name: str
    default_model: str
    breakers: BreakerBoard = field(default_factory=lambda: BreakerBoard(threshold=5, cooldown=30.0))
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    metrics: Metrics | None = None
    embedder: Embedder | None = None  # EMBEDDINGS_*: semantic search of knowledge bases

    def get(self, name: str | None) -> LLMProvider:
        """The named provider, or the default; raises LLMNotConfiguredError if not configured."""
        key = name or self.default_name
        provider = self.providers.get(key)
        if provider is None:
            raise LLMNotConfiguredError(
                f"the LLM provider '{key}' is not configured on this deployment", provider=key
            )
        return provider

    def model_for(self, provider: LLMProvider, model: str | None) -> str:
        if model:
            return model
        return self.default_model if provider.name == self.default_name else provider.default_model


def build_registry(
    settings: Settings, http_client: httpx.AsyncClient, metrics: Metrics | None = None
) -> ProviderRegistry:
    """Every provider with a key, the default one (LLM_BASE_URL applies to it), and `echo` in
    development."""
    default = settings.default_provider
    providers: dict[str, LLMProvider] = {}
    for name, base_url in PROVIDER_BASE_URLS.items():
        key = settings.api_key_for(name)
        if key is None and name != default:
            continue
        headers: dict[str, str] = {}
        if name == "openrouter":
            headers["X-Title"] = settings.OPENROUTER_APP_NAME
            if settings.OPENROUTER_SITE_URL:
                headers["HTTP-Referer"] = settings.OPENROUTER_SITE_URL
        providers[name] = OpenAICompatibleProvider(
            name=name,
            base_url=(
                settings.LLM_BASE_URL if name == default and settings.LLM_BASE_URL else base_url
            ),
            default_model=PROVIDER_DEFAULT_MODELS[name],
            http_client=http_client,
            api_key=key.get_secret_value() if key else None,
            extra_headers=headers,
            timeout=settings.LLM_TIMEOUT,
            connect_timeout=settings.LLM_CONNECT_TIMEOUT,
        )
    if settings.ENVIRONMENT == "development" or default == "echo":
        providers["echo"] = EchoProvider()
    breakers = BreakerBoard(
        threshold=settings.LLM_BREAKER_THRESHOLD,
        cooldown=settings.LLM_BREAKER_COOLDOWN_SECONDS,
    )
    policy = RetryPolicy(
        max_attempts=settings.LLM_MAX_ATTEMPTS,
        base_delay=settings.LLM_RETRY_BASE_SECONDS,
        max_delay=settings.LLM_RETRY_MAX_SECONDS,
        total_timeout=settings.LLM_TOTAL_TIMEOUT,
        first_token_timeout=settings.LLM_FIRST_TOKEN_TIMEOUT,
    )
    return ProviderRegistry(
        providers,
        default_name=default,
        default_model=settings.default_model,
        breakers=breakers,
        policy=policy,
        metrics=metrics,
        embedder=build_embedder(settings, http_client, breakers, policy),
    )
