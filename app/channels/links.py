"""A channel's connection values (`Link`), decrypted when needed."""

from __future__ import annotations

from app.channels.providers.base import Link
from app.channels.secrets import SecretBox
from app.core.config import Settings
from app.models import Channel, ChannelProvider


def default_base_url(settings: Settings, provider: str) -> str:
    if provider == ChannelProvider.META_CLOUD:
        return settings.WHATSAPP_GRAPH_BASE_URL
    return settings.WHAPI_BASE_URL


def link_for(channel: Channel, box: SecretBox, settings: Settings) -> Link:
    return Link(
        base_url=channel.base_url or default_base_url(settings, channel.provider),
        token=box.decrypt(channel.access_token_enc),
        phone_number_id=channel.phone_number_id,
        api_version=channel.api_version or settings.WHATSAPP_API_VERSION,
    )
