"""Channels resolved recently, so a webhook does not re-read its channel (and decrypt its app
secret) on every request. An entry lives AUTH_CACHE_SECONDS, like a checked caller: a change
made in this process (PATCH, DELETE, rotate-secret) forgets it at once; other processes see
it within that time."""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.channels.secrets import SecretBox
from app.models import Channel, Project

CACHED_CHANNELS = 10_000


@dataclass(frozen=True)
class KnownChannel:
    channel: Channel  # detached: read its columns only
    app_secret: str | None  # decrypted (Meta)
    include_content: bool  # the project's events_include_content
    until: float  # monotonic


class ChannelCache:
    def __init__(self, ttl_seconds: float, size: int = CACHED_CHANNELS) -> None:
        self.ttl = ttl_seconds
        self.size = size
        self._entries: OrderedDict[uuid.UUID, KnownChannel] = OrderedDict()

    async def get(
        self, maker: async_sessionmaker[AsyncSession], box: SecretBox, channel_id: uuid.UUID
    ) -> KnownChannel | None:
        known = self._entries.get(channel_id)
        if known is not None and known.until > time.monotonic():
            return known
        async with maker() as db:
            channel = await db.get(Channel, channel_id)
            project = await db.get(Project, channel.project_id) if channel else None
        if channel is None or project is None:
            self.forget(channel_id)
            return None
        known = KnownChannel(
            channel=channel,
            app_secret=box.decrypt(channel.app_secret_enc) if channel.app_secret_enc else None,
            include_content=bool(project.events_include_content),
            until=time.monotonic() + self.ttl,
        )
        if self.ttl > 0:
            self._entries[channel_id] = known
            self._entries.move_to_end(channel_id)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return known

    def forget(self, channel_id: uuid.UUID) -> None:
        self._entries.pop(channel_id, None)
