"""Everything that runs after the request, built once per process: the job worker with the job
kinds this deployment runs, and the event relay. The same in the API processes
(`WORKERS_IN_API`) and in `python -m app.worker`."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.chat.jobs import STALE_REPLIES_EVERY, STALE_REPLIES_KIND, stale_replies_job
from app.core.config import Settings
from app.core.metrics import Metrics
from app.core.outbound import outbound_client
from app.events.delivery import publish_job, webhook_job
from app.events.kafka import KafkaPublisher
from app.events.relay import PUBLISH_KIND, EventRelay
from app.events.webhooks import DELIVER_KIND
from app.jobs.worker import JobKind, Worker
from app.notifications.email import EMAIL_KIND, email_backend, email_job
from app.retention.sweep import SWEEP_KIND, sweep_job, sweep_schedule


class Signal:
    """Wakes every waiter at once (the feed's open streams, after the relay numbered events)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, at_most: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), at_most)


class Background:
    def __init__(
        self,
        settings: Settings,
        maker: async_sessionmaker[AsyncSession],
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.outbound = outbound_client(
            settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS, settings.WEBHOOK_TIMEOUT_SECONDS
        )
        self.publisher = KafkaPublisher(settings) if settings.KAFKA_BOOTSTRAP_SERVERS else None
        kinds: dict[str, JobKind] = {
            EMAIL_KIND: email_job(email_backend(settings)),
            DELIVER_KIND: webhook_job(settings, maker, self.outbound),
            SWEEP_KIND: sweep_job(settings, maker),
            STALE_REPLIES_KIND: stale_replies_job(settings, maker),
        }
        if self.publisher is not None:
            kinds[PUBLISH_KIND] = publish_job(maker, self.publisher)
        self.worker = Worker(
            maker,
            kinds,
            concurrency=settings.JOBS_CONCURRENCY,
            lease_seconds=settings.JOBS_LEASE_SECONDS,
            poll_seconds=settings.JOBS_POLL_SECONDS,
            metrics=metrics,
            periodic=(sweep_schedule(settings), STALE_REPLIES_EVERY),
        )
        self.feed = Signal()
        self.relay = EventRelay(
            maker,
            kafka=self.publisher is not None,
            poll_seconds=settings.JOBS_POLL_SECONDS,
            on_dispatched=self._dispatched,
        )
        self._tasks: list[asyncio.Task[None]] = []

    def _dispatched(self, enqueued: bool) -> None:
        if enqueued:
            self.worker.wake()  # the deliveries the relay enqueued
        self.feed.notify()

    def wake_hooks(self) -> dict[str, Any]:
        """The sessionmaker's `info`: commits that enqueued jobs or recorded events wake these."""
        return {"wake_jobs": self.worker.wake, "wake_events": self.relay.wake}

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.worker.run(), name="job-worker"),
            asyncio.create_task(self.relay.run(), name="event-relay"),
        ]

    async def run_until_idle(self, rounds: int = 20) -> int:
        """Relay and run everything due, until nothing is left (tests, the CLI); how many jobs
        ran. Bounded."""
        ran = 0
        for _ in range(rounds):
            relayed = await self.relay.run_until_idle()
            done = await self.worker.run_until_idle()
            ran += done
            if not relayed and not done:
                break
        return ran

    async def stop(self) -> None:
        """Stop relaying and claiming; running jobs get SHUTDOWN_GRACE_SECONDS."""
        self.relay.stop()
        await self.worker.stop(self.settings.SHUTDOWN_GRACE_SECONDS)
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.close()

    async def close(self) -> None:
        await self.outbound.aclose()
        if self.publisher is not None:
            await self.publisher.stop()
