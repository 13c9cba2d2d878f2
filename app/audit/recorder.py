"""Recording audit entries.

Configuration changes are recorded structurally: `AuditedSession` inspects every flush, and each
insert, update or delete of an audited model (projects, prompts, intents, API keys, workspaces,
members, invitations) adds its entry to the same flush, so the change and its entry commit or roll
back together, whichever code path made the change. Changes made with bulk SQL statements and
security events are recorded with `record()`.

The actor (user or API key) comes from the request's caller, noted by the auth dependencies; the
request id, client address and user agent from the request context. Anything else is `system`.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session
from sqlalchemy.orm.base import NO_VALUE

from app.core.logging import request_actor_var, request_client_var, request_id_var
from app.events.recorder import event_for_change, mark_recorded
from app.models import (
    ApiKey,
    AuditEntry,
    Channel,
    Event,
    Intent,
    Invitation,
    Project,
    Prompt,
    Webhook,
    Workspace,
    WorkspaceMember,
)

REDACTED = "[redacted]"
# Never written into `changes`: bookkeeping, and values whose changes are not configuration.
IGNORED = {
    "id",
    "workspace_id",
    "created_at",
    "updated_at",
    "revision",
    "last_used_at",
    # a channel's health, not its configuration
    "last_webhook_at",
    "last_error_code",
    "last_error_at",
    "throttled_until",
}
SECRET_MARKS = ("hash", "secret", "password", "token")


@dataclass(frozen=True)
class _Kind:
    name: str  # the action prefix and target type

    def target_id(self, entity: Any) -> str:
        return str(entity.id)


class _MemberKind(_Kind):
    def target_id(self, entity: Any) -> str:
        return str(entity.user_id)


KINDS: dict[type[Any], _Kind] = {
    Project: _Kind("project"),
    Prompt: _Kind("prompt"),
    Intent: _Kind("intent"),
    ApiKey: _Kind("api_key"),
    Workspace: _Kind("workspace"),
    WorkspaceMember: _MemberKind("member"),
    Invitation: _Kind("invitation"),
    Webhook: _Kind("webhook"),
    Channel: _Kind("channel"),
}
# An update that sets one of these columns is named for it.
NAMED_UPDATES = {
    ("api_key", "revoked_at"): "api_key.revoked",
    ("invitation", "revoked_at"): "invitation.revoked",
    ("invitation", "accepted_at"): "invitation.accepted",
    ("member", "role"): "member.role_changed",
}
NAMED_VERBS = {("member", "created"): "member.added", ("member", "deleted"): "member.removed"}


class AuditedSession(Session):
    """The ORM session every request uses (see `create_sessionmaker`)."""


@event.listens_for(AuditedSession, "before_flush")
def _audit_flush(session: Session, _context: Any, _instances: Any) -> None:
    """Each audited change gets its entry, and (for the kinds that have them) its event."""
    entries: list[Any] = []
    for verb, entities in (
        ("created", session.new),
        ("updated", session.dirty),
        ("deleted", session.deleted),
    ):
        for entity in entities:
            kind = KINDS.get(type(entity))
            if kind is not None and (entry := _entry(kind, verb, entity)) is not None:
                entries.append(entry)
                if (change := event_for_change(entity, entry.action, entry.changes)) is not None:
                    entries.append(change)
    if any(isinstance(entry, Event) for entry in entries):
        mark_recorded(session)
    session.add_all(entries)


def _entry(kind: _Kind, verb: str, entity: Any) -> AuditEntry | None:
    if verb == "created" and "id" in entity.__table__.c and entity.id is None:
        entity.id = uuid.uuid4()  # the column default would come at INSERT, after this
    changes: dict[str, Any] = {}
    state = inspect(entity)
    for attribute in state.mapper.column_attrs:
        name = attribute.key
        if name in IGNORED:
            continue
        history = state.attrs[name].history
        if verb == "updated" and not history.has_changes():
            continue
        changes[name] = _redacted(name, *_before_after(verb, history, getattr(entity, name, None)))
    if verb == "updated" and not changes:
        return None  # only bookkeeping changed (a key's last use, a revision)
    action = NAMED_VERBS.get((kind.name, verb), f"{kind.name}.{verb}")
    if verb == "updated":
        named = [
            NAMED_UPDATES[(kind.name, name)]
            for name in changes
            if (kind.name, name) in NAMED_UPDATES
        ]
        action = named[0] if named else action
    workspace_id = entity.id if isinstance(entity, Workspace) else entity.workspace_id
    return new_entry(workspace_id, action, kind.name, kind.target_id(entity), changes or None)


def _before_after(verb: str, history: Any, current: Any) -> tuple[Any, Any]:
    """A column's value before and after the change (`history.deleted` holds the loaded value
    an update replaced; an unloaded one is NO_VALUE, i.e. unknown)."""
    original = history.deleted[0] if history.deleted else None
    if original is NO_VALUE:
        original = None
    if verb == "created":
        return None, current
    if verb == "deleted":
        return (original if history.deleted else current), None
    return original, current


def _redacted(name: str, before: Any, after: Any) -> dict[str, Any]:
    if any(mark in name for mark in SECRET_MARKS):
        return {"before": before and REDACTED, "after": after and REDACTED}
    return {"before": json_value(before), "after": json_value(after)}


def json_value(value: Any) -> Any:
    """A JSON value."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [json_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): json_value(item) for key, item in value.items()}
    return value


def new_entry(
    workspace_id: uuid.UUID,
    action: str,
    target_type: str,
    target_id: str | None,
    changes: dict[str, Any] | None = None,
    *,
    actor: tuple[str, uuid.UUID | None, str | None] | None = None,
) -> AuditEntry:
    """An entry by the request's caller (or `actor`: type, id, label), with the request's id,
    client address and user agent."""
    if actor is None:
        actor = request_actor_var.get() or ("system", None, None)
    ip, user_agent = request_client_var.get()
    return AuditEntry(
        id=uuid.uuid4(),
        workspace_id=workspace_id,
        actor_type=actor[0],
        actor_id=actor[1],
        actor_label=actor[2],
        action=action,
        target_type=target_type,
        target_id=target_id,
        changes=changes,
        request_id=request_id_var.get(),
        ip=ip,
        user_agent=user_agent,
    )
