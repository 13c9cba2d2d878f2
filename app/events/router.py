"""Webhook, event feed and job routes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from sse_starlette import EventSourceResponse, ServerSentEvent

from app.auth.dependencies import (
    CurrentPrincipal,
    Principal,
    RequireAdmin,
    require_member_role,
    require_scope,
)
from app.core.db import SessionDep, SessionmakerDep
from app.core.dependencies import SettingsDep
from app.core.errors import ConflictError, NotFoundError, check_project_reach, error_responses
from app.core.pagination import Page, PageParamsDep
from app.events.envelope import envelope
from app.events.feed import parse_position, read_events, stream_events
from app.events.schemas import (
    CloudEvent,
    DeliveryRead,
    ResendAccepted,
    WebhookCreate,
    WebhookCreated,
    WebhookRead,
    WebhookUpdate,
)
from app.events.webhooks import WebhookService
from app.jobs.schemas import JobRead
from app.jobs.stats import DuplicateJob, list_jobs, retry_dead
from app.models import Job
from app.projects.service import ProjectService
from app.workspaces.roles import Role

webhooks_router = APIRouter(tags=["Webhooks"], responses=error_responses(401, 403, 404, 422))
feed_router = APIRouter(tags=["Events"], responses=error_responses(401, 403, 404, 422))
jobs_router = APIRouter(tags=["Jobs"], responses=error_responses(401, 403, 404, 422))


async def get_webhook_service(
    session: SessionDep, principal: CurrentPrincipal, settings: SettingsDep
) -> WebhookService:
    return WebhookService(session, principal.workspace_id, settings)


WebhookServiceDep = Annotated[WebhookService, Depends(get_webhook_service)]


@webhooks_router.post(
    "/projects/{project_id}/webhooks",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookCreated,
    dependencies=[RequireAdmin],
)
async def create_webhook(
    project_id: uuid.UUID, body: WebhookCreate, webhooks: WebhookServiceDep
) -> object:
    """Add a webhook endpoint. The answer holds its signing secret: the only time it is shown."""
    return await webhooks.create(project_id, body)


@webhooks_router.get(
    "/projects/{project_id}/webhooks", response_model=Page[WebhookRead], dependencies=[RequireAdmin]
)
async def list_webhooks(
    project_id: uuid.UUID, webhooks: WebhookServiceDep, page: PageParamsDep
) -> object:
    """The project's webhooks, oldest first."""
    items, next_cursor = await webhooks.list_page(project_id, page)
    return Page[WebhookRead](
        items=[WebhookRead.model_validate(w) for w in items], next_cursor=next_cursor
    )


@webhooks_router.get(
    "/webhooks/{webhook_id}", response_model=WebhookRead, dependencies=[RequireAdmin]
)
async def get_webhook(webhook_id: uuid.UUID, webhooks: WebhookServiceDep) -> object:
    """One webhook (without its secret)."""
    return await webhooks.get(webhook_id)


@webhooks_router.patch(
    "/webhooks/{webhook_id}", response_model=WebhookRead, dependencies=[RequireAdmin]
)
async def update_webhook(
    webhook_id: uuid.UUID, body: WebhookUpdate, webhooks: WebhookServiceDep
) -> object:
    """Change a webhook (only the fields sent); `is_enabled: true` re-enables a disabled one."""
    return await webhooks.update(webhook_id, body)


@webhooks_router.delete(
    "/webhooks/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[RequireAdmin]
)
async def delete_webhook(webhook_id: uuid.UUID, webhooks: WebhookServiceDep) -> Response:
    """Delete a webhook; its queued deliveries are dropped."""
    await webhooks.delete(webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@webhooks_router.get(
    "/webhooks/{webhook_id}/deliveries",
    response_model=Page[DeliveryRead],
    dependencies=[RequireAdmin],
)
async def list_deliveries(
    webhook_id: uuid.UUID, webhooks: WebhookServiceDep, page: PageParamsDep
) -> object:
    """Every delivery attempt (status, response code, latency), most recent first."""
    items, next_cursor = await webhooks.list_deliveries(webhook_id, page)
    return Page[DeliveryRead](
        items=[DeliveryRead.model_validate(d) for d in items], next_cursor=next_cursor
    )


@webhooks_router.post(
    "/webhooks/{webhook_id}/deliveries/{delivery_id}/resend",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ResendAccepted,
    dependencies=[RequireAdmin],
    responses=error_responses(409),
)
async def resend_delivery(
    webhook_id: uuid.UUID, delivery_id: uuid.UUID, webhooks: WebhookServiceDep
) -> object:
    """Deliver that attempt's event again (a new attempt, with the same `webhook-id`)."""
    delivery = await webhooks.resend(webhook_id, delivery_id)
    return ResendAccepted(delivery_id=delivery.id, event_id=delivery.event_id)


FeedReader = Annotated[Principal, Depends(require_scope("events:read"))]
FeedStreamReader = Annotated[Principal, Depends(require_scope("events:read", stream=True))]
TypesQuery = Annotated[
    list[str] | None,
    Query(alias="type", description="Only these event types (repeat the parameter)."),
]


async def _check_project(session: SessionDep, caller: Principal, project_id: uuid.UUID) -> None:
    check_project_reach(caller.project_id, project_id)
    await ProjectService(session, caller.workspace_id).get(project_id)


@feed_router.get("/projects/{project_id}/events", response_model=Page[CloudEvent])
async def list_events(
    project_id: uuid.UUID,
    caller: FeedReader,
    session: SessionDep,
    after: Annotated[
        str | None,
        Query(max_length=20, description="The `next_cursor` you last got; omit for the oldest."),
    ] = None,
    types: TypesQuery = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> object:
    """The project's events, oldest first, as CloudEvents. Poll with `after=<next_cursor>`:
    it is null only when this page is empty (keep your last one then)."""
    await _check_project(session, caller, project_id)
    events = await read_events(
        session,
        caller.workspace_id,
        project_id,
        after=parse_position(after, "after"),
        types=types or [],
        limit=limit,
    )
    return Page[CloudEvent](
        items=[CloudEvent.model_validate(envelope(e)) for e in events],
        next_cursor=str(events[-1].position) if events else None,
    )


@feed_router.get(
    "/projects/{project_id}/events/stream",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "CloudEvents."}},
)
async def stream_project_events(
    request: Request,
    project_id: uuid.UUID,
    caller: FeedStreamReader,
    session: SessionDep,
    maker: SessionmakerDep,
    settings: SettingsDep,
    last_event_id: Annotated[
        str | None,
        Header(max_length=20, description="Resume after this event (the last `id` you got)."),
    ] = None,
    after: Annotated[str | None, Query(max_length=20, description="As Last-Event-ID.")] = None,
    types: TypesQuery = None,
    max_seconds: Annotated[
        float | None,
        Query(
            gt=0,
            le=3600,
            description="End the stream after this many seconds (for clients that reconnect "
            "on a schedule); omitted: it lasts until you disconnect.",
        ),
    ] = None,
) -> Response:
    """The project's events as Server-Sent Events (`id` = cursor, `event` = type, `data` = the
    CloudEvent), live. Reconnect with `Last-Event-ID` to resume; without it, from now."""
    await _check_project(session, caller, project_id)
    start = parse_position(last_event_id, "Last-Event-ID")
    if start is None:
        start = parse_position(after, "after")
    background = request.app.state.background
    events: AsyncIterator[ServerSentEvent] = stream_events(
        maker,
        caller.workspace_id,
        project_id,
        after=start,
        types=types or [],
        wait=background.feed.wait,
        poll_seconds=max(settings.JOBS_POLL_SECONDS, 0.5),
        max_seconds=max_seconds,
    )
    return EventSourceResponse(events, ping=settings.STREAM_PING_SECONDS, send_timeout=60)


WorkspaceAdmin = Annotated[Principal, Depends(require_member_role(Role.ADMIN))]


@jobs_router.get("/workspaces/{workspace_id}/jobs", response_model=Page[JobRead])
async def list_workspace_jobs(
    principal: WorkspaceAdmin,
    session: SessionDep,
    page: PageParamsDep,
    job_status: Annotated[
        Literal["queued", "running", "done", "dead"], Query(alias="status")
    ] = "dead",
    kind: Annotated[str | None, Query(max_length=100)] = None,
) -> object:
    """The workspace's background jobs in one status (default: `dead`, the ones that gave up),
    most recent first; payloads are not shown."""
    items, next_cursor = await list_jobs(
        session, status=job_status, workspace_id=principal.workspace_id, kind=kind, params=page
    )
    return Page[JobRead](
        items=[JobRead.model_validate(job) for job in items], next_cursor=next_cursor
    )


@jobs_router.post(
    "/workspaces/{workspace_id}/jobs/{job_id}/retry",
    response_model=JobRead,
    responses=error_responses(409),
)
async def retry_workspace_job(
    job_id: uuid.UUID, principal: WorkspaceAdmin, session: SessionDep
) -> object:
    """Queue a dead job again, from its first attempt."""
    found = await session.get(Job, job_id)
    if found is None or found.workspace_id != principal.workspace_id:
        raise NotFoundError("Job not found.", code="job_not_found")
    try:
        job = await retry_dead(session, job_id, workspace_id=principal.workspace_id)
    except DuplicateJob as exc:
        raise ConflictError(
            "Another unfinished job does the same work already.", code="job_duplicate"
        ) from exc
    if job is None:
        raise ConflictError("Only a dead job can be retried.", code="job_not_dead")
    return job
