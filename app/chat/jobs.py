"""The chat's periodic job: replies left pending by a process that died are ended (marked
interrupted, with their `reply.failed`) even when nobody follows them."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.chat.streaming import interrupt_stale_replies
from app.core.config import Settings
from app.jobs.periodic import Periodic
from app.jobs.worker import JobKind, JobRun

logger = logging.getLogger("app.chat")

STALE_REPLIES_KIND = "chat.interrupt_stale"
STALE_REPLIES_EVERY = Periodic(STALE_REPLIES_KIND, timedelta(minutes=1))


def stale_replies_job(settings: Settings, maker: async_sessionmaker[AsyncSession]) -> JobKind:
    async def sweep(_: JobRun) -> None:
        if count := await interrupt_stale_replies(maker, settings):
            logger.warning("ended %d replies left pending by a process that stopped", count)

    return JobKind(sweep)
