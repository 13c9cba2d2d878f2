"""The relay: gives each committed event its place in the feed and hands it to the sinks.

One relay at a time (a Postgres advisory lock; SQLite serialises writers anyway) takes the
events that have no `position` yet, oldest first, numbers them after the last position, and in
the same transaction enqueues their deliveries: a `webhook.deliver` job per matching webhook
(ordered per webhook and session) and, with Kafka configured, one `events.publish` job for the
batch (ordered). Positions therefore follow commit order, so a cursor over them never skips an
event that committed late. Each API and worker process runs one, woken after a commit that
recorded events and polling as a safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import autocommit_session
from app.events.webhooks import DELIVER_KIND, delivery_job, matches
from app.jobs.queue import enqueue_many, job_row
from app.models import Event, Webhook

logger = logging.getLogger("app.events")

PUBLISH_KIND = "events.publish"
RELAY_LOCK = 7_261_201  # pg_advisory_xact_lock key: one relay at a time
BATCH = 500
# Kafka publishing retries for as long as the broker is away (weeks at the backoff cap).
PUBLISH_MAX_ATTEMPTS = 100_000
# After a wake-up, how long the relay waits for the rest of a burst of commits.
LINGER_SECONDS = 0.1


class EventRelay:
    def __init__(
        self,
        maker: async_sessionmaker[AsyncSession],
        *,
        kafka: bool,
        poll_seconds: float = 0.5,
        batch: int = BATCH,
        on_dispatched: Callable[[bool], None] | None = None,
        linger_seconds: float = LINGER_SECONDS,
    ) -> None:
        self.maker = maker
        self.kafka = kafka
        self.poll_seconds = poll_seconds
        self.batch = batch
        # Called with whether jobs were enqueued: wake the feed's streams (and the job worker).
        self.on_dispatched = on_dispatched
        self.linger_seconds = linger_seconds
        self._wake = asyncio.Event()
        self._stopping = False

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        woken = False
        while not self._stopping:
            if woken:  # let the commits of a burst gather: one batch for them all
                await asyncio.sleep(self.linger_seconds)
            self._wake.clear()
            try:
                dispatched = await self.dispatch(look_first=not woken)
            except Exception as exc:  # the database is away, or another relay won: next time
                logger.warning("event relay failed error=%s", type(exc).__name__)
                dispatched = 0
            woken = dispatched >= self.batch  # a full batch: more is waiting
            if not woken and not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
                    woken = True

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run_until_idle(self, limit: int = 100) -> int:
        """Dispatch until nothing is waiting (tests, the CLI); how many events. Bounded."""
        total = 0
        for _ in range(limit):
            dispatched = await self.dispatch()
            total += dispatched
            if dispatched == 0:
                break
        return total

    async def dispatch(self, *, look_first: bool = True) -> int:
        """Number and hand out one batch; how many events it held. With `look_first` (a poll,
        not a wake-up), an idle relay costs one read."""
        if look_first:
            async with autocommit_session(self.maker) as db:
                waiting = select(Event.id).where(Event.position.is_(None)).limit(1)
                if (await db.execute(waiting)).first() is None:
                    return 0
        jobs: list[dict[str, Any]] = []
        async with self.maker() as db, db.begin():
            if db.get_bind().dialect.name == "postgresql":
                await db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": RELAY_LOCK})
            events = await self._number(db)
            if events:
                jobs = await self._jobs(db, events)
                await enqueue_many(db, jobs)
        if events and self.on_dispatched is not None:
            self.on_dispatched(bool(jobs))
        return len(events)

    async def _number(self, db: AsyncSession) -> list[Any]:
        """Give the waiting events (a batch) their positions; their rows, in position order
        (plain rows, not ORM objects: the relay only reads their ids and types)."""
        order = (Event.created_at, Event.sequence, Event.id)
        last = (await db.execute(select(func.max(Event.position)))).scalar() or 0
        batch = (
            select(Event.id, func.row_number().over(order_by=order).label("rank"))
            .where(Event.position.is_(None))
            .order_by(*order)
            .limit(self.batch)
            .subquery()
        )
        numbered = (
            update(Event)
            .where(Event.id == batch.c.id)
            .values(position=last + batch.c.rank)
            .returning(
                Event.id,
                Event.workspace_id,
                Event.project_id,
                Event.session_id,
                Event.type,
                Event.position,
            )
            .execution_options(synchronize_session=False)
        )
        events = list((await db.execute(numbered)).all())
        events.sort(key=lambda event: event.position)
        return events

    async def _jobs(self, db: AsyncSession, events: list[Any]) -> list[dict[str, Any]]:
        projects = {event.project_id for event in events if event.project_id is not None}
        webhooks: dict[Any, list[Webhook]] = {}
        if projects:
            found = await db.execute(
                select(Webhook).where(
                    Webhook.project_id.in_(projects), Webhook.is_enabled.is_(True)
                )
            )
            for webhook in found.scalars():
                webhooks.setdefault(webhook.project_id, []).append(webhook)
        jobs = [
            delivery_job(webhook, event)
            for event in events
            for webhook in webhooks.get(event.project_id, [])
            if webhook.workspace_id == event.workspace_id and matches(webhook, event.type)
        ]
        if self.kafka:
            first, last = events[0].position, events[-1].position
            jobs.append(
                job_row(
                    PUBLISH_KIND,
                    {"from_position": first, "to_position": last},
                    ordering_key=PUBLISH_KIND,
                    max_attempts=PUBLISH_MAX_ATTEMPTS,
                )
            )
        return jobs


__all__ = ["DELIVER_KIND", "PUBLISH_KIND", "EventRelay"]
