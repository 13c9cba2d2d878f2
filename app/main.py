"""The application: `uvicorn app.main:app`, or the factory form `uvicorn --factory
app.main:create_app`.

Importing this module builds nothing: `app` is made by `create_app()` on first access (module
`__getattr__`), so tests, scripts and the factory form never build an app they do not use, and
no logging is configured until a server asks for the app.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app import __version__
from app.api_keys.router import router as api_keys_router
from app.audit.recorder import AuditedSession
from app.audit.router import router as audit_router
from app.auth.cache import PrincipalCache
from app.auth.dependencies import document_caller_errors
from app.auth.router import router as auth_router
from app.auth.router import users_router
from app.channels.cache import ChannelCache
from app.channels.router import channels_router, provider_webhooks_router
from app.chat.router import chat_router, sessions_router
from app.chat.streaming import GenerationRegistry
from app.compat.openai import router as openai_router
from app.compat.seed import router as seed_router
from app.conversations.router import conversations_router
from app.core.config import Settings, get_settings
from app.core.db import create_engine, create_sessionmaker
from app.core.errors import register_error_handlers
from app.core.heap import settle_after_startup
from app.core.logging import RequestContextMiddleware, configure_logging
from app.core.metrics import Metrics, MetricsMiddleware
from app.core.middleware import (
    BodySizeLimitMiddleware,
    NulGuardMiddleware,
    SecurityHeadersMiddleware,
)
from app.core.ratelimit import RateLimits
from app.events.router import feed_router, jobs_router, webhooks_router
from app.health.router import router as health_router
from app.intents.router import router as intents_router
from app.jobs.setup import Background, llm_client
from app.knowledge.router import UPLOAD_PATH
from app.knowledge.router import router as knowledge_router
from app.llm.registry import build_registry
from app.projects.config import ProjectConfigs
from app.projects.router import router as projects_router
from app.prompts.router import router as prompts_router
from app.workspaces.router import invitations_router
from app.workspaces.router import router as workspaces_router

logger = logging.getLogger("app")

DESCRIPTION = """
A stateless, multi-tenant chatbot API. Register, create a **project** (a chatbot agent) with
**system prompts**, and chat with it through persistent **sessions**.

Authenticate with `POST /auth/login` (the **Authorize** button above does it for you), then send
`Authorization: Bearer <access_token>`. Every error has the shape
`{"error": {"code": "...", "message": "...", "details": [...]}}`.
"""

TAGS = [
    {"name": "Auth", "description": "Accounts and tokens."},
    {"name": "Users", "description": "The current user."},
    {
        "name": "Workspaces",
        "description": "Teams: workspaces, their members and roles (owner, admin, agent, "
        "viewer). Send `X-Workspace-ID` to act in one; without it, your personal workspace.",
    },
    {
        "name": "Audit log",
        "description": "Every change to a workspace's configuration, and its security events.",
    },
    {"name": "Projects", "description": "Chatbot agents and their LLM settings."},
    {"name": "Prompts", "description": "A project's system prompts."},
    {
        "name": "API keys",
        "description": "Keys for your backend: chat and sessions of one project, per end user.",
    },
    {
        "name": "Intents",
        "description": "Rules that answer matching messages with a canned reply, no LLM call.",
    },
    {"name": "Chat", "description": "Talk to a project's agent."},
    {"name": "Sessions", "description": "Conversations and their messages."},
    {
        "name": "Server-to-server",
        "description": "The stateless chat contract for backends (`/api/v1/chat`), with a "
        "project API key.",
    },
    {
        "name": "OpenAI-compatible",
        "description": "`/v1/chat/completions` and `/v1/models` for OpenAI clients and SDKs, "
        'with a project API key; errors use OpenAI\'s `{"error": {...}}` body.',
    },
    {
        "name": "Webhooks",
        "description": "A project's webhook endpoints: CloudEvents signed the Standard Webhooks "
        "way, retried for 27 hours, each attempt logged.",
    },
    {
        "name": "Events",
        "description": "A project's events (CloudEvents 1.0) as a feed to poll or an SSE stream.",
    },
    {"name": "Jobs", "description": "Background jobs: list the ones that gave up, retry them."},
    {
        "name": "Channels",
        "description": "WhatsApp numbers connected to a project (Meta Cloud API, Whapi.cloud); "
        "secrets are write-only.",
    },
    {
        "name": "Conversations",
        "description": "The operators' side of channel conversations: the queue, handoff to "
        "and from the bot, replies. The server decides whether the bot may speak.",
    },
    {
        "name": "Channel webhooks",
        "description": "Called by the providers (signed or carrying the channel's secret); the "
        "seed's `POST /webhook/whapi` too.",
    },
    {
        "name": "Knowledge",
        "description": "Documents the bot answers from: upload PDF, HTML, Markdown, text or "
        "DOCX (indexed in the background), read their chunks with pages and offsets, and "
        "test retrieval.",
    },
    {"name": "Health", "description": "Liveness and readiness probes."},
]


def _lifespan(
    settings: Settings, llm_transport: httpx.AsyncBaseTransport | None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings, app.state.metrics)
        if llm_transport is None:
            http_client = llm_client(settings)
        else:
            http_client = httpx.AsyncClient(
                timeout=httpx.Timeout(settings.LLM_TIMEOUT, connect=settings.LLM_CONNECT_TIMEOUT),
                transport=llm_transport,
            )
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine, AuditedSession)
        app.state.http_client = http_client
        metrics = app.state.metrics
        app.state.llm_registry = registry = build_registry(settings, http_client, metrics)
        app.state.generations = generations = GenerationRegistry(metrics)
        app.state.rate_limits = RateLimits(settings)
        app.state.project_configs = ProjectConfigs()
        app.state.principals = PrincipalCache(settings.AUTH_CACHE_SECONDS)
        app.state.background = background = Background(
            settings,
            app.state.sessionmaker,
            metrics,
            registry=registry,
            configs=app.state.project_configs,
        )
        app.state.channel_secrets = background.secrets
        app.state.channel_cache = ChannelCache(settings.AUTH_CACHE_SECONDS)
        app.state.worker = background.worker
        if settings.WORKERS_IN_API:
            app.state.sessionmaker.configure(info=background.wake_hooks())
            background.start()
        logger.info(
            "started environment=%s database=%s llm_provider=%s llm_model=%s",
            settings.ENVIRONMENT,
            engine.dialect.name,
            registry.default_name,
            registry.default_model,
        )
        if registry.default_name == "echo":
            logger.warning(
                "no LLM API key configured: the built-in echo provider is answering chats"
            )
        if settings.ENVIRONMENT == "production" and not settings.SMTP_HOST:
            logger.warning(
                "no SMTP_HOST: emails (invitations, password resets) are written to the log, "
                "one-time links included; set SMTP_HOST"
            )
        if settings.ENVIRONMENT == "production" and settings.is_sqlite:
            logger.warning("running in production on SQLite; use Postgres (DATABASE_URL)")
        settle_after_startup()
        try:
            yield
        finally:
            if settings.WORKERS_IN_API:
                await background.stop()
            else:
                await background.close()
            await generations.shutdown(settings.SHUTDOWN_GRACE_SECONDS)
            await http_client.aclose()
            await engine.dispose()
            app.state.metrics.process_ended()

    return lifespan


def create_app(
    settings: Settings | None = None, *, llm_transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """Build the app. Settings are read from the environment unless given; `llm_transport`
    replaces the network under the shared LLM HTTP client (tests point it at a fake upstream)."""
    settings = settings or get_settings()
    configure_logging("DEBUG" if settings.DEBUG else settings.LOG_LEVEL, settings.LOG_FORMAT)
    app = FastAPI(
        title="Chatbot Platform",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        debug=False,
        lifespan=_lifespan(settings, llm_transport),
    )
    register_error_handlers(app)
    app.state.metrics = metrics = Metrics()
    for router in (
        health_router,
        auth_router,
        users_router,
        workspaces_router,
        invitations_router,
        audit_router,
        projects_router,
        prompts_router,
        intents_router,
        api_keys_router,
        chat_router,
        sessions_router,
        seed_router,
        openai_router,
        webhooks_router,
        feed_router,
        jobs_router,
        channels_router,
        conversations_router,
        provider_webhooks_router,
        knowledge_router,
    ):
        document_caller_errors(router.routes)
        app.include_router(router)
    # Added innermost first: the request-context middleware wraps everything.
    uploads = re.compile(UPLOAD_PATH)
    # Inside the size limit: it reads bounded bodies (all but the document uploads').
    app.add_middleware(NulGuardMiddleware, file_uploads=(uploads,))
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_body_bytes=settings.MAX_REQUEST_BODY_BYTES,
        # Provider webhooks: Meta's payloads may be up to 3 MB.
        larger=(
            ("/webhooks/", settings.CHANNEL_WEBHOOK_MAX_BYTES),
            ("/webhook/", settings.CHANNEL_WEBHOOK_MAX_BYTES),
            # Document uploads: the file's own limit (413 `too_large` past it), plus room for
            # the multipart framing and the title.
            (uploads, settings.KNOWLEDGE_MAX_FILE_BYTES + 64 * 1024),
        ),
    )
    app.add_middleware(SecurityHeadersMiddleware, hsts=settings.ENVIRONMENT == "production")
    if settings.CORS_ORIGINS:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.CORS_ORIGINS,
            allow_credentials="*" not in settings.CORS_ORIGINS,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestContextMiddleware)
    return app


@functools.cache
def _default_app() -> FastAPI:
    return create_app()


def __getattr__(name: str) -> FastAPI:
    """`app.main:app`: the app built from the environment's settings, once per process."""
    if name == "app":
        return _default_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
