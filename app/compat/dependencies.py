"""Services for the compatibility endpoints: always a project API key holding `chat`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.auth.dependencies import Principal, require_api_key
from app.chat.dependencies import GenerationsDep
from app.chat.service import ChatService
from app.chat.stateless import StatelessChat
from app.core.db import SessionmakerDep
from app.core.dependencies import (
    LLMRegistryDep,
    ProjectConfigsDep,
    RateLimitsDep,
    SettingsDep,
)

ApiKeyCaller = Annotated[Principal, Depends(require_api_key("chat"))]


async def get_stateless_chat(
    principal: ApiKeyCaller,
    maker: SessionmakerDep,
    registry: LLMRegistryDep,
    settings: SettingsDep,
    limits: RateLimitsDep,
    configs: ProjectConfigsDep,
) -> StatelessChat:
    return StatelessChat(maker, principal, registry, settings, limits, configs)


async def get_key_chat_service(
    principal: ApiKeyCaller,
    maker: SessionmakerDep,
    registry: LLMRegistryDep,
    settings: SettingsDep,
    generations: GenerationsDep,
    limits: RateLimitsDep,
    configs: ProjectConfigsDep,
) -> ChatService:
    return ChatService(maker, principal, registry, settings, generations, limits, configs)


StatelessChatDep = Annotated[StatelessChat, Depends(get_stateless_chat)]
KeyChatServiceDep = Annotated[ChatService, Depends(get_key_chat_service)]
