"""Operator routes: the queue, conversations, their messages, transitions and replies. Any
workspace member with the `agent` role or above; what an agent may do to a conversation that is
someone else's is decided in `transitions.authorize`."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import JSONResponse

from app.auth.dependencies import Principal, require_role
from app.conversations.schemas import (
    AssignBody,
    ConversationMessage,
    ConversationRead,
    HandoffBody,
    ReplyAccepted,
    ReplyBody,
)
from app.conversations.service import ConversationService, Filters
from app.conversations.transitions import Action
from app.core.db import SessionmakerDep
from app.core.dependencies import SettingsDep
from app.core.errors import error_responses
from app.core.idempotency import HEADER, IDEMPOTENCY_DOC, fingerprint, run_idempotent, store_for
from app.core.pagination import Page, PageParamsDep
from app.workspaces.roles import Role

conversations_router = APIRouter(
    prefix="/conversations",
    tags=["Conversations"],
    responses=error_responses(401, 403, 404, 422),
)
Operator = Annotated[Principal, Depends(require_role(Role.AGENT))]


async def get_conversation_service(
    maker: SessionmakerDep, operator: Operator
) -> ConversationService:
    return ConversationService(maker, operator)


ConversationServiceDep = Annotated[ConversationService, Depends(get_conversation_service)]


@conversations_router.get("", response_model=Page[ConversationRead])
async def list_conversations(
    conversations: ConversationServiceDep,
    page: PageParamsDep,
    status_: Annotated[
        Literal["open", "pending_human", "resolved"] | None, Query(alias="status")
    ] = None,
    mode: Literal["bot", "human", "paused"] | None = None,
    assignee: Annotated[str | None, Query(description="`me`, `none` or a user id.")] = None,
    project_id: uuid.UUID | None = None,
    channel_id: uuid.UUID | None = None,
) -> object:
    """The workspace's conversations. `status=pending_human` is the queue, longest-waiting
    first; otherwise the most recently active come first."""
    filters = Filters(status_, mode, assignee, project_id, channel_id)
    items, next_cursor = await conversations.list_page(filters, page)
    return Page[ConversationRead](items=items, next_cursor=next_cursor)


@conversations_router.get("/{conversation_id}", response_model=ConversationRead)
async def get_conversation(
    conversation_id: uuid.UUID, conversations: ConversationServiceDep
) -> object:
    """One conversation: its mode, queue status, assignee and 24-hour window."""
    return await conversations.get(conversation_id)


@conversations_router.get("/{conversation_id}/messages", response_model=Page[ConversationMessage])
async def list_conversation_messages(
    conversation_id: uuid.UUID, conversations: ConversationServiceDep, page: PageParamsDep
) -> object:
    """Its messages, oldest first, with author (`contact | bot | operator | device | system`)
    and delivery status."""
    items, next_cursor = await conversations.messages(conversation_id, page)
    return Page[ConversationMessage](items=items, next_cursor=next_cursor)


TRANSITION = {"response_model": ConversationRead, "responses": error_responses(409)}


@conversations_router.post("/{conversation_id}/handoff", **TRANSITION)  # type: ignore[arg-type]
async def handoff(
    conversation_id: uuid.UUID,
    conversations: ConversationServiceDep,
    body: HandoffBody | None = None,
) -> object:
    """Hand the conversation from the bot to the operators' queue (the handoff message is
    sent to the contact)."""
    reason = body.reason if body else None
    return await conversations.act(conversation_id, Action.HANDOFF, reason=reason)


@conversations_router.post("/{conversation_id}/assign", **TRANSITION)  # type: ignore[arg-type]
async def assign(
    conversation_id: uuid.UUID,
    conversations: ConversationServiceDep,
    body: AssignBody | None = None,
) -> object:
    """Claim it (default) or, as an admin, give it to another operator; the bot falls silent.
    409 `already_assigned` when someone else has it (admins: `force: true`)."""
    body = body or AssignBody()
    return await conversations.act(
        conversation_id, Action.ASSIGN, assignee_id=body.assignee_id, force=body.force
    )


def _simple(action: Action, doc: str) -> None:
    async def transition(
        conversation_id: uuid.UUID, conversations: ConversationServiceDep
    ) -> object:
        return await conversations.act(conversation_id, action)

    transition.__doc__ = doc
    transition.__name__ = f"{action.value}_conversation"
    conversations_router.post(f"/{{conversation_id}}/{action.value}", **TRANSITION)(transition)  # type: ignore[arg-type]


_simple(Action.UNASSIGN, "Put it back in the queue (still with the humans).")
_simple(
    Action.RELEASE, "Give it back to the bot, which is told a human handled the recent messages."
)
_simple(Action.PAUSE, "Nobody answers automatically; messages are still stored.")
_simple(Action.RESUME, "End a pause: the bot answers again.")
_simple(Action.RESOLVE, "Mark it resolved; the contact's next message reopens it with the bot.")
_simple(Action.REOPEN, "Reopen a resolved conversation.")


@conversations_router.post(
    "/{conversation_id}/messages",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ReplyAccepted,
    responses=error_responses(409),
    description="Send an operator's message to the contact. It is queued (202) and sent in "
    "order with the conversation's other messages; its delivery status follows on the "
    "messages list. The conversation becomes the operator's if it was the bot's. Meta channels "
    "refuse free text outside the 24-hour window: 409 `outside_customer_service_window`."
    + IDEMPOTENCY_DOC,
)
async def send_operator_message(
    conversation_id: uuid.UUID,
    body: ReplyBody,
    request: Request,
    conversations: ConversationServiceDep,
    operator: Operator,
    maker: SessionmakerDep,
    settings: SettingsDep,
) -> object:
    """Reply to the contact as an operator."""

    async def send() -> JSONResponse:
        message, conversation = await conversations.reply(conversation_id, body.text)
        accepted = ReplyAccepted(message=message, conversation=conversation)
        return JSONResponse(accepted.model_dump(mode="json"), status_code=status.HTTP_202_ACCEPTED)

    key = request.headers.get(HEADER)
    store = store_for(maker, operator, settings) if key else None
    print_ = fingerprint(request, body.model_dump(mode="json"), str(conversation_id))
    return await run_idempotent(store, key, print_, send)
