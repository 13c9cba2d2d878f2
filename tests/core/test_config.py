from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError

from app.core.config import Settings


def settings(**values: object) -> Settings:
    base: dict[str, object] = {
        "LLM_PROVIDER": None,
        "GROQ_API_KEY": None,
        "OPENAI_API_KEY": None,
        "OPENROUTER_API_KEY": None,
        "LLM_BASE_URL": None,
        "LLM_MODEL": None,
    }
    base.update(values)
    return Settings(_env_file=None, **base)  # type: ignore[call-arg]


def test_defaults_run_on_sqlite_with_echo() -> None:
    s = settings()
    assert s.DATABASE_URL.get_secret_value().startswith("sqlite+aiosqlite")
    assert s.default_provider == "echo" and s.default_model == "echo"
    assert s.ALGORITHM == "HS256" and s.ACCESS_TOKEN_EXPIRE_MINUTES == 30


def test_first_provider_with_a_key_is_the_default() -> None:
    s = settings(OPENROUTER_API_KEY="or-key", OPENAI_API_KEY="sk-key")
    assert s.default_provider == "openai" and s.default_model == "gpt-4o-mini"
    assert settings(GROQ_API_KEY="gsk", LLM_MODEL="mixtral").default_model == "mixtral"


def test_chosen_provider_needs_its_key() -> None:
    with pytest.raises(ValidationError, match="GROQ_API_KEY"):
        settings(LLM_PROVIDER="groq")
    # A keyless OpenAI-compatible server (Ollama, vLLM) is fine with LLM_BASE_URL.
    assert settings(LLM_PROVIDER="openai", LLM_BASE_URL="http://127.0.0.1:11434/v1")


CHANNEL_KEY = Fernet.generate_key().decode()


def test_production_refuses_unsafe_defaults() -> None:
    with pytest.raises(ValidationError, match="default SECRET_KEY"):
        settings(ENVIRONMENT="production", GROQ_API_KEY="gsk")
    with pytest.raises(ValidationError, match="default CHANNEL_SECRETS_KEY"):
        settings(ENVIRONMENT="production", SECRET_KEY="x" * 40, GROQ_API_KEY="gsk")
    with pytest.raises(ValidationError, match="real LLM provider"):
        settings(ENVIRONMENT="production", SECRET_KEY="x" * 40, CHANNEL_SECRETS_KEY=CHANNEL_KEY)
    ok = settings(
        ENVIRONMENT="production",
        SECRET_KEY="x" * 40,
        GROQ_API_KEY="gsk",
        CHANNEL_SECRETS_KEY=CHANNEL_KEY,
    )
    assert ok.default_provider == "groq"


def test_cors_origins_accept_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example.com, https://b.example.com")
    assert settings().CORS_ORIGINS == ["https://a.example.com", "https://b.example.com"]


def test_only_hmac_algorithms_are_allowed() -> None:
    with pytest.raises(ValidationError, match="ALGORITHM"):
        settings(ALGORITHM="none")


def test_secrets_are_not_printed() -> None:
    s = settings(OPENAI_API_KEY="sk-very-secret", SECRET_KEY="top-secret-signing-key")
    assert "sk-very-secret" not in repr(s) and "top-secret-signing-key" not in repr(s)
