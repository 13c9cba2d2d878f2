from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.auth.dependencies import CurrentPrincipal
from app.core.db import SessionDep
from app.projects.service import ProjectService


async def get_project_service(session: SessionDep, principal: CurrentPrincipal) -> ProjectService:
    return ProjectService(session, principal.workspace_id)


ProjectServiceDep = Annotated[ProjectService, Depends(get_project_service)]
