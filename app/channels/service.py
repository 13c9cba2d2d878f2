"""Connecting WhatsApp numbers to projects: create, read, change, delete, rotate secrets."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.channels.cache import ChannelCache
from app.channels.schemas import (
    ChannelCreated,
    ChannelRead,
    ChannelUpdate,
    MetaChannelCreate,
    RotatedSecret,
    WhapiChannelCreate,
)
from app.channels.secrets import SecretBox, digest, new_secret
from app.conversations.repository import ChannelRepository
from app.core.config import Settings
from app.core.errors import ConflictError, NotFoundError
from app.core.outbound import check_url
from app.core.pagination import Keyset, PageParams
from app.models import Channel, ChannelProvider, ChannelStatus
from app.projects.service import ProjectService

CHANNEL_KEYSET = Keyset((Channel.created_at, Channel.id))


def channel_not_found() -> NotFoundError:
    return NotFoundError("Channel not found.", code="channel_not_found")


def webhook_url(base: str, channel: Channel) -> str:
    provider = "meta" if channel.provider == ChannelProvider.META_CLOUD else "whapi"
    return f"{base.rstrip('/')}/webhooks/{provider}/{channel.id}"


def channel_read(
    channel: Channel, base: str, model: type[ChannelRead] = ChannelRead, **extra: Any
) -> Any:
    return model(
        **{key: getattr(channel, key) for key in ChannelRead.model_fields if hasattr(channel, key)},
        webhook_url=webhook_url(base, channel),
        has_access_token=bool(channel.access_token_enc),
        has_app_secret=bool(channel.app_secret_enc),
        **extra,
    )


def secret_for(channel: Channel) -> RotatedSecret:
    """A new verify token (Meta) or webhook secret (Whapi), its digest stored on the channel."""
    if channel.provider == ChannelProvider.META_CLOUD:
        token = new_secret("vt_")
        channel.verify_token_hash = digest(token)
        return RotatedSecret(verify_token=token)
    secret = new_secret("whs_")
    channel.webhook_secret_hash = digest(secret)
    return RotatedSecret(webhook_secret=secret)


def new_channel(
    project_id: uuid.UUID, data: MetaChannelCreate | WhapiChannelCreate, box: SecretBox
) -> Channel:
    """The channel a create body describes, its secrets encrypted."""
    channel = Channel(
        id=uuid.uuid4(),
        project_id=project_id,
        provider=data.provider,
        name=data.name,
        status=ChannelStatus.ACTIVE,
        base_url=data.base_url,
        settings=data.settings.model_dump(exclude_none=True),
        admin_numbers=[],
    )
    if isinstance(data, MetaChannelCreate):
        channel.phone_number_id = data.phone_number_id
        channel.display_phone_number = data.display_phone_number
        channel.api_version = data.api_version
        channel.access_token_enc = box.encrypt(data.access_token)
        channel.app_secret_enc = box.encrypt(data.app_secret)
    else:
        channel.access_token_enc = box.encrypt(data.token)
        channel.admin_numbers = list(data.admin_numbers)
    return channel


def apply_changes(channel: Channel, data: ChannelUpdate, box: SecretBox) -> None:
    """A PATCH's fields on the channel; new credentials bring an `auth_error` one back."""
    changes = data.model_dump(exclude_unset=True)
    for field in ("name", "base_url", "api_version", "admin_numbers"):
        if field in changes and (
            changes[field] is not None or field in ("base_url", "api_version")
        ):
            setattr(channel, field, changes[field])
    if data.settings is not None:
        channel.settings = data.settings.model_dump(exclude_none=True)
    credentials = False
    if changes.get("access_token"):
        channel.access_token_enc, credentials = box.encrypt(changes["access_token"]), True
    if changes.get("app_secret") and channel.provider == ChannelProvider.META_CLOUD:
        channel.app_secret_enc, credentials = box.encrypt(changes["app_secret"]), True
    if changes.get("status") is not None:
        channel.status = changes["status"]
    elif credentials and channel.status == ChannelStatus.AUTH_ERROR:
        channel.status = ChannelStatus.ACTIVE  # new credentials: try again


class ChannelService:
    def __init__(
        self,
        session: AsyncSession,
        workspace_id: uuid.UUID,
        settings: Settings,
        box: SecretBox,
        cache: ChannelCache,
    ):
        self.session = session
        self.cache = cache
        self.settings = settings
        self.box = box
        self.channels = ChannelRepository(session, workspace_id)
        self.projects = ProjectService(session, workspace_id)

    async def create(
        self, project_id: uuid.UUID, data: MetaChannelCreate | WhapiChannelCreate, base: str
    ) -> ChannelCreated:
        """Connect a number; the answer holds the one secret we generate (shown only now)."""
        await self.projects.get(project_id)
        if data.base_url:
            await check_url(
                data.base_url,
                allow_private=self.settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS,
                field="base_url",
            )
        if isinstance(data, MetaChannelCreate):
            await self._check_number_free(data.phone_number_id)
        channel = new_channel(project_id, data, self.box)
        secret = secret_for(channel)
        self.channels.add(channel)
        await self.session.flush()
        await self.session.refresh(channel)
        created: ChannelCreated = channel_read(channel, base, ChannelCreated, **secret.model_dump())
        return created

    async def _check_number_free(self, phone_number_id: str) -> None:
        taken = await self.session.scalar(
            select(Channel.id).where(
                Channel.provider == ChannelProvider.META_CLOUD,
                Channel.phone_number_id == phone_number_id,
            )
        )
        if taken is not None:
            raise ConflictError(
                "This phone number id is already connected to a channel.", code="channel_exists"
            )

    async def list_page(
        self, project_id: uuid.UUID, params: PageParams
    ) -> tuple[list[Channel], str | None]:
        await self.projects.get(project_id)
        statement = self.channels.scoped().where(Channel.project_id == project_id)
        return await self.channels.page(statement, CHANNEL_KEYSET, params)

    async def get(self, channel_id: uuid.UUID) -> Channel:
        channel = await self.channels.get(channel_id)
        if channel is None:
            raise channel_not_found()
        return channel

    async def update(self, channel_id: uuid.UUID, data: ChannelUpdate) -> Channel:
        channel = await self.get(channel_id)
        if data.base_url:
            await check_url(
                data.base_url,
                allow_private=self.settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS,
                field="base_url",
            )
        apply_changes(channel, data, self.box)
        self.cache.forget(channel.id)
        await self.session.flush()
        await self.session.refresh(channel)
        return channel

    async def delete(self, channel_id: uuid.UUID) -> None:
        """Disconnect the number; its conversations and their provider records go too (the
        chat sessions, with their messages, stay)."""
        await self.channels.delete(await self.get(channel_id))
        self.cache.forget(channel_id)
        await self.session.flush()

    async def rotate_secret(self, channel_id: uuid.UUID) -> RotatedSecret:
        """A new verify token / webhook secret; the old one stops working now."""
        channel = await self.get(channel_id)
        secret = secret_for(channel)
        self.cache.forget(channel.id)
        await self.session.flush()
        return secret
