"""The handoff state machine: who may answer a conversation (`mode`), where it stands in the
operators' queue (`status`), and who has it (`assignee_user_id`).

Every change goes through `apply`, on a conversation locked by the caller's transaction
(`ConversationRepository.lock`): it checks the transition applies (409 `invalid_transition`
otherwise), changes the row, and records its audit entry and event beside it. Whether the
caller's role allows it is `authorize`'s question, asked first.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.recorder import json_value, new_entry
from app.core.errors import ConflictError, ForbiddenError
from app.core.types import utcnow
from app.events.recorder import next_sequence, record
from app.models import Conversation, ConversationStatus, Mode
from app.workspaces.roles import Role, has_role


class Action(enum.StrEnum):
    HANDOFF = "handoff"  # to the queue (a trigger, an operator, the contact asking)
    ASSIGN = "assign"
    UNASSIGN = "unassign"  # back to the queue, still human
    RELEASE = "release"  # back to the bot
    PAUSE = "pause"
    RESUME = "resume"
    RESOLVE = "resolve"
    REOPEN = "reopen"
    TAKEOVER = "takeover"  # an operator's reply, or a human typing on the linked phone


@dataclass(frozen=True)
class Actor:
    """Who acts: a workspace member (with their role), or `bot | system | contact | device`."""

    type: str
    user_id: uuid.UUID | None = None
    label: str | None = None
    role: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is not None and has_role(self.role, Role.ADMIN)


BOT = Actor("bot")
SYSTEM = Actor("system")
DEVICE = Actor("device")

EVENT_TYPES = {
    Action.HANDOFF: "conversation.handoff_requested",
    Action.ASSIGN: "conversation.assigned",
    Action.UNASSIGN: "conversation.unassigned",
    Action.RELEASE: "conversation.released",
    Action.PAUSE: "conversation.paused",
    Action.RESUME: "conversation.resumed",
    Action.RESOLVE: "conversation.resolved",
    Action.REOPEN: "conversation.reopened",
    Action.TAKEOVER: "conversation.taken_over",
}


def invalid_transition(conversation: Conversation, action: Action, why: str) -> ConflictError:
    return ConflictError(
        f"Cannot {action.value} this conversation: {why}.",
        code="invalid_transition",
        details=[
            {"action": action.value, "mode": conversation.mode, "status": conversation.status}
        ],
    )


def authorize(
    actor: Actor,
    action: Action,
    conversation: Conversation,
    *,
    assignee_id: uuid.UUID | None = None,
    force: bool = False,
) -> None:
    """403 when a member's role does not allow this: agents act on conversations that are
    theirs or nobody's, and assign only themselves; admins and owners do anything."""
    if actor.type != "user" or actor.is_admin:
        return
    if action == Action.ASSIGN and (force or (assignee_id not in (None, actor.user_id))):
        raise ForbiddenError(
            "An agent can only claim a conversation for themselves; assigning others (or "
            "force) needs the admin role.",
            code="insufficient_role",
            details=[{"required_role": Role.ADMIN.value, "role": actor.role}],
        )
    others = conversation.assignee_user_id not in (None, actor.user_id)
    if others and action not in (Action.ASSIGN, Action.HANDOFF):
        raise ForbiddenError(
            "This conversation is assigned to another operator.",
            code="assigned_to_someone_else",
        )


def _check(
    conversation: Conversation, action: Action, assignee: uuid.UUID | None, force: bool
) -> None:
    mode, status = conversation.mode, conversation.status
    resolved = status == ConversationStatus.RESOLVED
    if action != Action.REOPEN and resolved:
        raise invalid_transition(conversation, action, "it is resolved (reopen it first)")
    reason = {
        Action.HANDOFF: "a human already has it" if mode != Mode.BOT else None,
        Action.UNASSIGN: "nobody is assigned" if conversation.assignee_user_id is None else None,
        Action.RELEASE: "the bot already has it" if mode == Mode.BOT else None,
        Action.PAUSE: "it is already paused" if mode == Mode.PAUSED else None,
        Action.RESUME: "it is not paused" if mode != Mode.PAUSED else None,
        Action.REOPEN: "it is not resolved" if not resolved else None,
    }.get(action)
    if action == Action.ASSIGN:
        current = conversation.assignee_user_id
        if current is not None and current != assignee and not force:
            raise ConflictError(
                "The conversation is assigned to another operator; an admin can reassign it "
                "with force: true.",
                code="already_assigned",
            )
        if current == assignee and mode == Mode.HUMAN:
            reason = "it is already assigned to them"
    if reason:
        raise invalid_transition(conversation, action, reason)


def _change(
    conversation: Conversation, action: Action, assignee: uuid.UUID | None, now: datetime
) -> None:
    c = conversation
    if action in (Action.HANDOFF, Action.UNASSIGN):
        c.mode, c.status, c.assignee_user_id, c.waiting_since = (
            Mode.HUMAN,
            ConversationStatus.PENDING_HUMAN,
            None,
            now,
        )
        if action == Action.HANDOFF:
            c.handoff_requested_at = now
    elif action in (Action.ASSIGN, Action.TAKEOVER):
        c.mode, c.status, c.waiting_since = Mode.HUMAN, ConversationStatus.OPEN, None
        if assignee is not None:
            c.assignee_user_id, c.assigned_at = assignee, now
    elif action in (Action.RELEASE, Action.RESUME):
        if c.human_since is not None:
            c.bot_note = handback_note(c.human_since, now)
        c.mode, c.status, c.assignee_user_id, c.waiting_since = (
            Mode.BOT,
            ConversationStatus.OPEN,
            None,
            None,
        )
        c.failed_replies = 0
    elif action == Action.PAUSE:
        c.mode = Mode.PAUSED
    elif action == Action.RESOLVE:
        c.status, c.waiting_since = ConversationStatus.RESOLVED, None
    elif action == Action.REOPEN:
        c.status = (
            ConversationStatus.PENDING_HUMAN
            if c.mode == Mode.HUMAN and c.assignee_user_id is None
            else ConversationStatus.OPEN
        )
    if c.mode == Mode.BOT:
        c.human_since = None
    elif c.human_since is None:
        c.human_since = now
    c.version += 1


def handback_note(since: datetime, until: datetime) -> str:
    """What the bot is told, on its next turn only, when it gets a conversation back."""
    return (
        f"A human operator handled this conversation from {since:%Y-%m-%d %H:%M} to "
        f"{until:%Y-%m-%d %H:%M} UTC (their messages are the assistant turns of that time). "
        "The operator has handed it back to you: continue helping the user."
    )


async def apply(
    db: AsyncSession,
    conversation: Conversation,
    action: Action,
    actor: Actor,
    *,
    reason: str | None = None,
    assignee_id: uuid.UUID | None = None,
    force: bool = False,
    data: dict[str, Any] | None = None,
) -> None:
    """Make the transition (on a locked conversation) and record it."""
    if action == Action.TAKEOVER and conversation.status == ConversationStatus.RESOLVED:
        conversation.status = ConversationStatus.OPEN
    _check(conversation, action, assignee_id, force)
    before = {"mode": conversation.mode, "status": conversation.status}
    before["assignee_user_id"] = conversation.assignee_user_id  # type: ignore[assignment]
    now = utcnow()
    _change(conversation, action, assignee_id, now)
    if reason is not None and action in (Action.HANDOFF, Action.TAKEOVER):
        conversation.handoff_reason = reason
    after = {
        "mode": conversation.mode,
        "status": conversation.status,
        "assignee_user_id": conversation.assignee_user_id,
    }
    changes = {
        key: {"before": json_value(before[key]), "after": json_value(value)}
        for key, value in after.items()
        if before[key] != value
    }
    audit_actor = (actor.type, actor.user_id, actor.label) if actor.type != "user" else None
    db.add(
        new_entry(
            conversation.workspace_id,
            f"conversation.{action.value}",
            "conversation",
            str(conversation.id),
            changes | ({"reason": reason} if reason else {}),
            actor=audit_actor,
        )
    )
    event = {
        "conversation_id": str(conversation.id),
        "channel_id": str(conversation.channel_id),
        "session_id": str(conversation.chat_session_id),
        "mode": conversation.mode,
        "status": conversation.status,
        "assignee_user_id": json_value(conversation.assignee_user_id),
        "reason": reason,
        "actor": {"type": actor.type, "user_id": json_value(actor.user_id)},
        **(data or {}),
    }
    record(
        db,
        conversation.workspace_id,
        EVENT_TYPES[action],
        event,
        project_id=conversation.project_id,
        session_id=conversation.chat_session_id,
        sequence=await next_sequence(db, conversation.workspace_id, conversation.chat_session_id),
        subject=str(conversation.id),
    )
