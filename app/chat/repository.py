"""Session and message queries, scoped to one workspace."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    Integer,
    Select,
    Text,
    bindparam,
    case,
    cast,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.driver import Prebuilt, on_driver, run
from app.core.pagination import Keyset, PageParams
from app.core.repository import WorkspaceRepository
from app.events.recorder import mark_recorded
from app.models import ChatMessage, ChatSession, Event, MessageStatus, Project

SESSION_KEYSET = Keyset((ChatSession.last_activity_at, ChatSession.id), descending=True)
MESSAGE_KEYSET = Keyset((ChatMessage.seq,))
_CONTEXT_STATUSES = (MessageStatus.COMPLETE, MessageStatus.INCOMPLETE)


@dataclass(frozen=True)
class TurnClaim:
    last_seq: int  # the last of the message positions reserved
    revision: int  # the project's revision (see app/projects/config.py)
    last_event_seq: int  # the last of the event sequence numbers reserved


@dataclass(frozen=True)
class Audience:
    """Which of the workspace's sessions a caller reaches: all of them (a signed-in user), or
    one project's sessions of one end user (an API key; a null end user is its own group)."""

    project_id: uuid.UUID | None = None
    per_end_user: bool = False
    end_user_id: str | None = None


EVERYONE = Audience()


class SessionRepository(WorkspaceRepository[ChatSession]):
    model = ChatSession

    def __init__(
        self, session: AsyncSession, workspace_id: uuid.UUID, audience: Audience = EVERYONE
    ) -> None:
        super().__init__(session, workspace_id)
        self.audience = audience

    def scoped(self) -> Select[Any]:
        return super().scoped().where(*self._audience_conditions())

    def _audience_conditions(self) -> list[ColumnElement[bool]]:
        conditions = []
        if self.audience.project_id is not None:
            conditions.append(ChatSession.project_id == self.audience.project_id)
        if self.audience.per_end_user:
            end_user = self.audience.end_user_id
            conditions.append(
                ChatSession.end_user_id.is_(None)
                if end_user is None
                else ChatSession.end_user_id == end_user
            )
        return conditions

    async def list_page(
        self, project_id: uuid.UUID, params: PageParams, *, end_user_id: str | None = None
    ) -> tuple[list[ChatSession], str | None]:
        statement = self.scoped().where(ChatSession.project_id == project_id)
        if end_user_id is not None:
            statement = statement.where(ChatSession.end_user_id == end_user_id)
        return await self.page(statement, SESSION_KEYSET, params)

    async def reserve_seqs(
        self, session_id: uuid.UUID, count: int, now: datetime
    ) -> tuple[int, int]:
        """Atomically claim `count` message positions and as many event sequence numbers; the
        last of each."""
        result = await self.session.execute(
            update(ChatSession)
            .where(ChatSession.workspace_id == self.workspace_id, ChatSession.id == session_id)
            .values(
                message_count=ChatSession.message_count + count,
                event_seq=ChatSession.event_seq + count,
                last_activity_at=now,
            )
            .returning(ChatSession.message_count, ChatSession.event_seq)
        )
        message_seq, event_seq = result.one()
        return int(message_seq), int(event_seq)

    async def claim_turn(
        self,
        session_id: uuid.UUID,
        project_id: uuid.UUID,
        owner: uuid.UUID,
        until: datetime,
        now: datetime,
        *,
        reserve: int,
    ) -> TurnClaim | None:
        """Let the turn `owner` hold the session until `until` and reserve `reserve` message
        positions (and as many event sequence numbers), in one conditional UPDATE; None if the
        session is not the caller's in that project, or another turn holds it. Also returns
        the project's revision."""
        audience = self.audience
        params: dict[str, Any] = {
            "b_workspace_id": self.workspace_id,
            "b_session_id": session_id,
            "b_project_id": project_id,
            "owner": owner,
            "until": until,
            "now": now,
            "reserve": reserve,
            "audience_project_id": audience.project_id,
            "b_end_user_id": audience.end_user_id,
        }
        shape = (
            audience.project_id is not None,
            audience.per_end_user,
            audience.end_user_id is None,
        )
        rows = await self.core(_claim_statement(*shape), params)
        if not rows:
            return None
        row = rows[0]
        return TurnClaim(
            last_seq=int(row["message_count"]),
            revision=int(row["revision"]),
            last_event_seq=int(row["event_seq"]),
        )

    async def extend_turn(self, session_id: uuid.UUID, owner: uuid.UUID, until: datetime) -> None:
        await self.session.execute(
            update(ChatSession)
            .where(
                ChatSession.workspace_id == self.workspace_id,
                ChatSession.id == session_id,
                ChatSession.turn_owner == owner,
            )
            .values(turn_until=until)
        )

    async def touch(
        self,
        session_id: uuid.UUID,
        now: datetime,
        *,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        total_tokens: int = 0,
        release: uuid.UUID | None = None,
    ) -> None:
        """Record activity, adding a finished reply's tokens to the session's totals; and let
        go of the session if the turn `release` holds it."""
        values: dict[str, Any] = {
            "last_activity_at": now,
            "prompt_tokens": ChatSession.prompt_tokens + prompt_tokens,
            "completion_tokens": ChatSession.completion_tokens + completion_tokens,
            "total_tokens": ChatSession.total_tokens + total_tokens,
        }
        if release is not None:
            held = ChatSession.turn_owner == release
            values["turn_owner"] = case((held, None), else_=ChatSession.turn_owner)
            values["turn_until"] = case((held, None), else_=ChatSession.turn_until)
        await self.session.execute(
            update(ChatSession)
            .where(ChatSession.workspace_id == self.workspace_id, ChatSession.id == session_id)
            .values(**values)
        )


# The hot path's statements are built once: building a statement and its cache key costs
# more CPU than running it.


@cache
def _claim_statement(project_scoped: bool, per_end_user: bool, end_user_null: bool) -> Prebuilt:
    revision = (
        select(Project.revision)
        .where(
            Project.id == ChatSession.project_id,
            Project.workspace_id == bindparam("b_workspace_id"),
        )
        .scalar_subquery()
    )
    now = bindparam("now", type_=ChatSession.last_activity_at.type)
    conditions = [
        ChatSession.workspace_id == bindparam("b_workspace_id"),
        ChatSession.id == bindparam("b_session_id"),
        ChatSession.project_id == bindparam("b_project_id"),
        or_(ChatSession.turn_owner.is_(None), ChatSession.turn_until < now),
    ]
    if project_scoped:
        conditions.append(ChatSession.project_id == bindparam("audience_project_id"))
    if per_end_user:
        conditions.append(
            ChatSession.end_user_id.is_(None)
            if end_user_null
            else ChatSession.end_user_id == bindparam("b_end_user_id")
        )
    return Prebuilt(
        update(ChatSession)
        .where(*conditions)
        .values(
            turn_owner=bindparam("owner", type_=ChatSession.id.type),
            turn_until=bindparam("until", type_=ChatSession.last_activity_at.type),
            message_count=ChatSession.message_count + bindparam("reserve", type_=Integer()),
            event_seq=ChatSession.event_seq + bindparam("reserve", type_=Integer()),
            last_activity_at=now,
        )
        .returning(ChatSession.message_count, ChatSession.event_seq, revision.label("revision"))
    )


@cache
def _history_statement(before: bool) -> Prebuilt:
    statement = select(ChatMessage.role, ChatMessage.content).where(
        ChatMessage.workspace_id == bindparam("workspace_id"),
        ChatMessage.chat_session_id == bindparam("session_id"),
        or_(*(ChatMessage.status == status for status in _CONTEXT_STATUSES)),  # no expanding IN
        ChatMessage.content != "",
    )
    if before:
        statement = statement.where(ChatMessage.seq < bindparam("before_seq"))
    limited = statement.order_by(ChatMessage.seq.desc()).limit(bindparam("size", type_=Integer()))
    return Prebuilt(limited)


_INSERT_MESSAGES = Prebuilt(insert(ChatMessage))
_INSERT_EVENTS = Prebuilt(insert(Event))
_MESSAGE_COLUMNS = tuple(column.key for column in ChatMessage.__table__.columns)


@cache
def _insert_turn_statement(messages: int, events: int) -> Prebuilt:
    """WITH stored AS (INSERT the messages) INSERT the events: one statement, so the turn's
    events cost no round trip (Postgres; its data-modifying CTEs always run to completion).
    Parameters are `m<i>_<column>` and `e<j>_<column>`; an event's data is JSON text."""
    message_columns = ChatMessage.__table__.columns
    stored = (
        insert(ChatMessage)
        .values(
            [
                {c.key: bindparam(f"m{i}_{c.key}", type_=c.type) for c in message_columns}
                for i in range(messages)
            ]
        )
        .cte("stored")
    )
    return Prebuilt(
        insert(Event).values([event_values(f"e{j}_") for j in range(events)]).add_cte(stored)
    )


def event_values(prefix: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for column in Event.__table__.columns:
        if column.key == "data":
            values["data"] = cast(bindparam(f"{prefix}data", type_=Text()), JSON)
        else:
            values[column.key] = bindparam(f"{prefix}{column.key}", type_=column.type)
    return values


@cache
def _param_names(prefix: str, columns: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{prefix}{column}" for column in columns)


def turn_params(messages: list[dict[str, Any]], events: list[dict[str, Any]]) -> dict[str, Any]:
    """The parameters of `_insert_turn_statement(len(messages), len(events))`."""
    params: dict[str, Any] = {}
    for index, row in enumerate(messages):
        params.update(zip(_param_names(f"m{index}_", tuple(row)), row.values(), strict=True))
    for index, row in enumerate(events):
        params.update(zip(_param_names(f"e{index}_", tuple(row)), row.values(), strict=True))
        params[f"e{index}_data"] = _JSON.encode(row["data"])
    return params


_JSON = json.JSONEncoder(separators=(",", ":"))


class MessageRepository(WorkspaceRepository[ChatMessage]):
    model = ChatMessage

    async def list_page(
        self, session_id: uuid.UUID, params: PageParams
    ) -> tuple[list[ChatMessage], str | None]:
        statement = self.scoped().where(ChatMessage.chat_session_id == session_id)
        return await self.page(statement, MESSAGE_KEYSET, params)

    async def after_seq(self, session_id: uuid.UUID, after: int, limit: int) -> list[ChatMessage]:
        """Up to `limit` messages following position `after`, in order."""
        result = await self.session.execute(
            self.scoped()
            .where(ChatMessage.chat_session_id == session_id, ChatMessage.seq > after)
            .order_by(ChatMessage.seq)
            .limit(limit)
        )
        return list(result.scalars().all())

    async def history_window(
        self, session_id: uuid.UUID, size: int, *, before_seq: int | None = None
    ) -> list[tuple[str, str]]:
        """(role, content) of the last `size` usable messages (before `before_seq`), oldest
        first. Reads only those rows, through the (session, seq) index; failed, pending and
        superseded replies are not part of the conversation."""
        if size <= 0:
            return []
        params = {
            "workspace_id": self.workspace_id,
            "session_id": session_id,
            "size": size,
            "before_seq": before_seq,
        }
        rows = await self.core(_history_statement(before_seq is not None), params)
        return [(row["role"], row["content"]) for row in reversed(rows)]

    async def insert(self, *messages: ChatMessage, events: tuple[dict[str, Any], ...] = ()) -> None:
        """INSERT the messages, and the turn's event rows, in one statement on Postgres (two
        on SQLite, which has no data-modifying CTEs). The instances stay outside the session."""
        connection = await self.session.connection()
        raw = on_driver(connection)
        rows = []
        for message in messages:
            message.workspace_id = self.workspace_id
            row = {key: getattr(message, key) for key in _MESSAGE_COLUMNS}
            if raw and row["citations"] is not None:
                row["citations"] = _JSON.encode(row["citations"])
            rows.append(row)
        if events and connection.dialect.name == "postgresql":
            statement = _insert_turn_statement(len(rows), len(events))
            await run(connection, statement, turn_params(rows, list(events)))
            return
        await run(connection, _INSERT_MESSAGES, rows)
        if events:
            await run(connection, _INSERT_EVENTS, list(events))
            mark_recorded(self.session)

    async def last_of_role(
        self, session_id: uuid.UUID, role: str, *, before_seq: int | None = None
    ) -> ChatMessage | None:
        statement = self.scoped().where(
            ChatMessage.chat_session_id == session_id, ChatMessage.role == role
        )
        if before_seq is not None:
            statement = statement.where(ChatMessage.seq < before_seq)
        result = await self.session.execute(statement.order_by(ChatMessage.seq.desc()).limit(1))
        message: ChatMessage | None = result.scalar_one_or_none()
        return message

    async def supersede(self, message_id: uuid.UUID) -> bool:
        """Mark a finished reply as superseded; False if it is pending or already superseded
        (a conditional update, so two concurrent regenerations cannot both win)."""
        result = await self.session.execute(
            update(ChatMessage)
            .where(
                ChatMessage.workspace_id == self.workspace_id,
                ChatMessage.id == message_id,
                ChatMessage.status.not_in((MessageStatus.PENDING, MessageStatus.SUPERSEDED)),
            )
            .values(status=MessageStatus.SUPERSEDED)
            .returning(ChatMessage.id)
        )
        return result.first() is not None

    async def request_cancel(self, message_id: uuid.UUID) -> None:
        await self.session.execute(
            update(ChatMessage)
            .where(
                ChatMessage.workspace_id == self.workspace_id,
                ChatMessage.id == message_id,
                ChatMessage.status == MessageStatus.PENDING,
                ChatMessage.cancel_requested_at.is_(None),
            )
            .values(cancel_requested_at=datetime.now(UTC))
        )

    async def in_session(self, session_id: uuid.UUID, message_id: uuid.UUID) -> ChatMessage | None:
        message: ChatMessage | None = await self.get(message_id)
        return message if message is not None and message.chat_session_id == session_id else None
