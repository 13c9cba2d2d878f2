"""Status webhooks: an outbound part's delivery status only moves forward (accepted < sent <
delivered < read). `failed` is final, except that a part already delivered or read only gets
the error noted. A status can come before our own record of the send (the provider answered,
the status webhook raced our commit): Meta echoes `biz_opaque_callback_data`, our part's id."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.channels.delivery import mark_failed
from app.channels.providers.base import StatusUpdate
from app.core.types import utcnow
from app.models import Channel, ChannelMessage

RANK = {"queued": 0, "accepted": 1, "sent": 2, "delivered": 3, "read": 4, "played": 4}
WINDOW_CODE = "131047"


def advanced(current: str, reported: str) -> str | None:
    """The part's new status after a report, or None when the report would not move it
    forward (an older, repeated or unknown status; anything after `failed`)."""
    rank = RANK.get(reported)
    if rank is None or current == "failed" or rank <= RANK.get(current, 0):
        return None
    return reported


async def apply_status(db: AsyncSession, channel: Channel, status: StatusUpdate) -> bool:
    """Apply one status to its part; False when no part of ours has that id."""
    part = await _part_for(db, channel, status)
    if part is None:
        return False
    await _apply(db, part, status)
    return True


async def _apply(db: AsyncSession, part: ChannelMessage, status: StatusUpdate) -> None:
    if status.pricing:
        part.pricing = status.pricing
    if status.status != "failed":
        if (new := advanced(part.status, status.status)) is not None:
            part.status, part.status_at = new, utcnow()
        return
    code = status.error_code or "failed"
    if part.status in ("delivered", "read"):  # it arrived: only note the error
        part.error_code, part.error_title = code, status.error_title
        return
    await mark_failed(
        db, part, code, status.error_title or "failed", window_closed=code == WINDOW_CODE
    )


async def _part_for(
    db: AsyncSession, channel: Channel, status: StatusUpdate
) -> ChannelMessage | None:
    found = await db.scalar(
        select(ChannelMessage).where(
            ChannelMessage.channel_id == channel.id,
            ChannelMessage.direction == "out",
            ChannelMessage.external_id == status.external_id,
        )
    )
    if found is not None or not status.callback:
        return found
    try:
        part_id = uuid.UUID(status.callback)
    except ValueError:
        return None
    part = await db.get(ChannelMessage, part_id)
    if part is None or part.channel_id != channel.id or part.direction != "out":
        return None
    if part.external_id is None:
        part.external_id = status.external_id
        if part.status == "queued":  # the send's own answer never came: it did go
            part.status, part.sent_at = "accepted", utcnow()
    return part
