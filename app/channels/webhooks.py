"""Provider webhooks: authenticate, parse, store, acknowledge. Nothing here calls the LLM or a
provider; a request that was authenticated is answered 200 `{"status": "ok"}` even when it
carries nothing we use (Meta disables endpoints that keep failing), and 503 only when nothing
could be stored (the database is down: the provider delivers again)."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.channels.cache import ChannelCache, KnownChannel
from app.channels.inbound import Received, receive
from app.channels.providers import PROVIDERS
from app.channels.providers.meta_cloud import verify_signature
from app.channels.secrets import SecretBox, digest, matches_digest
from app.core.config import Settings
from app.core.driver import transaction
from app.core.errors import ForbiddenError, NotFoundError, UnauthorizedError
from app.models import Channel, ChannelProvider, ChannelStatus, Project

logger = logging.getLogger("app.channels")
SEED_NAMESPACE = uuid.UUID("6f1c2a52-8a43-4c55-9b0e-8f2d3f8c1a01")


def channel_not_found() -> NotFoundError:
    return NotFoundError("Channel not found.", code="channel_not_found")


async def load_channel(
    maker: async_sessionmaker[AsyncSession],
    cache: ChannelCache,
    box: SecretBox,
    channel_id: uuid.UUID,
    provider: str,
) -> KnownChannel:
    """The channel a webhook URL names (not tenant-scoped: the URL's unguessable id and the
    request's signature or secret are what authenticate it)."""
    known = await cache.get(maker, box, channel_id)
    if known is None or known.channel.provider != provider:
        raise channel_not_found()
    return known


def verify_handshake(
    channel: Channel, mode: str | None, token: str | None, challenge: str | None
) -> str:
    """Meta's subscription check: the challenge back, if the verify token is this channel's."""
    if mode != "subscribe" or not challenge or not matches_digest(token, channel.verify_token_hash):
        raise ForbiddenError(
            "The verify token does not match this channel's.", code="invalid_verify_token"
        )
    return challenge


def parse_json(body: bytes, channel: Channel) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        logger.warning("webhook body is not JSON channel_id=%s", channel.id)
        return None


async def accept_meta(
    maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    known: KnownChannel,
    body: bytes,
    signature: str | None,
) -> Received:
    if not known.app_secret or not verify_signature(known.app_secret, body, signature):
        raise invalid_signature("X-Hub-Signature-256 is missing or does not match the body.")
    return await _accept(maker, settings, known, parse_json(body, known.channel))


async def accept_whapi(
    maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    known: KnownChannel,
    body: bytes,
    secret: str | None,
) -> Received:
    if not matches_digest(secret, known.channel.webhook_secret_hash):
        raise invalid_signature("X-Webhook-Secret is missing or is not this channel's secret.")
    return await _accept(maker, settings, known, parse_json(body, known.channel))


def invalid_signature(message: str) -> UnauthorizedError:
    return UnauthorizedError(message, code="invalid_signature")


async def _accept(
    maker: async_sessionmaker[AsyncSession], settings: Settings, known: KnownChannel, payload: Any
) -> Received:
    channel = known.channel
    if channel.status == ChannelStatus.DISABLED or payload is None:
        return Received()
    link_id = channel.phone_number_id if channel.provider == ChannelProvider.META_CLOUD else None
    inbound = PROVIDERS[channel.provider].parse(payload, link_id)
    return await receive(
        maker, channel, inbound, settings.CHANNEL_DEFAULT_COUNTRY_CODE, known.include_content
    )


# -- the seed's `POST /webhook/whapi` ---------------------------------------------------------


def seed_channel_id(project_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(SEED_NAMESPACE, f"whapi-seed:{project_id}")


async def accept_seed(
    maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    box: SecretBox,
    body: bytes,
    secret: str | None,
) -> Received:
    """The seed's endpoint: one Whapi channel configured by WHAPI_* settings."""
    if settings.WHAPI_TOKEN is None or settings.WHAPI_PROJECT_ID is None:
        raise NotFoundError(
            "The seed's Whapi webhook is not configured: set WHAPI_TOKEN and WHAPI_PROJECT_ID "
            "(or connect a channel with POST /projects/{project_id}/channels).",
            code="channel_not_configured",
        )
    expected = settings.WHAPI_WEBHOOK_SECRET
    if expected is not None and not matches_digest(secret, digest(expected.get_secret_value())):
        raise invalid_signature(
            "X-Webhook-Secret is missing or does not match WHAPI_WEBHOOK_SECRET."
        )
    channel = await _seed_channel(maker, settings, box)
    payload = parse_json(body, channel)
    if isinstance(payload, dict):
        name_messages(payload, body)
    async with maker() as db:
        project = await db.get(Project, channel.project_id)
    known = KnownChannel(channel, None, bool(project and project.events_include_content), 0.0)
    return await _accept(maker, settings, known, payload)


def name_messages(payload: dict[str, Any], body: bytes) -> None:
    """The seed's payload has no message ids: name each by the body's hash and its place, so
    an exact re-delivery is recognised."""
    messages = payload.get("messages")
    if not isinstance(messages, list):
        return
    base = hashlib.sha256(body).hexdigest()[:32]
    for index, message in enumerate(messages):
        if isinstance(message, dict) and not message.get("id"):
            message["id"] = f"seed:{base}:{index}"


async def _seed_channel(
    maker: async_sessionmaker[AsyncSession], settings: Settings, box: SecretBox
) -> Channel:
    """The settings' channel, made on first use and kept in step with the settings."""
    try:
        return await _upsert_seed_channel(maker, settings, box)
    except IntegrityError:  # a concurrent first request made it
        return await _upsert_seed_channel(maker, settings, box)


async def _upsert_seed_channel(
    maker: async_sessionmaker[AsyncSession], settings: Settings, box: SecretBox
) -> Channel:
    assert settings.WHAPI_PROJECT_ID is not None and settings.WHAPI_TOKEN is not None  # noqa: S101
    channel_id = seed_channel_id(settings.WHAPI_PROJECT_ID)
    token = settings.WHAPI_TOKEN.get_secret_value()
    async with transaction(maker) as db:
        channel = await db.get(Channel, channel_id)
        if channel is None:
            project = await db.get(Project, settings.WHAPI_PROJECT_ID)
            if project is None:
                raise NotFoundError(
                    "WHAPI_PROJECT_ID names no project.", code="channel_not_configured"
                )
            channel = Channel(
                id=channel_id,
                workspace_id=project.workspace_id,
                project_id=project.id,
                provider=ChannelProvider.WHAPI,
                name="Whapi (from settings)",
                status=ChannelStatus.ACTIVE,
                access_token_enc=box.encrypt(token),
                admin_numbers=list(settings.WHAPI_ADMINS),
                settings={},
                from_settings=True,
                base_url=settings.WHAPI_BASE_URL,
            )
            db.add(channel)
        elif (
            box.decrypt(channel.access_token_enc) != token
            or channel.admin_numbers != list(settings.WHAPI_ADMINS)
            or channel.base_url != settings.WHAPI_BASE_URL
        ):
            channel.access_token_enc = box.encrypt(token)
            channel.admin_numbers = list(settings.WHAPI_ADMINS)
            channel.base_url = settings.WHAPI_BASE_URL
    return channel
