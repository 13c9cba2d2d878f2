"""Webhooks: a project's endpoints, which events they get, and their delivery log."""

from __future__ import annotations

import base64
import secrets
import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.errors import ConflictError, NotFoundError
from app.core.outbound import check_url
from app.core.pagination import Keyset, PageParams
from app.core.repository import WorkspaceRepository
from app.events.schemas import WebhookCreate, WebhookUpdate
from app.jobs.queue import enqueue_many, job_row
from app.models import Event, Webhook, WebhookDelivery
from app.projects.service import ProjectService

DELIVER_KIND = "webhook.deliver"
# Standard Webhooks' schedule: the delay before each retry (27.6 hours in all, 8 attempts).
RETRY_DELAYS_SECONDS = (5, 300, 1800, 7200, 18000, 36000, 36000)
WEBHOOKS_PER_PROJECT = 20
WEBHOOK_KEYSET = Keyset((Webhook.created_at, Webhook.id))
DELIVERY_KEYSET = Keyset((WebhookDelivery.created_at, WebhookDelivery.id), descending=True)


def matches(webhook: Webhook, event_type: str) -> bool:
    """Whether the webhook takes events of this type: all when it names none, else an exact
    type or a `prefix.*` pattern."""
    if not webhook.event_types:
        return True
    return any(
        event_type == wanted or (wanted.endswith(".*") and event_type.startswith(wanted[:-1]))
        for wanted in webhook.event_types
    )


def ordering_key(webhook_id: uuid.UUID, event: Event) -> str:
    """One webhook's deliveries of one session's events go in order (a project's other
    events in the project's order)."""
    return f"webhook:{webhook_id}:{event.session_id or event.project_id}"


def delivery_job(webhook: Webhook, event: Event) -> dict[str, Any]:
    return job_row(
        DELIVER_KIND,
        {"webhook_id": str(webhook.id), "event_id": str(event.id)},
        workspace_id=webhook.workspace_id,
        ordering_key=ordering_key(webhook.id, event),
        max_attempts=len(RETRY_DELAYS_SECONDS) + 1,
    )


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def webhook_not_found() -> NotFoundError:
    return NotFoundError("Webhook not found.", code="webhook_not_found")


class WebhookRepository(WorkspaceRepository[Webhook]):
    model = Webhook

    async def count(self, project_id: uuid.UUID) -> int:
        statement = select(func.count()).select_from(
            self.scoped().where(Webhook.project_id == project_id).subquery()
        )
        return int((await self.session.execute(statement)).scalar_one())


class DeliveryRepository(WorkspaceRepository[WebhookDelivery]):
    model = WebhookDelivery


class WebhookService:
    def __init__(self, session: AsyncSession, workspace_id: uuid.UUID, settings: Settings):
        self.session = session
        self.workspace_id = workspace_id
        self.settings = settings
        self.webhooks = WebhookRepository(session, workspace_id)
        self.deliveries = DeliveryRepository(session, workspace_id)
        self.projects = ProjectService(session, workspace_id)

    async def create(self, project_id: uuid.UUID, data: WebhookCreate) -> Webhook:
        """Add an endpoint; its signing secret is in the returned object (shown once)."""
        await self.projects.get(project_id)
        await check_url(data.url, allow_private=self.settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS)
        count = await self.webhooks.count(project_id)
        if count >= WEBHOOKS_PER_PROJECT:
            raise ConflictError(
                f"A project has at most {WEBHOOKS_PER_PROJECT} webhooks; delete one first.",
                code="too_many_webhooks",
            )
        webhook = self.webhooks.add(
            Webhook(
                id=uuid.uuid4(),
                project_id=project_id,
                url=data.url,
                description=data.description,
                event_types=list(data.event_types),
                signing_secret=new_secret(),
                is_enabled=True,
            )
        )
        await self.session.flush()
        return webhook

    async def list_page(
        self, project_id: uuid.UUID, params: PageParams
    ) -> tuple[list[Webhook], str | None]:
        await self.projects.get(project_id)
        statement = self.webhooks.scoped().where(Webhook.project_id == project_id)
        return await self.webhooks.page(statement, WEBHOOK_KEYSET, params)

    async def get(self, webhook_id: uuid.UUID) -> Webhook:
        webhook = await self.webhooks.get(webhook_id)
        if webhook is None:
            raise webhook_not_found()
        return webhook

    async def update(self, webhook_id: uuid.UUID, data: WebhookUpdate) -> Webhook:
        """Change the URL, types or description; `is_enabled: true` turns a disabled endpoint
        back on (its failure clock starts again)."""
        webhook = await self.get(webhook_id)
        changes = data.model_dump(exclude_unset=True)
        if changes.get("url") is not None:
            await check_url(
                changes["url"], allow_private=self.settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS
            )
        for field in ("url", "description", "event_types"):
            if field in changes and (changes[field] is not None or field == "description"):
                setattr(webhook, field, changes[field])
        if changes.get("is_enabled") is True and not webhook.is_enabled:
            webhook.is_enabled = True
            webhook.disabled_at = webhook.disabled_reason = webhook.failing_since = None
        elif changes.get("is_enabled") is False and webhook.is_enabled:
            webhook.is_enabled = False
            webhook.disabled_reason = "disabled by a user"
        await self.session.flush()
        await self.session.refresh(webhook)
        return webhook

    async def delete(self, webhook_id: uuid.UUID) -> None:
        await self.webhooks.delete(await self.get(webhook_id))
        await self.session.flush()

    async def list_deliveries(
        self, webhook_id: uuid.UUID, params: PageParams
    ) -> tuple[list[WebhookDelivery], str | None]:
        """The webhook's delivery attempts, most recent first."""
        await self.get(webhook_id)
        statement = self.deliveries.scoped().where(WebhookDelivery.webhook_id == webhook_id)
        return await self.deliveries.page(statement, DELIVERY_KEYSET, params)

    async def resend(self, webhook_id: uuid.UUID, delivery_id: uuid.UUID) -> WebhookDelivery:
        """Deliver a delivery's event again (after the webhook's earlier deliveries for the
        same session)."""
        webhook = await self.get(webhook_id)
        delivery = await self.deliveries.get(delivery_id)
        if delivery is None or delivery.webhook_id != webhook.id:
            raise NotFoundError("Delivery not found.", code="delivery_not_found")
        event = await self.session.get(Event, delivery.event_id)
        if event is None or event.workspace_id != self.workspace_id:
            raise ConflictError(
                "The event has been deleted by retention (EVENTS_RETENTION_DAYS); it cannot "
                "be sent again.",
                code="event_expired",
            )
        if not webhook.is_enabled:
            raise ConflictError(
                "The webhook is disabled; enable it (PATCH is_enabled: true) first.",
                code="webhook_disabled",
            )
        await enqueue_many(self.session, [delivery_job(webhook, event)])
        return delivery
