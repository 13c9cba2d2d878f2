"""Everything that runs after the request, built once per process: the job worker with the job
kinds this deployment runs, and the event relay. The same in the API processes
(`WORKERS_IN_API`) and in `python -m app.worker`."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.channels.delivery import send_job
from app.channels.outbound import SEND_KIND
from app.channels.secrets import SecretBox
from app.chat.jobs import STALE_REPLIES_EVERY, STALE_REPLIES_KIND, stale_replies_job
from app.conversations.bot import REPLY_KIND, reply_job
from app.core.config import Settings
from app.core.metrics import Metrics
from app.core.outbound import outbound_client
from app.events.delivery import publish_job, webhook_job
from app.events.kafka import KafkaPublisher
from app.events.relay import PUBLISH_KIND, EventRelay
from app.events.webhooks import DELIVER_KIND
from app.jobs.worker import JobKind, Worker
from app.knowledge import vectors
from app.knowledge.indexing import EMBED_KIND, embed_job, index_job
from app.knowledge.service import INDEX_KIND
from app.llm.registry import ProviderRegistry, build_registry
from app.llm.transport import upstream_transport
from app.notifications.email import EMAIL_KIND, email_backend, email_job
from app.projects.config import ProjectConfigs
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


def llm_client(settings: Settings) -> httpx.AsyncClient:
    """The shared LLM client: explicit timeouts, a bounded pool (as in the API's lifespan)."""
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.LLM_TIMEOUT, connect=settings.LLM_CONNECT_TIMEOUT),
        limits=limits,
        transport=upstream_transport(limits),
    )


class Background:
    def __init__(
        self,
        settings: Settings,
        maker: async_sessionmaker[AsyncSession],
        metrics: Metrics | None = None,
        registry: ProviderRegistry | None = None,
        configs: ProjectConfigs | None = None,
    ) -> None:
        """`registry` and `configs`: the API process's own (the worker program builds its
        own LLM client and registry)."""
        self.settings = settings
        self.outbound = outbound_client(
            settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS, settings.WEBHOOK_TIMEOUT_SECONDS
        )
        self.channels = outbound_client(
            settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS, settings.CHANNEL_SEND_TIMEOUT_SECONDS
        )
        # The seed channel's WHAPI_BASE_URL is the deployment's own setting, not a tenant's.
        self.trusted = httpx.AsyncClient(timeout=settings.CHANNEL_SEND_TIMEOUT_SECONDS)
        self._llm_client: httpx.AsyncClient | None = None
        if registry is None:
            self._llm_client = llm_client(settings)
            registry = build_registry(settings, self._llm_client, metrics)
        self.secrets = SecretBox(settings.CHANNEL_SECRETS_KEY)
        self.publisher = KafkaPublisher(settings) if settings.KAFKA_BOOTSTRAP_SERVERS else None
        kinds: dict[str, JobKind] = {
            EMAIL_KIND: email_job(email_backend(settings)),
            DELIVER_KIND: webhook_job(settings, maker, self.outbound),
            SWEEP_KIND: sweep_job(settings, maker),
            STALE_REPLIES_KIND: stale_replies_job(settings, maker),
            SEND_KIND: send_job(settings, maker, self.channels, self.secrets, self.trusted),
            REPLY_KIND: reply_job(settings, maker, registry, configs or ProjectConfigs()),
            INDEX_KIND: index_job(settings, maker, self.outbound),
        }
        vectors.CACHE.max_bytes = settings.KNOWLEDGE_VECTOR_CACHE_MB * 1024 * 1024
        if registry.embedder is not None:
            kinds[EMBED_KIND] = embed_job(settings, maker, registry.embedder)
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
        await self.channels.aclose()
        await self.trusted.aclose()
        if self._llm_client is not None:
            await self._llm_client.aclose()
        if self.publisher is not None:
            await self.publisher.stop()
