"""Channel routes: connecting numbers (admins), and the providers' public webhooks."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.responses import PlainTextResponse

from app.auth.dependencies import CurrentPrincipal, RequireAdmin, require_role
from app.channels.cache import ChannelCache
from app.channels.schemas import (
    ChannelCreate,
    ChannelCreated,
    ChannelRead,
    ChannelUpdate,
    RotatedSecret,
)
from app.channels.secrets import SecretBox
from app.channels.service import ChannelService, channel_read
from app.channels.webhooks import (
    accept_meta,
    accept_seed,
    accept_whapi,
    load_channel,
    verify_handshake,
)
from app.core.db import SessionDep, SessionmakerDep
from app.core.dependencies import SettingsDep
from app.core.errors import error_responses
from app.core.pagination import Page, PageParamsDep
from app.models import ChannelProvider
from app.workspaces.roles import Role

channels_router = APIRouter(tags=["Channels"], responses=error_responses(401, 403, 404, 422))
provider_webhooks_router = APIRouter(tags=["Channel webhooks"])
RequireAgent = Depends(require_role(Role.AGENT))
OK = {"status": "ok"}


async def get_secret_box(request: Request) -> SecretBox:
    box: SecretBox = request.app.state.channel_secrets
    return box


async def get_channel_cache(request: Request) -> ChannelCache:
    cache: ChannelCache = request.app.state.channel_cache
    return cache


SecretBoxDep = Annotated[SecretBox, Depends(get_secret_box)]
ChannelCacheDep = Annotated[ChannelCache, Depends(get_channel_cache)]


async def get_channel_service(
    session: SessionDep,
    principal: CurrentPrincipal,
    settings: SettingsDep,
    box: SecretBoxDep,
    cache: ChannelCacheDep,
) -> ChannelService:
    return ChannelService(session, principal.workspace_id, settings, box, cache)


ChannelServiceDep = Annotated[ChannelService, Depends(get_channel_service)]


def _base(request: Request) -> str:
    return str(request.base_url)


@channels_router.post(
    "/projects/{project_id}/channels",
    status_code=status.HTTP_201_CREATED,
    response_model=ChannelCreated,
    dependencies=[RequireAdmin],
    responses=error_responses(409),
)
async def create_channel(
    project_id: uuid.UUID, body: ChannelCreate, channels: ChannelServiceDep, request: Request
) -> object:
    """Connect a WhatsApp number (Meta Cloud API or Whapi). The answer holds `webhook_url` and,
    only this once, the `verify_token` (Meta) or `webhook_secret` (Whapi) to give the provider."""
    return await channels.create(project_id, body, _base(request))


@channels_router.get(
    "/projects/{project_id}/channels", response_model=Page[ChannelRead], dependencies=[RequireAgent]
)
async def list_channels(
    project_id: uuid.UUID, channels: ChannelServiceDep, page: PageParamsDep, request: Request
) -> object:
    """The project's channels, oldest first (never their secrets)."""
    items, next_cursor = await channels.list_page(project_id, page)
    return Page[ChannelRead](
        items=[channel_read(c, _base(request), ChannelRead) for c in items], next_cursor=next_cursor
    )


@channels_router.get(
    "/channels/{channel_id}", response_model=ChannelRead, dependencies=[RequireAgent]
)
async def get_channel(
    channel_id: uuid.UUID, channels: ChannelServiceDep, request: Request
) -> object:
    """One channel: its status, health and settings (never its secrets)."""
    return channel_read(await channels.get(channel_id), _base(request), ChannelRead)


@channels_router.patch(
    "/channels/{channel_id}", response_model=ChannelRead, dependencies=[RequireAdmin]
)
async def update_channel(
    channel_id: uuid.UUID, body: ChannelUpdate, channels: ChannelServiceDep, request: Request
) -> object:
    """Change a channel; new credentials bring an `auth_error` channel back to `active`."""
    return channel_read(await channels.update(channel_id, body), _base(request), ChannelRead)


@channels_router.delete(
    "/channels/{channel_id}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[RequireAdmin]
)
async def delete_channel(channel_id: uuid.UUID, channels: ChannelServiceDep) -> Response:
    """Disconnect the number (its conversations go; their chat sessions stay)."""
    await channels.delete(channel_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@channels_router.post(
    "/channels/{channel_id}/rotate-secret",
    response_model=RotatedSecret,
    dependencies=[RequireAdmin],
)
async def rotate_channel_secret(channel_id: uuid.UUID, channels: ChannelServiceDep) -> object:
    """A new verify token (Meta) or webhook secret (Whapi), shown once; the old one stops
    working now."""
    return await channels.rotate_secret(channel_id)


# -- public: the providers call these ----------------------------------------------------------


@provider_webhooks_router.get(
    "/webhooks/meta/{channel_id}",
    response_class=Response,  # errors are JSON (the one error shape); the challenge is text
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "The challenge.",
        },
        **error_responses(403, 404),
    },
)
async def meta_handshake(
    channel_id: uuid.UUID,
    maker: SessionmakerDep,
    cache: ChannelCacheDep,
    box: SecretBoxDep,
    mode: Annotated[str | None, Query(alias="hub.mode")] = None,
    token: Annotated[str | None, Query(alias="hub.verify_token")] = None,
    challenge: Annotated[str | None, Query(alias="hub.challenge", max_length=200)] = None,
) -> PlainTextResponse:
    """Meta's verification request: answers `hub.challenge` as plain text when
    `hub.verify_token` is the channel's (403 `invalid_verify_token` otherwise)."""
    known = await load_channel(maker, cache, box, channel_id, ChannelProvider.META_CLOUD)
    return PlainTextResponse(verify_handshake(known.channel, mode, token, challenge))


@provider_webhooks_router.post(
    "/webhooks/meta/{channel_id}", responses=error_responses(401, 404, 503)
)
async def meta_webhook(
    channel_id: uuid.UUID,
    request: Request,
    maker: SessionmakerDep,
    settings: SettingsDep,
    box: SecretBoxDep,
    cache: ChannelCacheDep,
    x_hub_signature_256: Annotated[str | None, Header()] = None,
) -> dict[str, str]:
    """Messages and statuses from the WhatsApp Cloud API, signed with the app secret
    (`X-Hub-Signature-256`, checked over the raw body; 401 `invalid_signature`)."""
    known = await load_channel(maker, cache, box, channel_id, ChannelProvider.META_CLOUD)
    await accept_meta(maker, settings, known, await request.body(), x_hub_signature_256)
    return OK


@provider_webhooks_router.post(
    "/webhooks/whapi/{channel_id}", responses=error_responses(401, 404, 503)
)
async def whapi_webhook(
    channel_id: uuid.UUID,
    request: Request,
    maker: SessionmakerDep,
    settings: SettingsDep,
    box: SecretBoxDep,
    cache: ChannelCacheDep,
    x_webhook_secret: Annotated[str | None, Header()] = None,
) -> dict[str, str]:
    """Messages and statuses from Whapi.cloud; they carry the channel's secret in
    `X-Webhook-Secret` (401 `invalid_signature` otherwise)."""
    known = await load_channel(maker, cache, box, channel_id, ChannelProvider.WHAPI)
    await accept_whapi(maker, settings, known, await request.body(), x_webhook_secret)
    return OK


@provider_webhooks_router.post("/webhook/whapi", responses=error_responses(401, 404, 503))
async def seed_whapi_webhook(
    request: Request,
    maker: SessionmakerDep,
    settings: SettingsDep,
    box: SecretBoxDep,
    x_webhook_secret: Annotated[str | None, Header()] = None,
) -> dict[str, str]:
    """The seed's Whapi webhook, for the channel configured by WHAPI_TOKEN, WHAPI_PROJECT_ID,
    WHAPI_ADMINS and WHAPI_BASE_URL (and WHAPI_WEBHOOK_SECRET, required in `X-Webhook-Secret`
    when set). Takes the seed's own payload:
    `{"messages":[{"from": "62811xxxx", "text": {"body": "Halo"}}]}`."""
    await accept_seed(maker, settings, box, await request.body(), x_webhook_secret)
    return OK
