"""Auth and current-user routes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from app.auth.dependencies import AuthServiceDep, CurrentPrincipal
from app.auth.password_reset import PasswordResets
from app.auth.schemas import (
    Accepted,
    LoginJSON,
    PasswordResetConfirm,
    PasswordResetRequest,
    RefreshRequest,
    TokenPair,
    UserCreate,
    UserMe,
    UserRead,
)
from app.core.db import SessionDep
from app.core.dependencies import RateLimitsDep, SettingsDep
from app.core.errors import UnauthorizedError, error_responses
from app.core.ratelimit import Rule

router = APIRouter(prefix="/auth", tags=["Auth"])
users_router = APIRouter(prefix="/users", tags=["Users"])

_LOGIN_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["username", "password"],
                    "properties": {
                        "username": {"type": "string", "description": "Your email."},
                        "password": {"type": "string", "format": "password"},
                    },
                },
                "example": {"username": "user@example.com", "password": "password123"},
            },
            "application/json": {
                "schema": LoginJSON.model_json_schema(),
                "example": {"email": "user@example.com", "password": "password123"},
            },
        },
    }
}


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserRead,
    responses=error_responses(409, 422, 429),
)
async def register(
    body: UserCreate,
    request: Request,
    auth: AuthServiceDep,
    limits: RateLimitsDep,
    settings: SettingsDep,
) -> Any:
    """Create an account (and its personal workspace). Passwords are 8..128 characters.
    Registrations are throttled per client IP (`REGISTRATIONS_PER_IP_PER_HOUR`)."""
    ip = _client_ip(request)
    await limits.hit([Rule("register_ip", (ip,), settings.REGISTRATIONS_PER_IP_PER_HOUR, "hour")])
    return await auth.register(body.email, body.password)


def _client_ip(request: Request) -> str:
    """The peer address (behind a proxy, run uvicorn with --proxy-headers and
    FORWARDED_ALLOW_IPS so this is the client's)."""
    return request.client.host if request.client else "unknown"


async def _login_credentials(request: Request) -> LoginJSON:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if content_type == "application/json":
            return LoginJSON.model_validate_json(await request.body())
        form = await request.form()
        return LoginJSON.model_validate(
            {"email": form.get("username"), "password": form.get("password")}
        )
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from exc


@router.post(
    "/login",
    response_model=TokenPair,
    openapi_extra=_LOGIN_BODY,
    responses=error_responses(401, 422, 429),
)
async def login(
    request: Request, auth: AuthServiceDep, limits: RateLimitsDep, settings: SettingsDep
) -> TokenPair:
    """Exchange email and password (OAuth2 form `username`/`password`, or JSON) for tokens.

    Throttled against brute force: attempts per client IP per minute, and failed attempts per
    account per 15 minutes (then 429 `rate_limited` with `Retry-After`)."""
    credentials = await _login_credentials(request)
    ip = _client_ip(request)
    await limits.hit([Rule("login_ip", (ip,), settings.LOGIN_ATTEMPTS_PER_IP_PER_MINUTE)])
    account = Rule(
        "login_account",
        (credentials.email.strip().lower(),),
        settings.LOGIN_FAILURES_PER_ACCOUNT,
        "minute",
        15,
    )
    await limits.refuse_if_exhausted(
        account, "Too many failed sign-ins for this account; try again later."
    )
    try:
        return await auth.login(credentials.email, credentials.password)
    except UnauthorizedError:
        await limits.count(account)
        raise


async def get_password_resets(session: SessionDep, settings: SettingsDep) -> PasswordResets:
    return PasswordResets(session, settings)


PasswordResetsDep = Annotated[PasswordResets, Depends(get_password_resets)]


@router.post(
    "/password-reset",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    responses=error_responses(422, 429),
)
async def request_password_reset(
    body: PasswordResetRequest,
    request: Request,
    resets: PasswordResetsDep,
    limits: RateLimitsDep,
    settings: SettingsDep,
) -> Accepted:
    """Email a single-use reset link (`{PUBLIC_BASE_URL}/reset-password?token=...`, valid
    `PASSWORD_RESET_EXPIRE_MINUTES`). Always 202, whether or not the account exists. Throttled
    per client IP and per address (`PASSWORD_RESETS_PER_IP_PER_HOUR`,
    `PASSWORD_RESETS_PER_ACCOUNT_PER_HOUR`)."""
    email = str(body.email).strip().lower()
    await limits.hit(
        [
            Rule(
                "reset_ip", (_client_ip(request),), settings.PASSWORD_RESETS_PER_IP_PER_HOUR, "hour"
            ),
            Rule("reset_account", (email,), settings.PASSWORD_RESETS_PER_ACCOUNT_PER_HOUR, "hour"),
        ]
    )
    await resets.request(email)
    return Accepted(status="accepted")


@router.post(
    "/password-reset/confirm",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(410, 422),
)
async def confirm_password_reset(body: PasswordResetConfirm, resets: PasswordResetsDep) -> Response:
    """Set a new password with the emailed token (once). Every refresh token of the account is
    revoked: each session signs in again. A used, expired or unknown token answers 410."""
    await resets.confirm(body.token, body.new_password)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/refresh", response_model=TokenPair, responses=error_responses(401, 422))
async def refresh(body: RefreshRequest, auth: AuthServiceDep) -> TokenPair:
    """Rotate a refresh token: returns a new pair; the old refresh token stops working."""
    return await auth.refresh(body.refresh_token)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(422))
async def logout(body: RefreshRequest, auth: AuthServiceDep) -> Response:
    """Revoke a refresh token and every token rotated from the same login."""
    await auth.logout(body.refresh_token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@users_router.get("/me", response_model=UserMe, responses=error_responses(401))
async def read_me(principal: CurrentPrincipal) -> UserMe:
    """The authenticated user."""
    return UserMe(
        id=principal.user_id,
        email=principal.email,
        created_at=principal.created_at,
        workspace_id=principal.workspace_id,
        role=principal.role,
    )
