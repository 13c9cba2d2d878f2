"""The `channel.send` job: one message part to the provider, and what its answer means.

- Accepted: the part is `accepted` with the provider's id; status webhooks take it further.
- A temporary failure (5xx, Meta's 131000/131016/131057...) is retried with backoff; a
  throughput limit (130429) delays every send of the channel; the pair rate limit (131056)
  only this contact's (4^n seconds).
- Our credentials refused (190, 10, 200-299, 401): the channel becomes `auth_error`, with a
  `channel.auth_error` event; its sends wait (retried every few minutes) until they are fixed.
- 131047 (outside the 24-hour window) and other permanent errors fail the part with the code
  and title, and a `channel_message.delivery_failed` event.
- No answer after the request left (timeout, dropped connection) is ambiguous. The part goes
  with `biz_opaque_callback_data` = its id, so a status webhook for it is recognised even then;
  the retry first checks whether one arrived. Meta has no idempotency key for sends, so a send
  that went through without any status arriving can, rarely, be sent again.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.channels.links import link_for
from app.channels.providers import PROVIDERS
from app.channels.providers.base import Failure, SendError
from app.channels.secrets import SecretBox
from app.core.config import Settings
from app.core.driver import transaction
from app.core.types import utcnow
from app.events.recorder import record
from app.jobs.worker import JobKind, JobRun, RetryLater
from app.models import Channel, ChannelMessage, ChannelStatus, Conversation

logger = logging.getLogger("app.channels")
AUTH_RETRY_SECONDS = 300.0
THROTTLE_MIN_SECONDS = 10.0
MAX_PACING_SECONDS = 300.0


def send_job(
    settings: Settings,
    maker: async_sessionmaker[AsyncSession],
    client: httpx.AsyncClient,
    box: SecretBox,
    trusted: httpx.AsyncClient,
) -> JobKind:
    """`client` passes the outbound guard (tenants' base URLs); `trusted` does not, for the
    channel configured by the deployment's own WHAPI_* settings."""

    async def send(job: JobRun) -> None:
        part_id = uuid.UUID(job.payload["channel_message_id"])
        async with maker() as db:
            part = await db.get(ChannelMessage, part_id)
            channel = await db.get(Channel, part.channel_id) if part is not None else None
        if part is None or channel is None or part.status != "queued":
            return  # deleted, or already accepted (a status webhook beat an ambiguous answer)
        last = job.attempt >= job.max_attempts
        if channel.status == ChannelStatus.DISABLED:
            await fail(maker, part, "channel_disabled", "the channel is disabled")
            return
        if channel.status == ChannelStatus.AUTH_ERROR or _throttled(channel):
            if last:
                await fail(
                    maker,
                    part,
                    channel.last_error_code or "channel_unavailable",
                    "the channel could not send before the attempts ran out",
                )
                return
            wait = (
                AUTH_RETRY_SECONDS
                if channel.status == ChannelStatus.AUTH_ERROR
                else (
                    (channel.throttled_until - utcnow()).total_seconds()  # type: ignore[operator]
                )
            )
            raise RetryLater(max(wait, 1.0), f"channel {channel.status}")
        provider = PROVIDERS[channel.provider]
        try:
            sent = await provider.send_text(
                trusted if channel.from_settings else client,
                link_for(channel, box, settings),
                part.recipient or "",
                part.body or "",
                callback=str(part.id),
            )
        except SendError as error:
            await _failed(
                maker, channel, part, error, job, last, settings.CHANNEL_AMBIGUOUS_WAIT_SECONDS
            )
            return
        async with transaction(maker) as db:
            await db.execute(
                update(ChannelMessage)
                .where(ChannelMessage.id == part.id, ChannelMessage.status == "queued")
                .values(
                    status="accepted",
                    external_id=sent.external_id,
                    sent_at=utcnow(),
                    status_at=utcnow(),
                )
            )
        logger.info("channel message accepted channel_id=%s part_id=%s", channel.id, part.id)

    return JobKind(send)


def _throttled(channel: Channel) -> bool:
    return channel.throttled_until is not None and channel.throttled_until > utcnow()


async def _failed(
    maker: async_sessionmaker[AsyncSession],
    channel: Channel,
    part: ChannelMessage,
    error: SendError,
    job: JobRun,
    last: bool,
    ambiguous_wait: float,
) -> None:
    logger.warning(
        "channel send failed channel_id=%s part_id=%s failure=%s code=%s",
        channel.id,
        part.id,
        error.failure,
        error.code,
    )
    if error.failure == Failure.AUTH:
        await _auth_error(maker, channel, error)
    if error.failure in (Failure.WINDOW_CLOSED, Failure.PERMANENT) or last:
        await fail(
            maker,
            part,
            error.code or error.failure.value,
            error.title,
            window_closed=error.failure == Failure.WINDOW_CLOSED,
        )
        return
    if error.failure == Failure.THROTTLED:
        wait = max(error.retry_after or 0.0, THROTTLE_MIN_SECONDS)
        async with transaction(maker) as db:
            await db.execute(
                update(Channel)
                .where(Channel.id == channel.id)
                .values(
                    throttled_until=utcnow() + timedelta(seconds=wait),
                    last_error_code=error.code,
                    last_error_at=utcnow(),
                )
            )
        raise RetryLater(wait, error.title)
    if error.failure == Failure.PACE_CONTACT:
        raise RetryLater(
            min(error.retry_after or 4.0**job.attempt, MAX_PACING_SECONDS), error.title
        )
    if error.failure == Failure.AUTH:
        raise RetryLater(AUTH_RETRY_SECONDS, error.title)
    if error.failure == Failure.AMBIGUOUS:
        raise RetryLater(ambiguous_wait, error.title)
    if error.retry_after:
        raise RetryLater(error.retry_after, error.title)
    raise RuntimeError(str(error))  # retried with the worker's backoff


async def _auth_error(
    maker: async_sessionmaker[AsyncSession], channel: Channel, error: SendError
) -> None:
    async with transaction(maker) as db:
        changed = await db.execute(
            update(Channel)
            .where(Channel.id == channel.id, Channel.status == ChannelStatus.ACTIVE)
            .values(
                status=ChannelStatus.AUTH_ERROR, last_error_code=error.code, last_error_at=utcnow()
            )
            .returning(Channel.id)
        )
        if changed.scalar_one_or_none() is not None:
            record(
                db,
                channel.workspace_id,
                "channel.auth_error",
                {"channel_id": str(channel.id), "error_code": error.code, "error": error.title},
                project_id=channel.project_id,
                subject=str(channel.id),
            )


async def fail(
    maker: async_sessionmaker[AsyncSession],
    part: ChannelMessage,
    code: str,
    title: str,
    *,
    window_closed: bool = False,
) -> None:
    async with transaction(maker) as db:
        await mark_failed(db, part, code, title, window_closed=window_closed)


async def mark_failed(
    db: AsyncSession,
    part: ChannelMessage,
    code: str,
    title: str,
    *,
    window_closed: bool = False,
) -> None:
    """The part failed for good: its code and title are kept on it, and said in an event."""
    changed = await db.execute(
        update(ChannelMessage)
        .where(
            ChannelMessage.id == part.id,
            ChannelMessage.status.not_in(("failed", "delivered", "read")),
        )
        .values(status="failed", error_code=code, error_title=title[:1000], status_at=utcnow())
        .returning(ChannelMessage.id)
    )
    if changed.scalar_one_or_none() is None:
        return
    conversation = (
        await db.get(Conversation, part.conversation_id) if part.conversation_id else None
    )
    if conversation is not None and window_closed:
        conversation.window_closed = True
    channel = await db.get(Channel, part.channel_id)
    assert channel is not None  # noqa: S101 - the part's channel
    record(
        db,
        part.workspace_id,
        "channel_message.delivery_failed",
        {
            "channel_id": str(part.channel_id),
            "conversation_id": str(part.conversation_id) if part.conversation_id else None,
            "message_id": str(part.chat_message_id) if part.chat_message_id else None,
            "channel_message_id": str(part.id),
            "error_code": code,
            "error_title": title,
        },
        project_id=channel.project_id,
        session_id=conversation.chat_session_id if conversation else None,
        subject=str(part.id),
    )
