"""Who is calling: the bearer token resolved to a user and their workspace."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import Annotated, Any

from fastapi import Depends, Header, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.api_keys.service import (
    authenticate,
    hash_secret,
    looks_like_api_key,
    record_use_after_revocation,
)
from app.auth.cache import Found, PrincipalCache
from app.auth.repository import AccountRepository
from app.auth.service import AuthService
from app.core.config import Settings
from app.core.db import SessionDep, SessionmakerDep, autocommit_session
from app.core.dependencies import SettingsDep
from app.core.errors import (
    ForbiddenError,
    NotFoundError,
    UnauthorizedError,
    error_responses,
    field_error,
)
from app.core.logging import note_request_fact, request_actor_var
from app.core.security import decode_access_token
from app.workspaces.roles import Role, check_role

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/auth/login", auto_error=False)

WorkspaceHeader = Annotated[
    uuid.UUID | None,
    Header(
        alias="X-Workspace-ID",
        description="The workspace to act in (one of `GET /workspaces`). Without it: your "
        "personal workspace. Ignored for API keys, which are bound to their project's.",
    ),
]


async def get_auth_service(session: SessionDep, settings: SettingsDep) -> AuthService:
    return AuthService(session, settings)


AuthServiceDep = Annotated[AuthService, Depends(get_auth_service)]


@dataclass(frozen=True)
class Principal:
    """The authenticated caller and the workspace (tenant) every query is scoped to.

    A signed-in user reaches the workspace they act in, as far as their `role` there allows. A
    project API key reaches only its project, only within its scopes, and only the sessions of
    the end user it names.
    """

    user_id: uuid.UUID | None
    email: str
    created_at: datetime
    workspace_id: uuid.UUID
    role: str
    api_key_id: uuid.UUID | None = None
    project_id: uuid.UUID | None = None  # an API key's project
    scopes: frozenset[str] | None = None  # None: a user, who may do everything
    end_user_id: str | None = None  # the API-key caller's end user (`X-End-User-ID`)
    key_rate_limit: int | None = None  # an API key's own limits (None: the defaults)
    key_tokens_per_day: int | None = None

    @property
    def is_api_key(self) -> bool:
        return self.api_key_id is not None

    def with_end_user(self, end_user_id: str | None) -> Principal:
        """The caller acting for `end_user_id` (from a request body); it must agree with the
        `X-End-User-ID` header when both are sent."""
        if end_user_id is None or end_user_id == self.end_user_id:
            return self
        if self.is_api_key and self.end_user_id is not None:
            raise field_error("end_user_id", "differs from the X-End-User-ID header")
        return replace(self, end_user_id=end_user_id)


async def get_principal_cache(request: Request) -> PrincipalCache:
    cache: PrincipalCache = request.app.state.principals
    return cache


PrincipalCacheDep = Annotated[PrincipalCache, Depends(get_principal_cache)]


async def get_current_principal(
    token: Annotated[str | None, Depends(oauth2_scheme)],
    settings: SettingsDep,
    maker: SessionmakerDep,
    principals: PrincipalCacheDep,
    workspace_id: WorkspaceHeader = None,
) -> Principal:
    return await _principal(token, settings, maker, principals, workspace_id)


async def get_workspace_member(
    workspace_id: uuid.UUID,
    token: Annotated[str | None, Depends(oauth2_scheme)],
    settings: SettingsDep,
    maker: SessionmakerDep,
    principals: PrincipalCacheDep,
) -> Principal:
    """The caller as a member of the workspace in the path (`/workspaces/{workspace_id}/...`);
    404 for a workspace they are not a member of."""
    return await _principal(token, settings, maker, principals, workspace_id)


async def get_caller(
    request: Request,
    token: Annotated[str | None, Depends(oauth2_scheme)],
    x_api_key: Annotated[str | None, Header(description="A project API key.")] = None,
    x_end_user_id: Annotated[
        str | None,
        Header(
            max_length=200,
            description="With an API key: the end user you are acting for (your own id for "
            "them). Their sessions are theirs alone.",
        ),
    ] = None,
    workspace_id: WorkspaceHeader = None,
) -> Principal:
    """A signed-in user, or a project API key (`Authorization: Bearer cbp_…` or `X-API-Key`)."""
    # The lifespan's objects straight off app.state (the hot path: fewer dependencies).
    state = request.app.state
    settings: Settings = state.settings
    maker: async_sessionmaker[AsyncSession] = state.sessionmaker
    principals: PrincipalCache = state.principals
    secret = x_api_key or (token if token and looks_like_api_key(token) else None)
    if secret is None:
        return await _principal(token, settings, maker, principals, workspace_id)
    key_hash = hash_secret(secret)
    principal = await principals.load(f"key:{key_hash}", partial(_api_key_lookup, maker, key_hash))
    if principal is None:
        raise UnauthorizedError(
            "The API key is invalid, revoked or expired.", code="invalid_api_key"
        )
    note_request_fact("workspace_id", str(principal.workspace_id))
    note_request_fact("api_key_id", str(principal.api_key_id))
    request_actor_var.set(("api_key", principal.api_key_id, None))  # type: ignore[arg-type]
    return replace(principal, end_user_id=x_end_user_id) if x_end_user_id else principal


async def get_stream_caller(
    request: Request,
    token: Annotated[str | None, Depends(oauth2_scheme)],
    x_api_key: Annotated[str | None, Header(description="A project API key.")] = None,
    x_end_user_id: Annotated[str | None, Header(max_length=200)] = None,
    workspace_id: WorkspaceHeader = None,
    access_token: Annotated[
        str | None,
        Query(
            description="For browsers' `EventSource`, which cannot send headers: the access "
            "token. Prefer the `Authorization` header everywhere else."
        ),
    ] = None,
) -> Principal:
    """`get_caller`, also accepting a user's token as `?access_token=` (event streams only)."""
    return await get_caller(request, token or access_token, x_api_key, x_end_user_id, workspace_id)


def require_scope(
    *any_of: str, role: Role = Role.VIEWER, stream: bool = False
) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, if it is a member whose role reaches `role`, or an API key
    holding one of `any_of` (keys have scopes, not roles)."""
    caller_dependency = get_stream_caller if stream else get_caller

    # A default value, not `Annotated`: the closure's dependency must be evaluated now (this
    # module's annotations are strings resolved later, where `caller_dependency` is unknown).
    async def check(caller: Principal = Depends(caller_dependency)) -> Principal:
        if caller.scopes is None:
            check_role(caller.role, role)
        elif not caller.scopes.intersection(any_of):
            raise ForbiddenError(
                f"This API key lacks the scope for this call (needs {' or '.join(any_of)}).",
                code="insufficient_scope",
            )
        return caller

    return check


def require_role(role: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the signed-in member acting in the request's workspace, if their role
    there reaches `role` (403 `insufficient_role` otherwise)."""

    async def check(principal: CurrentPrincipal) -> Principal:
        check_role(principal.role, role)
        return principal

    return check


def require_member_role(role: Role) -> Callable[..., Awaitable[Principal]]:
    """`require_role` for the workspace in the path (`/workspaces/{workspace_id}/...`)."""

    async def check(principal: MemberCaller) -> Principal:
        check_role(principal.role, role)
        return principal

    return check


def require_api_key(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, which must be a project API key holding `scope`."""

    async def check(caller: Principal = Depends(require_scope(scope))) -> Principal:
        if not caller.is_api_key:
            raise ForbiddenError(
                "This endpoint takes a project API key (Authorization: Bearer cbp_...); create "
                "one with POST /projects/{project_id}/api-keys.",
                code="api_key_required",
            )
        return caller

    return check


async def _principal(
    token: str | None,
    settings: Settings,
    maker: async_sessionmaker[AsyncSession],
    principals: PrincipalCache,
    workspace_id: uuid.UUID | None = None,
) -> Principal:
    if token and looks_like_api_key(token):
        raise ForbiddenError(
            "API keys can only chat and read sessions; this route needs a signed-in user.",
            code="api_key_not_allowed",
        )
    if not token:
        raise UnauthorizedError("Missing bearer token.", code="not_authenticated")
    claims = decode_access_token(settings, token)
    if claims is None:
        raise UnauthorizedError("The access token is invalid or expired.", code="invalid_token")
    key = (
        f"user:{claims.user_id}"
        if workspace_id is None
        else f"user:{claims.user_id}@{workspace_id}"
    )
    lookup = partial(_user_lookup, maker, claims.user_id, workspace_id)
    principal = await principals.load(key, lookup)
    if principal is None:
        if workspace_id is not None and await _user_lookup(maker, claims.user_id, None):
            raise NotFoundError("Workspace not found.", code="workspace_not_found")
        raise UnauthorizedError("The access token is invalid or expired.", code="invalid_token")
    note_request_fact("workspace_id", str(principal.workspace_id))
    note_request_fact("user_id", str(principal.user_id))
    request_actor_var.set(("user", principal.user_id, principal.email))  # type: ignore[arg-type]
    return principal


async def _api_key_lookup(maker: async_sessionmaker[AsyncSession], key_hash: str) -> Found:
    # Autocommit: one round trip for the read (and one for the last-used write, once a minute),
    # and the write holds no lock for the rest of the request.
    async with autocommit_session(maker) as db:
        key = await authenticate(db, key_hash)
        if key is None:  # the failure path only: is it a revoked key someone still uses?
            await record_use_after_revocation(db, key_hash)
    if key is None:
        return None
    principal = Principal(
        user_id=None,
        email="",
        created_at=key.created_at,
        workspace_id=key.workspace_id,
        role="api_key",
        api_key_id=key.id,
        project_id=key.project_id,
        scopes=frozenset(key.scopes.split()),
        key_rate_limit=key.rate_limit_per_minute,
        key_tokens_per_day=key.tokens_per_day,
    )
    return principal, key.expires_at


async def _user_lookup(
    maker: async_sessionmaker[AsyncSession], user_id: uuid.UUID, workspace_id: uuid.UUID | None
) -> Found:
    async with autocommit_session(maker) as db:  # one round trip: no BEGIN, no ROLLBACK
        membership = await AccountRepository(db).get_membership(user_id, workspace_id)
    if membership is None:
        return None
    user = membership.user
    principal = Principal(
        user_id=user.id,
        email=user.email,
        created_at=user.created_at,
        workspace_id=membership.workspace_id,
        role=membership.role,
    )
    return principal, None


# Every member may read (viewer is the lowest role); these name what more a route needs.
CurrentPrincipal = Annotated[Principal, Depends(get_current_principal)]
MemberCaller = Annotated[Principal, Depends(get_workspace_member)]
RequireAdmin = Depends(require_role(Role.ADMIN))
# Chat and session routes: a member, or an API key with the scope each route names.
ChatCaller = Annotated[Principal, Depends(require_scope("chat", role=Role.AGENT))]
StreamCaller = Annotated[Principal, Depends(require_scope("chat", "sessions:read", stream=True))]
SessionsReader = Annotated[Principal, Depends(require_scope("sessions:read"))]
SessionsWriter = Annotated[Principal, Depends(require_scope("sessions:write", role=Role.AGENT))]


_CALLER_DEPENDENCIES = (get_current_principal, get_caller, get_workspace_member)


def document_caller_errors(routes: list[Any]) -> None:
    """Declare 403 and 404 on every route that resolves a caller: any of them may answer 404
    `workspace_not_found` (an `X-Workspace-ID` you are not a member of) and 403 (your role,
    or an API key's scopes)."""
    for route in routes:
        if isinstance(route, APIRoute) and _resolves_caller(route.dependant):
            for status_code, response in error_responses(403, 404).items():
                route.responses.setdefault(status_code, response)


def _resolves_caller(dependant: Dependant) -> bool:
    return dependant.call in _CALLER_DEPENDENCIES or any(
        _resolves_caller(sub) for sub in dependant.dependencies
    )
