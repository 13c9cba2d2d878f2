"""Project API keys: issued once, stored hashed, revoked at once."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.api_keys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from app.audit.recorder import new_entry
from app.core.errors import NotFoundError, field_error
from app.core.pagination import Keyset, PageParams
from app.core.repository import WorkspaceRepository
from app.core.security import sha256_hex
from app.core.types import as_utc
from app.models import ApiKey
from app.projects.service import ProjectService

KEY_PREFIX = "cbp_"
SHOWN_PREFIX_CHARS = 12
LAST_USED_RESOLUTION = timedelta(minutes=1)
API_KEY_KEYSET = Keyset((ApiKey.created_at, ApiKey.id), descending=True)


def new_secret() -> str:
    """`cbp_` and 256 bits of randomness."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return sha256_hex(secret)


def looks_like_api_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)


def to_read(key: ApiKey) -> ApiKeyRead:
    return ApiKeyRead(
        id=key.id,
        project_id=key.project_id,
        name=key.name,
        prefix=key.prefix,
        scopes=key.scopes.split(),
        created_at=key.created_at,
        last_used_at=key.last_used_at,
        expires_at=key.expires_at,
        rate_limit_per_minute=key.rate_limit_per_minute,
        tokens_per_day=key.tokens_per_day,
    )


class ApiKeyRepository(WorkspaceRepository[ApiKey]):
    model = ApiKey


class ApiKeyService:
    def __init__(self, session: AsyncSession, workspace_id: uuid.UUID) -> None:
        self.session = session
        self.keys = ApiKeyRepository(session, workspace_id)
        self.projects = ProjectService(session, workspace_id)

    async def create(
        self, project_id: uuid.UUID, data: ApiKeyCreate, created_by: uuid.UUID
    ) -> ApiKeyCreated:
        await self.projects.get(project_id)
        if data.expires_at is not None and as_utc(data.expires_at) <= datetime.now(UTC):
            raise field_error("expires_at", "must be in the future")
        secret = new_secret()
        key = self.keys.add(
            ApiKey(
                id=uuid.uuid4(),
                project_id=project_id,
                name=data.name,
                prefix=secret[:SHOWN_PREFIX_CHARS],
                key_hash=hash_secret(secret),
                scopes=" ".join(data.scopes),
                created_by_id=created_by,
                created_at=datetime.now(UTC),
                expires_at=as_utc(data.expires_at) if data.expires_at else None,
                rate_limit_per_minute=data.rate_limit_per_minute,
                tokens_per_day=data.tokens_per_day,
            )
        )
        await self.session.flush()
        return ApiKeyCreated(**to_read(key).model_dump(), key=secret)

    async def list_page(
        self, project_id: uuid.UUID, params: PageParams
    ) -> tuple[list[ApiKey], str | None]:
        await self.projects.get(project_id)
        statement = self.keys.scoped().where(
            ApiKey.project_id == project_id, ApiKey.revoked_at.is_(None)
        )
        return await self.keys.page(statement, API_KEY_KEYSET, params)

    async def revoke(self, project_id: uuid.UUID, key_id: uuid.UUID) -> None:
        await self.projects.get(project_id)
        key = await self.keys.get(key_id)
        if key is None or key.project_id != project_id or key.revoked_at is not None:
            raise NotFoundError("API key not found.", code="api_key_not_found")
        key.revoked_at = datetime.now(UTC)
        await self.session.flush()


async def record_use_after_revocation(session: AsyncSession, key_hash: str) -> None:
    """If `key_hash` is a revoked key's, note its use in its workspace's audit log."""
    result = await session.execute(
        select(ApiKey.id, ApiKey.workspace_id).where(
            ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_not(None)
        )
    )
    row = result.first()
    if row is not None:
        session.add(
            new_entry(row.workspace_id, "api_key.used_after_revocation", "api_key", str(row.id))
        )
        await session.flush()


async def authenticate(session: AsyncSession, key_hash: str) -> ApiKey | None:
    """The live key whose secret hashes to `key_hash` (see `hash_secret`; not revoked, not
    expired), noting when it was last used."""
    result = await session.execute(
        select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    )
    key: ApiKey | None = result.scalar_one_or_none()
    now = datetime.now(UTC)
    if key is None or (key.expires_at is not None and key.expires_at <= now):
        return None
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        await session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
    return key
