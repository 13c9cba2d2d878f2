"""The sinks' job handlers: `webhook.deliver` (one event to one endpoint) and `events.publish`
(one relay batch to Kafka).

A delivery is signed the Standard Webhooks way: `webhook-id` is the event id (the same on every
retry, so receivers deduplicate by it), `webhook-timestamp` the attempt's time, and
`webhook-signature` `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`. Each attempt is logged;
a failure is retried on the Standard Webhooks schedule (27.6 hours, or the endpoint's
`Retry-After`). An endpoint that has failed every attempt for WEBHOOK_DISABLE_AFTER_HOURS (or
answers 410 Gone) is disabled, with a `webhook.disabled` event.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks.webhooks import Webhook as Signer

from app.core.config import Settings
from app.core.outbound import OutboundAddressRefused
from app.core.types import utcnow
from app.events.envelope import envelope
from app.events.kafka import KafkaPublisher
from app.events.recorder import record
from app.events.webhooks import RETRY_DELAYS_SECONDS
from app.jobs.worker import GiveUp, JobKind, JobRun, RetryLater
from app.models import Event, Webhook, WebhookDelivery

USER_AGENT = "chatbot-platform-webhooks/1.0"
MAX_RETRY_AFTER_SECONDS = 24 * 3600


def signed_headers(secret: str, event_id: str, body: str) -> dict[str, str]:
    now = utcnow()
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": event_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Signer(secret).sign(msg_id=event_id, timestamp=now, data=body),
    }


def webhook_job(
    settings: Settings, maker: async_sessionmaker[AsyncSession], client: httpx.AsyncClient
) -> JobKind:
    async def deliver(job: JobRun) -> None:
        webhook_id = uuid.UUID(job.payload["webhook_id"])
        event_id = uuid.UUID(job.payload["event_id"])
        async with maker() as db:
            webhook = await db.get(Webhook, webhook_id)
            event = await db.get(Event, event_id)
        if webhook is None or event is None or not webhook.is_enabled:
            return  # deleted or disabled meanwhile: nothing to deliver
        if webhook.workspace_id != job.workspace_id or event.workspace_id != job.workspace_id:
            raise GiveUp("the job's workspace does not own the webhook or event")
        body = json.dumps(envelope(event), separators=(",", ":"), ensure_ascii=False)
        headers = signed_headers(webhook.signing_secret, str(event.id), body)
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        retry_after: float | None = None
        try:
            response = await client.post(webhook.url, content=body.encode(), headers=headers)
            status = response.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}"
                retry_after = _retry_after(response)
        except OutboundAddressRefused as exc:
            error = exc.reason
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        latency_ms = int((time.perf_counter() - started) * 1000)
        disabled = await _log_attempt(
            maker, settings, webhook, event, job.attempt, status, latency_ms, error
        )
        if error is None:
            return
        if disabled:
            raise GiveUp(f"the webhook was disabled ({error})")
        scheduled = RETRY_DELAYS_SECONDS[min(job.attempt, len(RETRY_DELAYS_SECONDS)) - 1]
        delay = scheduled * random.uniform(0.9, 1.1)  # noqa: S311 - jitter, not a secret
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER_SECONDS))
        raise RetryLater(delay, error)

    return JobKind(deliver)


def _retry_after(response: httpx.Response) -> float | None:
    if response.status_code not in (429, 503):
        return None
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None


async def _log_attempt(
    maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    webhook: Webhook,
    event: Event,
    attempt: int,
    status: int | None,
    latency_ms: int,
    error: str | None,
) -> bool:
    """Record the attempt and the endpoint's health; True if this failure disabled it."""
    now = utcnow()
    async with maker() as db, db.begin():
        db.add(
            WebhookDelivery(
                id=uuid.uuid4(),
                workspace_id=webhook.workspace_id,
                webhook_id=webhook.id,
                event_id=event.id,
                event_type=event.type,
                attempt=attempt,
                status="succeeded" if error is None else "failed",
                response_status=status,
                latency_ms=latency_ms,
                error=error,
            )
        )
        where = (Webhook.id == webhook.id, Webhook.is_enabled.is_(True))
        if error is None:
            await db.execute(update(Webhook).where(*where).values(failing_since=None))
            return False
        result = await db.execute(
            update(Webhook)
            .where(*where)
            .values(failing_since=func.coalesce(Webhook.failing_since, now))
            .returning(Webhook.failing_since)
        )
        failing_since = result.scalar_one_or_none()
        limit = timedelta(hours=settings.WEBHOOK_DISABLE_AFTER_HOURS)
        if failing_since is None or (status != 410 and now - failing_since < limit):
            return False
        reason = (
            "the endpoint answered 410 Gone"
            if status == 410
            else f"every delivery failed for {settings.WEBHOOK_DISABLE_AFTER_HOURS:g} hours"
        )
        await db.execute(
            update(Webhook)
            .where(*where)
            .values(is_enabled=False, disabled_at=now, disabled_reason=reason)
        )
        record(
            db,
            webhook.workspace_id,
            "webhook.disabled",
            {"webhook_id": str(webhook.id), "reason": reason, "last_error": error},
            project_id=webhook.project_id,
            subject=str(webhook.id),
        )
        return True


def publish_job(maker: async_sessionmaker[AsyncSession], publisher: KafkaPublisher) -> JobKind:
    """Publish one relay batch (its positions) to Kafka, in order; the whole batch again on a
    retry (consumers deduplicate by event id)."""

    async def publish(job: JobRun) -> None:
        first, last = int(job.payload["from_position"]), int(job.payload["to_position"])
        async with maker() as db:
            events = (
                await db.execute(
                    select(Event)
                    .where(Event.position >= first, Event.position <= last)
                    .order_by(Event.position)
                )
            ).scalars()
            envelopes: list[dict[str, Any]] = [envelope(event) for event in events]
        if envelopes:
            await publisher.publish(envelopes)

    return JobKind(publish)
