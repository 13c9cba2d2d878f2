"""Password reset: an emailed single-use token with a short lifetime. Asking always answers the
same (no account enumeration); confirming sets the password, uses the token up and signs out
every session of the account (its refresh tokens are revoked)."""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta
from urllib.parse import urlencode

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.recorder import new_entry
from app.auth.repository import AccountRepository
from app.auth.service import normalize_email
from app.core.config import Settings
from app.core.errors import AppError
from app.core.security import hash_password, sha256_hex
from app.core.types import as_utc, utcnow
from app.models import PasswordResetToken, RefreshToken, User
from app.notifications.email import Email, queue_email


class ResetTokenGoneError(AppError):
    status_code = 410
    code = "reset_token_invalid"
    message = "This password reset link is invalid, used or expired: ask for a new one."


class PasswordResets:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.session = session
        self.settings = settings
        self.accounts = AccountRepository(session)

    async def request(self, email: str) -> None:
        """Email a reset link if an active account has this address; nothing otherwise."""
        user = await self.accounts.get_user_by_email(normalize_email(email))
        if user is None or not user.is_active:
            return
        token = secrets.token_urlsafe(32)
        now = utcnow()
        lifetime = timedelta(minutes=self.settings.PASSWORD_RESET_EXPIRE_MINUTES)
        self.session.add(
            PasswordResetToken(
                id=uuid.uuid4(),
                user_id=user.id,
                token_hash=sha256_hex(token),
                created_at=now,
                expires_at=now + lifetime,
            )
        )
        link = f"{self.settings.PUBLIC_BASE_URL.rstrip('/')}/reset-password?"
        link += urlencode({"token": token})
        minutes = self.settings.PASSWORD_RESET_EXPIRE_MINUTES
        text = (
            "Someone (hopefully you) asked to reset the password of your Chatbot Platform "
            f"account.\n\nChoose a new password here (the link works once, for {minutes} "
            f"minutes):\n\n{link}\n\nIf it was not you, ignore this email: your password stays "
            "as it is."
        )
        await queue_email(self.session, Email(user.email, "Reset your password", text))
        await self._record(user.id, "auth.password_reset_requested")

    async def confirm(self, token: str, new_password: str) -> None:
        now = utcnow()
        stored = (
            await self.session.execute(
                select(PasswordResetToken).where(PasswordResetToken.token_hash == sha256_hex(token))
            )
        ).scalar_one_or_none()
        if stored is None or stored.used_at is not None or as_utc(stored.expires_at) <= now:
            raise ResetTokenGoneError()
        used = await self.session.execute(
            update(PasswordResetToken)
            .where(PasswordResetToken.id == stored.id, PasswordResetToken.used_at.is_(None))
            .values(used_at=now)
        )
        if not used.rowcount:  # type: ignore[attr-defined]  # a concurrent confirm won
            raise ResetTokenGoneError()
        password_hash = await hash_password(new_password)
        await self.session.execute(
            update(User).where(User.id == stored.user_id).values(password_hash=password_hash)
        )
        await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.user_id == stored.user_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        await self._record(stored.user_id, "auth.password_reset")

    async def _record(self, user_id: uuid.UUID, action: str) -> None:
        """A security event in the audit log of each of the account's workspaces."""
        for workspace_id in await self.accounts.workspace_ids(user_id):
            self.session.add(
                new_entry(
                    workspace_id, action, "user", str(user_id), actor=("anonymous", None, None)
                )
            )
        await self.session.flush()
