"""Who is calling: the bearer token resolved to a user and their workspace."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends
from fastapi.security import OAuth2PasswordBearer

from app.auth.service import AuthService
from app.core.db import SessionDep
from app.core.dependencies import SettingsDep
from app.core.errors import UnauthorizedError
from app.core.security import decode_access_token

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/auth/login", auto_error=False)


async def get_auth_service(session: SessionDep, settings: SettingsDep) -> AuthService:
    return AuthService(session, settings)


AuthServiceDep = Annotated[AuthService, Depends(get_auth_service)]


@dataclass(frozen=True)
class Principal:
    """The authenticated caller and the workspace (tenant) every query is scoped to."""

    user_id: uuid.UUID
    email: str
    created_at: datetime
    workspace_id: uuid.UUID
    role: str


async def get_current_principal(
    token: Annotated[str | None, Depends(oauth2_scheme)],
    settings: SettingsDep,
    auth: AuthServiceDep,
) -> Principal:
    if not token:
        raise UnauthorizedError("Missing bearer token.", code="not_authenticated")
    claims = decode_access_token(settings, token)
    if claims is None:
        raise UnauthorizedError("The access token is invalid or expired.", code="invalid_token")
    membership = await auth.membership(claims.user_id)
    if membership is None:
        raise UnauthorizedError("The access token is invalid or expired.", code="invalid_token")
    user = membership.user
    return Principal(
        user_id=user.id,
        email=user.email,
        created_at=user.created_at,
        workspace_id=membership.workspace_id,
        role=membership.role,
    )


CurrentPrincipal = Annotated[Principal, Depends(get_current_principal)]
