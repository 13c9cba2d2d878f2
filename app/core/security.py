"""Passwords (argon2 via the passlib API, run off the event loop) and JWT access tokens."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import anyio.to_thread
from jose import JWTError, jwt
from passlib.context import CryptContext

from app.core.config import Settings

# argon2 hashes new passwords; bcrypt hashes (e.g. from the Laravel app) still verify and are
# re-hashed with argon2 on the next successful login.
_password_context = CryptContext(schemes=["argon2", "bcrypt"], deprecated="auto")
# Verified against when the email is unknown, so both paths take the same time.
_DUMMY_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$YCwlhHCudY5xDmHMmfP+nw$"
    "MKuimZFZMDgonXh5dlyE77luYKBfwrokXkJ2Xk3kGhQ"
)


async def hash_password(password: str) -> str:
    digest: str = await anyio.to_thread.run_sync(_password_context.hash, password)
    return digest


async def verify_password(password: str, password_hash: str | None) -> tuple[bool, str | None]:
    """(matches, new hash if the stored one should be upgraded)."""

    def _verify() -> tuple[bool, str | None]:
        try:
            ok, new_hash = _password_context.verify_and_update(
                password, password_hash or _DUMMY_HASH
            )
        except (ValueError, TypeError):
            return False, None
        return bool(ok) and password_hash is not None, new_hash

    return await anyio.to_thread.run_sync(_verify)


@dataclass(frozen=True)
class AccessTokenClaims:
    user_id: uuid.UUID
    expires_at: datetime


def create_access_token(settings: Settings, user_id: uuid.UUID) -> tuple[str, int]:
    """A signed access token and its lifetime in seconds."""
    now = datetime.now(UTC)
    lifetime = timedelta(minutes=settings.ACCESS_TOKEN_EXPIRE_MINUTES)
    claims = {
        "sub": str(user_id),
        "iss": settings.JWT_ISSUER,
        "aud": settings.JWT_AUDIENCE,
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int((now + lifetime).timestamp()),
        "jti": uuid.uuid4().hex,
        "typ": "access",
    }
    token = jwt.encode(claims, settings.SECRET_KEY.get_secret_value(), settings.ALGORITHM)
    return token, int(lifetime.total_seconds())


def decode_access_token(settings: Settings, token: str) -> AccessTokenClaims | None:
    """The token's claims, or None if it is invalid, expired, or not ours."""
    try:
        claims = jwt.decode(
            token,
            settings.SECRET_KEY.get_secret_value(),
            algorithms=[settings.ALGORITHM],
            audience=settings.JWT_AUDIENCE,
            issuer=settings.JWT_ISSUER,
            options={"require_exp": True, "require_sub": True, "require_iat": True},
        )
        if claims.get("typ") != "access":
            return None
        return AccessTokenClaims(
            user_id=uuid.UUID(str(claims["sub"])),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        )
    except (JWTError, ValueError, KeyError, TypeError):
        return None


def new_refresh_token() -> str:
    return secrets.token_urlsafe(48)


def sha256_hex(secret: str) -> str:
    """For high-entropy secrets (refresh tokens, API keys), where a fast hash is safe."""
    return hashlib.sha256(secret.encode()).hexdigest()


def hash_refresh_token(token: str) -> str:
    return sha256_hex(token)
