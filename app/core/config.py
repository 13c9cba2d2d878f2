"""The one settings object, read from the environment and `.env`. Nothing is built at import."""

from __future__ import annotations

import uuid
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_SECRET_KEY = "change-me-in-production"  # noqa: S105 - the documented development default
# A valid Fernet key, public like the one above: development only (production refuses it).
DEFAULT_CHANNEL_SECRETS_KEY = "ZGV2ZWxvcG1lbnQtb25seS1jaGFubmVsLWtleS0wMDA="

# Providers that speak the OpenAI chat-completions API, with their public base URLs.
PROVIDER_BASE_URLS: dict[str, str] = {
    "groq": "https://api.groq.com/openai/v1",
    "openai": "https://api.openai.com/v1",
    "openrouter": "https://openrouter.ai/api/v1",
}
PROVIDER_DEFAULT_MODELS: dict[str, str] = {
    "groq": "llama-3.3-70b-versatile",
    "openai": "gpt-4o-mini",
    "openrouter": "openai/gpt-4o-mini",
    "echo": "echo",
}
LLMProviderName = Literal["groq", "openai", "openrouter", "echo"]
KNOWN_PROVIDERS: tuple[str, ...] = ("groq", "openai", "openrouter", "echo")
ALLOWED_JWT_ALGORITHMS = ("HS256", "HS384", "HS512")


class Settings(BaseSettings):
    """Deployment configuration. Every field is documented in `.env.example`."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    ENVIRONMENT: Literal["development", "production"] = "development"
    DEBUG: bool = False
    # Secret: a Postgres URL carries its password (read it with `.get_secret_value()`).
    DATABASE_URL: SecretStr = SecretStr("sqlite+aiosqlite:///./chatbot.db")
    DATABASE_POOL_SIZE: int = Field(default=10, ge=1, le=200)
    DATABASE_MAX_OVERFLOW: int = Field(default=10, ge=0, le=200)

    SECRET_KEY: SecretStr = SecretStr(DEFAULT_SECRET_KEY)
    ALGORITHM: str = "HS256"
    ACCESS_TOKEN_EXPIRE_MINUTES: int = Field(default=30, ge=1, le=24 * 60)
    REFRESH_TOKEN_EXPIRE_DAYS: int = Field(default=30, ge=1, le=365)
    AUTH_CACHE_SECONDS: float = Field(default=5.0, ge=0, le=300)
    # Where this API's users reach it: links in emails start here.
    PUBLIC_BASE_URL: str = "http://localhost:8000"
    INVITATION_EXPIRE_DAYS: int = Field(default=7, ge=1, le=90)
    # Email: SMTP when SMTP_HOST is set; otherwise messages are written to the log.
    SMTP_HOST: str | None = None
    SMTP_PORT: int = Field(default=587, ge=1, le=65535)
    SMTP_USERNAME: str | None = None
    SMTP_PASSWORD: SecretStr | None = None
    SMTP_FROM: str = "Chatbot Platform <no-reply@localhost>"
    SMTP_STARTTLS: bool = True
    SMTP_TIMEOUT: float = Field(default=30.0, gt=0, le=300)
    # Background jobs: workers inside each API process (false: only `python -m app.worker`).
    WORKERS_IN_API: bool = True
    JOBS_POLL_SECONDS: float = Field(default=0.5, gt=0, le=60)
    JOBS_CONCURRENCY: int = Field(default=4, ge=1, le=100)
    # A running job's lease (renewed by heartbeat); a job whose worker died runs again after it.
    JOBS_LEASE_SECONDS: float = Field(default=60.0, ge=1, le=3600)
    # Password reset: how long an emailed token works, and throttles (0: unlimited).
    PASSWORD_RESET_EXPIRE_MINUTES: int = Field(default=30, ge=5, le=24 * 60)
    PASSWORD_RESETS_PER_IP_PER_HOUR: int = Field(default=20, ge=0)
    PASSWORD_RESETS_PER_ACCOUNT_PER_HOUR: int = Field(default=5, ge=0)
    # Audit entries older than this are purged (by the retention sweep); 0 keeps them all.
    AUDIT_RETENTION_DAYS: int = Field(default=365, ge=0, le=36500)
    # Finished jobs (done, dead) are deleted after this many days; events after this many.
    JOBS_RETENTION_DAYS: int = Field(default=7, ge=1, le=3650)
    EVENTS_RETENTION_DAYS: int = Field(default=30, ge=1, le=3650)
    # How often the retention sweep runs (once per period across all processes).
    RETENTION_SWEEP_MINUTES: int = Field(default=60, ge=1, le=24 * 60)
    # Every URL a tenant configures (webhooks, channels, documents) is refused when it resolves
    # to a loopback, private, link-local or metadata address, unless this is true.
    OUTBOUND_ALLOW_PRIVATE_NETWORKS: bool = False
    # Webhooks: each delivery attempt's timeout, and how long an endpoint may fail every
    # delivery before it is disabled (a `webhook.disabled` event says so).
    WEBHOOK_TIMEOUT_SECONDS: float = Field(default=15.0, gt=0, le=120)
    WEBHOOK_DISABLE_AFTER_HOURS: float = Field(default=120.0, gt=0, le=24 * 90)
    # WhatsApp channels (app/channels/). Tokens and app secrets are encrypted at rest with
    # these Fernet keys (comma-separated: the first encrypts, every one decrypts, so a new key
    # goes first and the old one stays until `python -m app.channels rotate-keys` has run).
    CHANNEL_SECRETS_KEY: SecretStr = SecretStr(DEFAULT_CHANNEL_SECRETS_KEY)
    WHATSAPP_GRAPH_BASE_URL: str = "https://graph.facebook.com"
    WHATSAPP_API_VERSION: str = Field(default="v23.0", pattern=r"^v\d+\.\d+$")
    # Provider webhooks (Meta allows payloads up to 3 MB) get this body limit instead of
    # MAX_REQUEST_BODY_BYTES.
    CHANNEL_WEBHOOK_MAX_BYTES: int = Field(default=3 * 1024 * 1024, ge=1024)
    CHANNEL_SEND_TIMEOUT_SECONDS: float = Field(default=15.0, gt=0, le=120)
    # A send that got no answer may have gone: its retry waits this long for a status webhook
    # that says it did.
    CHANNEL_AMBIGUOUS_WAIT_SECONDS: float = Field(default=30.0, ge=0, le=3600)
    # A number written with a leading 0 (an admin command's target) gets this country code.
    CHANNEL_DEFAULT_COUNTRY_CODE: str = Field(default="62", pattern=r"^\d{1,4}$")
    # Consecutive failed bot replies after which a conversation is handed to a human.
    BOT_FAILURE_HANDOFF_THRESHOLD: int = Field(default=2, ge=1, le=100)
    # The seed's `POST /webhook/whapi`: one Whapi channel configured here, answered by the
    # project WHAPI_PROJECT_ID. Off unless WHAPI_TOKEN and WHAPI_PROJECT_ID are both set.
    WHAPI_TOKEN: SecretStr | None = None
    WHAPI_BASE_URL: str = "https://gate.whapi.cloud"
    WHAPI_ADMINS: Annotated[list[str], NoDecode] = Field(default_factory=list)
    WHAPI_PROJECT_ID: uuid.UUID | None = None
    # When set, the seed endpoint's requests must carry it in `X-Webhook-Secret`.
    WHAPI_WEBHOOK_SECRET: SecretStr | None = None
    # Knowledge bases (app/knowledge/). Uploads get KNOWLEDGE_MAX_FILE_BYTES as their body
    # limit (plus the multipart framing) instead of MAX_REQUEST_BODY_BYTES.
    KNOWLEDGE_MAX_FILE_BYTES: int = Field(default=20 * 1000 * 1000, ge=1024)
    KNOWLEDGE_MAX_PAGES: int = Field(default=1000, ge=1)
    KNOWLEDGE_MAX_CHARS: int = Field(default=5_000_000, ge=1000)
    KNOWLEDGE_MAX_DOCUMENTS_PER_PROJECT: int = Field(default=500, ge=1)
    KNOWLEDGE_MAX_BYTES_PER_PROJECT: int = Field(default=200 * 1000 * 1000, ge=1024)
    # Parsing runs in a child process with this much address space and time.
    KNOWLEDGE_PARSE_MEMORY_MB: int = Field(default=1024, ge=128)
    KNOWLEDGE_PARSE_TIMEOUT_SECONDS: float = Field(default=120.0, gt=0, le=3600)
    # Files one parser process reads (of one workspace) before it is replaced; 1: a new
    # process for every file.
    KNOWLEDGE_PARSE_FILES_PER_PROCESS: int = Field(default=50, ge=1, le=10_000)
    KNOWLEDGE_CHUNK_MIN_CHARS: int = Field(default=600, ge=50)
    KNOWLEDGE_CHUNK_MAX_CHARS: int = Field(default=1600, ge=100)
    # Semantic search, optional: chunks are embedded by any OpenAI-compatible `/embeddings`
    # (OpenAI, OpenRouter, a local server) and fused with keyword search. Off unless
    # EMBEDDINGS_BASE_URL is set. EMBEDDINGS_DIMENSIONS is sent as `dimensions` when set.
    EMBEDDINGS_BASE_URL: str | None = None
    EMBEDDINGS_API_KEY: SecretStr | None = None
    EMBEDDINGS_MODEL: str = Field(default="text-embedding-3-small", min_length=1, max_length=200)
    EMBEDDINGS_DIMENSIONS: int | None = Field(default=None, ge=1, le=8192)
    EMBEDDINGS_BATCH_SIZE: int = Field(default=128, ge=1, le=2048)
    # A question's embedding, in a chat turn or `retrieve`: every attempt within this.
    EMBEDDINGS_QUERY_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0, le=120)
    # Each process keeps the vectors it scanned, up to this size.
    KNOWLEDGE_VECTOR_CACHE_MB: int = Field(default=256, ge=0, le=65536)
    # Kafka: events are also published to KAFKA_TOPIC when KAFKA_BOOTSTRAP_SERVERS is set.
    KAFKA_BOOTSTRAP_SERVERS: str | None = None
    KAFKA_TOPIC: str = "chatbot.events"
    KAFKA_CLIENT_ID: str = "chatbot-platform"
    KAFKA_SECURITY_PROTOCOL: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    KAFKA_SASL_MECHANISM: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    KAFKA_SASL_USERNAME: str | None = None
    KAFKA_SASL_PASSWORD: SecretStr | None = None
    KAFKA_SSL_CAFILE: str | None = None
    # The idempotent producer needs a broker that supports it (Tansu, used in tests, does not).
    KAFKA_ENABLE_IDEMPOTENCE: bool = False
    JWT_ISSUER: str = "chatbot-platform"
    JWT_AUDIENCE: str = "chatbot-platform-api"

    LLM_PROVIDER: LLMProviderName | None = None
    LLM_BASE_URL: str | None = None
    LLM_MODEL: str | None = None
    LLM_TEMPERATURE: float = Field(default=0.7, ge=0.0, le=2.0)
    LLM_MAX_TOKENS: int = Field(default=1000, ge=1, le=32768)
    # Per attempt: connecting, and the wait for each response chunk.
    LLM_CONNECT_TIMEOUT: float = Field(default=5.0, gt=0, le=120)
    LLM_TIMEOUT: float = Field(default=30.0, gt=0, le=600)
    # Per turn: every attempt, retry and fallback included; and, when streaming, until the
    # first chunk of each attempt.
    LLM_TOTAL_TIMEOUT: float = Field(default=120.0, gt=0, le=3600)
    LLM_FIRST_TOKEN_TIMEOUT: float = Field(default=30.0, gt=0, le=600)
    # Attempts per provider/model on retryable failures, and the backoff between them.
    LLM_MAX_ATTEMPTS: int = Field(default=3, ge=1, le=10)
    LLM_RETRY_BASE_SECONDS: float = Field(default=0.5, ge=0, le=60)
    LLM_RETRY_MAX_SECONDS: float = Field(default=8.0, ge=0, le=300)
    # A provider+model is skipped for the cool-down after this many consecutive failures.
    LLM_BREAKER_THRESHOLD: int = Field(default=5, ge=1, le=1000)
    LLM_BREAKER_COOLDOWN_SECONDS: float = Field(default=30.0, gt=0, le=3600)
    GROQ_API_KEY: SecretStr | None = None
    OPENAI_API_KEY: SecretStr | None = None
    OPENROUTER_API_KEY: SecretStr | None = None
    OPENROUTER_SITE_URL: str | None = None
    OPENROUTER_APP_NAME: str = "Chatbot Platform"

    CORS_ORIGINS: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Rate-limit and quota counters live here when set (shared by every process); otherwise in
    # each process's memory.
    REDIS_URL: SecretStr | None = None
    # When Redis cannot be reached: true lets requests through (logged), false answers 503.
    RATE_LIMIT_FAIL_OPEN: bool = True

    # Chat turns per minute (0: unlimited). Projects and API keys can set their own.
    RATE_LIMIT_USER_PER_MINUTE: int = Field(default=120, ge=0)
    RATE_LIMIT_API_KEY_PER_MINUTE: int = Field(default=600, ge=0)
    RATE_LIMIT_PROJECT_PER_MINUTE: int = Field(default=1200, ge=0)
    RATE_LIMIT_END_USER_PER_MINUTE: int = Field(default=60, ge=0)
    # LLM tokens per 24 hours (0: unlimited). Projects and API keys can set their own.
    QUOTA_USER_TOKENS_PER_DAY: int = Field(default=0, ge=0)
    QUOTA_API_KEY_TOKENS_PER_DAY: int = Field(default=0, ge=0)
    QUOTA_PROJECT_TOKENS_PER_DAY: int = Field(default=0, ge=0)
    QUOTA_END_USER_TOKENS_PER_DAY: int = Field(default=0, ge=0)
    # Brute-force throttles: login attempts per IP per minute, failed logins per account per
    # 15 minutes, registrations per IP per hour.
    LOGIN_ATTEMPTS_PER_IP_PER_MINUTE: int = Field(default=30, ge=0)
    LOGIN_FAILURES_PER_ACCOUNT: int = Field(default=10, ge=0)
    REGISTRATIONS_PER_IP_PER_HOUR: int = Field(default=20, ge=0)
    MAX_REQUEST_BODY_BYTES: int = Field(default=1024 * 1024, ge=1024)
    MAX_MESSAGE_CHARS: int = Field(default=4000, ge=1, le=200_000)
    # Messages to one session are answered one at a time; a message waits this long for the
    # previous one's reply, then gets 409 session_busy.
    SESSION_TURN_WAIT_SECONDS: float = Field(default=60.0, ge=0, le=600)
    # Idempotency-Key: how long a key is remembered, and how long a retry waits for the first
    # request that is still running (then 409).
    IDEMPOTENCY_TTL_SECONDS: int = Field(default=86400, ge=60, le=30 * 86400)
    IDEMPOTENCY_WAIT_SECONDS: float = Field(default=30.0, ge=0, le=600)
    # Stateless chat (`/api/v1/chat`, `/v1/chat/completions`): caller-supplied history.
    MAX_HISTORY_MESSAGES: int = Field(default=50, ge=0, le=1000)
    # Intents: the time budget for matching one message against every pattern.
    INTENT_MATCH_TIMEOUT_MS: int = Field(default=50, ge=1, le=5000)
    # `/metrics` (Prometheus): open unless this is set, then scrapers send it as a bearer token.
    METRICS_TOKEN: SecretStr | None = None
    # `json`: one JSON object per line (for log pipelines); `text`: key=value lines.
    LOG_FORMAT: Literal["json", "text"] = "json"
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Streaming (SSE) replies.
    STREAM_PING_SECONDS: float = Field(default=15.0, gt=0, le=300)
    STREAM_FLUSH_SECONDS: float = Field(default=0.5, gt=0, le=30)
    STREAM_POLL_SECONDS: float = Field(default=0.25, gt=0, le=30)
    STREAM_STALE_SECONDS: float = Field(default=90.0, gt=0, le=3600)
    SHUTDOWN_GRACE_SECONDS: float = Field(default=10.0, ge=0, le=600)

    @field_validator("CORS_ORIGINS", "WHAPI_ADMINS", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator(
        "LLM_PROVIDER",
        "LLM_BASE_URL",
        "LLM_MODEL",
        "EMBEDDINGS_BASE_URL",
        "EMBEDDINGS_DIMENSIONS",
        "REDIS_URL",
        "KAFKA_BOOTSTRAP_SERVERS",
        "KAFKA_SASL_MECHANISM",
        "KAFKA_SASL_USERNAME",
        "KAFKA_SASL_PASSWORD",
        "KAFKA_SSL_CAFILE",
        "WHAPI_TOKEN",
        "WHAPI_PROJECT_ID",
        "WHAPI_WEBHOOK_SECRET",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(
        "GROQ_API_KEY", "OPENAI_API_KEY", "OPENROUTER_API_KEY", "EMBEDDINGS_API_KEY", mode="before"
    )
    @classmethod
    def _blank_key_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("ALGORITHM")
    @classmethod
    def _known_algorithm(cls, value: str) -> str:
        if value not in ALLOWED_JWT_ALGORITHMS:
            raise ValueError(f"ALGORITHM must be one of {', '.join(ALLOWED_JWT_ALGORITHMS)}")
        return value

    @model_validator(mode="after")
    def _check_deployment(self) -> Settings:
        provider = self.LLM_PROVIDER
        if (
            provider
            and provider != "echo"
            and self.api_key_for(provider) is None
            and not self.LLM_BASE_URL
        ):
            raise ValueError(
                f"LLM_PROVIDER={provider} needs {provider.upper()}_API_KEY (or LLM_BASE_URL "
                "for a keyless OpenAI-compatible server such as Ollama)"
            )
        if max(self.LLM_TIMEOUT, self.STREAM_FLUSH_SECONDS * 4) >= self.STREAM_STALE_SECONDS:
            raise ValueError(
                "STREAM_STALE_SECONDS must exceed LLM_TIMEOUT and 4 x STREAM_FLUSH_SECONDS: a "
                "reply is only treated as interrupted once its generator has been silent longer "
                "than any legitimate wait"
            )
        if self.ENVIRONMENT == "production":
            if self.SECRET_KEY.get_secret_value() == DEFAULT_SECRET_KEY:
                raise ValueError("ENVIRONMENT=production refuses the default SECRET_KEY")
            if self.CHANNEL_SECRETS_KEY.get_secret_value() == DEFAULT_CHANNEL_SECRETS_KEY:
                raise ValueError(
                    "ENVIRONMENT=production refuses the default CHANNEL_SECRETS_KEY; make one "
                    "with: python -c 'from cryptography.fernet import Fernet; "
                    "print(Fernet.generate_key().decode())'"
                )
            if len(self.SECRET_KEY.get_secret_value()) < 32:
                raise ValueError("ENVIRONMENT=production needs a SECRET_KEY of 32+ characters")
            if self.default_provider == "echo":
                raise ValueError(
                    "ENVIRONMENT=production needs a real LLM provider: set LLM_PROVIDER and its "
                    "API key (GROQ_API_KEY, OPENAI_API_KEY or OPENROUTER_API_KEY)"
                )
        return self

    def api_key_for(self, provider: str) -> SecretStr | None:
        keys = {
            "groq": self.GROQ_API_KEY,
            "openai": self.OPENAI_API_KEY,
            "openrouter": self.OPENROUTER_API_KEY,
        }
        return keys.get(provider)

    @property
    def default_provider(self) -> str:
        """LLM_PROVIDER if set, else the first provider with a key, else `echo`."""
        if self.LLM_PROVIDER:
            return self.LLM_PROVIDER
        for name in ("groq", "openai", "openrouter"):
            if self.api_key_for(name) is not None:
                return name
        return "echo"

    @property
    def default_model(self) -> str:
        return self.LLM_MODEL or PROVIDER_DEFAULT_MODELS[self.default_provider]

    @property
    def is_sqlite(self) -> bool:
        return self.DATABASE_URL.get_secret_value().startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once on first use."""
    return Settings()
