from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.auth.dependencies import CurrentPrincipal
from app.chat.service import ChatService
from app.chat.sessions import SessionService
from app.core.db import SessionDep, SessionmakerDep
from app.core.dependencies import LLMRegistryDep, SettingsDep


async def get_chat_service(
    maker: SessionmakerDep,
    principal: CurrentPrincipal,
    registry: LLMRegistryDep,
    settings: SettingsDep,
) -> ChatService:
    return ChatService(maker, principal.workspace_id, registry, settings)


async def get_session_service(session: SessionDep, principal: CurrentPrincipal) -> SessionService:
    return SessionService(session, principal.workspace_id)


ChatServiceDep = Annotated[ChatService, Depends(get_chat_service)]
SessionServiceDep = Annotated[SessionService, Depends(get_session_service)]
