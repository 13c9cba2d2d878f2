from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.auth.dependencies import CurrentPrincipal
from app.core.db import SessionDep
from app.prompts.service import PromptService


async def get_prompt_service(session: SessionDep, principal: CurrentPrincipal) -> PromptService:
    return PromptService(session, principal.workspace_id)


PromptServiceDep = Annotated[PromptService, Depends(get_prompt_service)]
