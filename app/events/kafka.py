"""The Kafka sink: publishes CloudEvents envelopes (structured mode: the whole envelope is the JSON
value) to `KAFKA_TOPIC`, keyed by session id so one conversation's events stay in order.

Ordering without the idempotent producer: aiokafka has no `max_in_flight` setting because it
needs none. Its sender keeps at most one produce request in flight per broker and mutes a
partition while its batch is out; a batch that failed with a retriable error goes back to the
head of its partition's queue. So a retry cannot overtake a later batch of the same key. What
remains without idempotence is duplication (a retried request the broker had in fact written),
and one failure case: a batch that expires (older than `request_timeout_ms`) fails while the
next batch of its partition may still be sent. `publish` then raises, the caller sends the
whole batch again, and a consumer deduplicating by `id` sees the later event first; the
envelope's `sequence` tells it the real order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]
from aiokafka.helpers import create_ssl_context  # type: ignore[import-untyped]

from app.core.config import Settings

CONTENT_TYPE = b"application/cloudevents+json"
# Also aiokafka's delivery timeout: a batch is retried until it is this old, then it fails.
REQUEST_TIMEOUT_MS = 30_000
# A few milliseconds of lingering lets one publish call's events share a produce request per
# partition; with one request in flight per broker, bigger batches are what buys throughput.
LINGER_MS = 5
MAX_BATCH_BYTES = 256 * 1024


class KafkaPublishError(Exception):
    """Some events of a batch were not acknowledged; retry the whole batch (at least once)."""


def _bootstrap_servers(settings: Settings) -> list[str]:
    servers = [
        server.strip()
        for server in (settings.KAFKA_BOOTSTRAP_SERVERS or "").split(",")
        if server.strip()
    ]
    if not servers:
        raise ValueError("KAFKA_BOOTSTRAP_SERVERS is not set")
    return servers


def _security_options(settings: Settings) -> dict[str, Any]:
    """The connection options producers and consumers share: TLS and SASL."""
    options: dict[str, Any] = {"security_protocol": settings.KAFKA_SECURITY_PROTOCOL}
    if settings.KAFKA_SECURITY_PROTOCOL in ("SSL", "SASL_SSL"):
        # cafile=None: the system's trust store. Hostnames are always checked.
        context: ssl.SSLContext = create_ssl_context(cafile=settings.KAFKA_SSL_CAFILE)
        options["ssl_context"] = context
    if settings.KAFKA_SASL_MECHANISM is not None:
        options["sasl_mechanism"] = settings.KAFKA_SASL_MECHANISM
    if settings.KAFKA_SASL_USERNAME is not None:
        options["sasl_plain_username"] = settings.KAFKA_SASL_USERNAME
    if settings.KAFKA_SASL_PASSWORD is not None:
        options["sasl_plain_password"] = settings.KAFKA_SASL_PASSWORD.get_secret_value()
    return options


def producer_options(
    settings: Settings, *, request_timeout_ms: int = REQUEST_TIMEOUT_MS
) -> dict[str, Any]:
    """Keyword arguments for `AIOKafkaProducer`: acks from every in-sync replica, batching."""
    return {
        "bootstrap_servers": _bootstrap_servers(settings),
        "client_id": settings.KAFKA_CLIENT_ID,
        "acks": "all",
        "enable_idempotence": settings.KAFKA_ENABLE_IDEMPOTENCE,
        "request_timeout_ms": request_timeout_ms,
        "linger_ms": LINGER_MS,
        "max_batch_size": MAX_BATCH_BYTES,
        **_security_options(settings),
    }


def consumer_options(settings: Settings, group_id: str) -> dict[str, Any]:
    """Keyword arguments for `AIOKafkaConsumer` in `group_id`, committing only when told to."""
    return {
        "bootstrap_servers": _bootstrap_servers(settings),
        "client_id": settings.KAFKA_CLIENT_ID,
        "group_id": group_id,
        "enable_auto_commit": False,
        **_security_options(settings),
    }


def message_key(envelope: Mapping[str, Any]) -> bytes:
    """The session id, or the project id for an event outside any session."""
    return str(envelope.get("sessionid") or envelope["projectid"]).encode()


def message_headers(envelope: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    return [
        ("content-type", CONTENT_TYPE),
        ("ce_id", str(envelope["id"]).encode()),
        ("ce_type", str(envelope["type"]).encode()),
    ]


def message_value(envelope: Mapping[str, Any]) -> bytes:
    # dict(): json only encodes dicts, and the signature promises any Mapping.
    return json.dumps(dict(envelope), separators=(",", ":"), ensure_ascii=False).encode()


class KafkaPublisher:
    """One producer per process, started on the first `publish` and reused after that; a
    failed publish closes it, and the next one starts a fresh producer."""

    def __init__(self, settings: Settings, *, request_timeout_ms: int = REQUEST_TIMEOUT_MS) -> None:
        self._options = producer_options(settings, request_timeout_ms=request_timeout_ms)
        self._topic = settings.KAFKA_TOPIC
        self._producer: AIOKafkaProducer | None = None
        # Two publish calls racing on a cold publisher must not start two producers.
        self._starting = asyncio.Lock()

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        """Connect (once); a failed start closes what it opened, so the next call starts over."""
        await self._started_producer()

    async def _started_producer(self) -> AIOKafkaProducer:
        async with self._starting:
            if self._producer is None:
                producer = AIOKafkaProducer(**self._options)
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def stop(self) -> None:
        """Deliver what is pending, then disconnect."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def publish(self, envelopes: Sequence[Mapping[str, Any]]) -> None:
        """Send every envelope, then wait until the broker has acknowledged all of them; raises
        `KafkaPublishError` when any was not (some others may have been: at least once)."""
        if not envelopes:
            return
        try:
            producer = await self._started_producer()
        except KafkaError as error:
            raise KafkaPublishError(f"cannot start the Kafka producer: {error!r}") from error
        try:
            await self._send_all(producer, envelopes)
        except KafkaPublishError:
            # A producer whose sender died fails every later send, so never keep one that
            # failed; reconnecting costs little next to the failure.
            await self._discard(producer)
            raise

    async def _send_all(
        self, producer: AIOKafkaProducer, envelopes: Sequence[Mapping[str, Any]]
    ) -> None:
        deliveries: list[asyncio.Future[Any]] = []
        try:
            # Queue everything before waiting, so the sender packs them into batches.
            for envelope in envelopes:
                delivery = await producer.send(
                    self._topic,
                    value=message_value(envelope),
                    key=message_key(envelope),
                    headers=message_headers(envelope),
                )
                deliveries.append(delivery)
        except BaseException as error:
            for delivery in deliveries:
                delivery.add_done_callback(_observe)
            if isinstance(error, KafkaError):
                raise KafkaPublishError(f"cannot queue events for Kafka: {error!r}") from error
            raise
        outcomes = await asyncio.gather(*deliveries, return_exceptions=True)
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if failures:
            raise KafkaPublishError(
                f"{len(failures)} of {len(envelopes)} events were not acknowledged: {failures[0]!r}"
            ) from failures[0]

    async def _discard(self, producer: AIOKafkaProducer) -> None:
        if self._producer is producer:
            self._producer = None
        with contextlib.suppress(KafkaError):
            await producer.stop()


def _observe(delivery: asyncio.Future[Any]) -> None:
    # The caller already has an error for this batch; without this, each queued event's failure
    # would also be logged as "Future exception was never retrieved".
    if not delivery.cancelled():
        delivery.exception()
