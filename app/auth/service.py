"""Registration, login, refresh-token rotation and logout."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.recorder import new_entry
from app.auth.repository import AccountRepository, Membership
from app.auth.schemas import TokenPair
from app.core.config import Settings
from app.core.errors import ConflictError, UnauthorizedError
from app.core.security import (
    create_access_token,
    hash_password,
    hash_refresh_token,
    new_refresh_token,
    verify_password,
)
from app.models import RefreshToken, User


class LoginFailedError(UnauthorizedError):
    """Wrong credentials: the failure is recorded in the audit log of the account's
    workspaces, and that record is committed although the request fails."""

    keep_writes = True


class RefreshTokenReusedError(UnauthorizedError):
    """An already-rotated refresh token came back: the whole family is revoked (and committed)."""

    keep_writes = True


def normalize_email(email: str) -> str:
    return email.strip().lower()


class AuthService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.accounts = AccountRepository(session)
        self.session = session
        self.settings = settings

    async def register(self, email: str, password: str) -> User:
        """Create a user and their personal workspace. Emails are unique case-insensitively."""
        email = normalize_email(email)
        if await self.accounts.get_user_by_email(email) is not None:
            raise _email_taken()
        password_hash = await hash_password(password)
        try:
            return await self.accounts.add_user_with_workspace(email, password_hash)
        except IntegrityError as exc:  # a concurrent registration won the race
            raise _email_taken() from exc

    async def login(self, email: str, password: str) -> TokenPair:
        user = await self.accounts.get_user_by_email(normalize_email(email))
        ok, upgraded_hash = await verify_password(password, user.password_hash if user else None)
        if user is None or not ok or not user.is_active:
            if user is not None:
                await self._record_login_failure(user.id)
            raise LoginFailedError("Incorrect email or password.", code="invalid_credentials")
        if upgraded_hash:
            user.password_hash = upgraded_hash
        return self._issue_pair(user.id, family_id=uuid.uuid4())

    async def _record_login_failure(self, user_id: uuid.UUID) -> None:
        for workspace_id in await self.accounts.workspace_ids(user_id):
            self.session.add(
                new_entry(
                    workspace_id,
                    "auth.login_failed",
                    "user",
                    str(user_id),
                    actor=("anonymous", None, None),
                )
            )
        await self.session.flush()

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Rotate: the presented token stops working and a new pair is issued."""
        now = datetime.now(UTC)
        stored = await self.accounts.get_refresh_token(hash_refresh_token(refresh_token))
        if stored is None or stored.expires_at <= now:
            raise _invalid_refresh()
        if not await self.accounts.consume_refresh_token(stored.id, now):
            await self.accounts.revoke_family(stored.family_id, now)
            raise RefreshTokenReusedError(
                "This refresh token was already used; every session from its login has been "
                "signed out. Log in again.",
                code="refresh_token_reused",
            )
        if await self.accounts.get_membership(stored.user_id) is None:
            raise _invalid_refresh()
        return self._issue_pair(stored.user_id, family_id=stored.family_id)

    async def logout(self, refresh_token: str) -> None:
        """Revoke the token's whole family. Unknown tokens are ignored (logout is idempotent)."""
        stored = await self.accounts.get_refresh_token(hash_refresh_token(refresh_token))
        if stored is not None:
            await self.accounts.revoke_family(stored.family_id, datetime.now(UTC))

    async def membership(self, user_id: uuid.UUID) -> Membership | None:
        return await self.accounts.get_membership(user_id)

    def _issue_pair(self, user_id: uuid.UUID, family_id: uuid.UUID) -> TokenPair:
        access_token, expires_in = create_access_token(self.settings, user_id)
        token = new_refresh_token()
        lifetime = timedelta(days=self.settings.REFRESH_TOKEN_EXPIRE_DAYS)
        self.accounts.add_refresh_token(
            RefreshToken(
                id=uuid.uuid4(),
                user_id=user_id,
                family_id=family_id,
                token_hash=hash_refresh_token(token),
                expires_at=datetime.now(UTC) + lifetime,
            )
        )
        return TokenPair(
            access_token=access_token,
            expires_in=expires_in,
            refresh_token=token,
            refresh_expires_in=int(lifetime.total_seconds()),
        )


def _email_taken() -> ConflictError:
    return ConflictError("An account with this email already exists.", code="email_taken")


def _invalid_refresh() -> UnauthorizedError:
    return UnauthorizedError(
        "The refresh token is invalid or expired.", code="invalid_refresh_token"
    )
