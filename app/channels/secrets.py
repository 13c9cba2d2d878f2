"""Channel secrets at rest. Tokens and app secrets are needed in clear (to call the provider
and to check signatures), so they are encrypted with MultiFernet: the first CHANNEL_SECRETS_KEY
encrypts, every one decrypts, and `rotate` re-encrypts with the first. Verify tokens and Whapi
webhook secrets are only compared, so only their SHA-256 is kept."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr


class SecretsKeyError(ValueError):
    """CHANNEL_SECRETS_KEY is not a list of Fernet keys (or none of them opens a stored
    secret)."""


class SecretBox:
    def __init__(self, keys: SecretStr) -> None:
        parts = [part.strip() for part in keys.get_secret_value().split(",") if part.strip()]
        try:
            self._fernet = MultiFernet([Fernet(part) for part in parts])
        except (ValueError, TypeError) as exc:
            raise SecretsKeyError(
                "CHANNEL_SECRETS_KEY must be one or more comma-separated Fernet keys (32 "
                "url-safe base64-encoded bytes each)"
            ) from exc

    def encrypt(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise SecretsKeyError(
                "a channel secret could not be decrypted with any CHANNEL_SECRETS_KEY (was the "
                "key that encrypted it removed?)"
            ) from exc

    def rotate(self, token: str) -> str:
        """The same secret, encrypted with the first key."""
        return self._fernet.rotate(token.encode()).decode()


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def matches_digest(value: str | None, expected: str | None) -> bool:
    """Constant-time comparison of a presented secret with a stored digest."""
    if not value or not expected:
        return False
    return hmac.compare_digest(digest(value), expected)


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(24)
