"""Services for the chat and session routes, each built for a caller holding the route's scope
(a signed-in user, or a project API key)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from app.auth.dependencies import CurrentPrincipal, Principal, require_scope
from app.chat.export import SessionExporter
from app.chat.service import ChatService
from app.chat.sessions import SessionService
from app.chat.streaming import GenerationRegistry
from app.chat.usage import UsageService
from app.core.db import SessionDep, SessionmakerDep
from app.workspaces.roles import Role


async def get_generations(request: Request) -> GenerationRegistry:
    generations: GenerationRegistry = request.app.state.generations
    return generations


GenerationsDep = Annotated[GenerationRegistry, Depends(get_generations)]


def _chat_service(
    caller: Callable[..., Awaitable[Principal]],
) -> Callable[..., Awaitable[ChatService]]:
    # One dependency reading the lifespan's objects off app.state, not one each: every
    # dependency costs FastAPI work on each request, and this is the chat hot path.
    async def build(
        request: Request,
        principal: Principal = Depends(caller),  # a default: see require_scope
    ) -> ChatService:
        state = request.app.state
        return ChatService(
            state.sessionmaker,
            principal,
            state.llm_registry,
            state.settings,
            state.generations,
            state.rate_limits,
            state.project_configs,
        )

    return build


def _session_service(
    caller: Callable[..., Awaitable[Principal]],
) -> Callable[..., Awaitable[SessionService]]:
    async def build(
        session: SessionDep,
        principal: Principal = Depends(caller),  # a default: see require_scope
    ) -> SessionService:
        return SessionService(session, principal)

    return build


async def get_exporter(
    maker: SessionmakerDep,
    principal: Annotated[Principal, Depends(require_scope("sessions:read"))],
) -> SessionExporter:
    return SessionExporter(maker, principal)


async def get_usage_service(session: SessionDep, principal: CurrentPrincipal) -> UsageService:
    return UsageService(session, principal.workspace_id)


# Members need the role named (the default is viewer: every member); API keys the scope.
# Sending messages, regenerating, cancelling: scope `chat`, role agent.
ChatServiceDep = Annotated[
    ChatService, Depends(_chat_service(require_scope("chat", role=Role.AGENT)))
]
# Following a reply: `chat` or `sessions:read`; also `?access_token=` for EventSource.
StreamChatServiceDep = Annotated[
    ChatService, Depends(_chat_service(require_scope("chat", "sessions:read", stream=True)))
]
SessionReaderDep = Annotated[
    SessionService, Depends(_session_service(require_scope("sessions:read")))
]
# Renaming: agent. Deleting a conversation for good: admin.
SessionWriterDep = Annotated[
    SessionService, Depends(_session_service(require_scope("sessions:write", role=Role.AGENT)))
]
SessionDeleterDep = Annotated[
    SessionService, Depends(_session_service(require_scope("sessions:write", role=Role.ADMIN)))
]
# Rating a reply: `chat` (end users rate what they were told) or `sessions:write`; agent.
FeedbackDep = Annotated[
    SessionService,
    Depends(_session_service(require_scope("chat", "sessions:write", role=Role.AGENT))),
]
ExporterDep = Annotated[SessionExporter, Depends(get_exporter)]
UsageServiceDep = Annotated[UsageService, Depends(get_usage_service)]
