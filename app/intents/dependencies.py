from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.auth.dependencies import CurrentPrincipal
from app.core.db import SessionDep
from app.intents.service import IntentService


async def get_intent_service(session: SessionDep, principal: CurrentPrincipal) -> IntentService:
    return IntentService(session, principal.workspace_id)


IntentServiceDep = Annotated[IntentService, Depends(get_intent_service)]
