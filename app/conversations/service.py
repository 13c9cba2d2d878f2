"""The operator API: the queue, a conversation and its messages, transitions, replies.

Each change is its own short transaction on the locked conversation (see transitions.py), so
a transition and a bot turn finishing at the same moment are ordered, never interleaved."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.dependencies import Principal
from app.channels.outbound import store_reply
from app.conversations.policy import policy_of
from app.conversations.repository import (
    ChannelMessageRepository,
    ConversationRepository,
    window_expires_at,
)
from app.conversations.schemas import (
    Author as AuthorRead,
)
from app.conversations.schemas import (
    Contact,
    ConversationMessage,
    ConversationRead,
    DeliveryError,
)
from app.conversations.transitions import Action, Actor, apply, authorize
from app.core.driver import transaction
from app.core.errors import ConflictError, NotFoundError, field_error
from app.core.pagination import Keyset, PageParams
from app.core.types import utcnow
from app.models import (
    Author,
    Channel,
    ChannelMessage,
    ChannelProvider,
    ChannelStatus,
    ChatMessage,
    Conversation,
    MessageStatus,
    Mode,
    WorkspaceMember,
)
from app.workspaces.roles import Role, has_role

QUEUE_KEYSET = Keyset((Conversation.waiting_since, Conversation.id))
RECENT_KEYSET = Keyset((Conversation.updated_at, Conversation.id), descending=True)
MESSAGE_KEYSET = Keyset((ChatMessage.seq,))
DELIVERY_RANK = {"queued": 0, "accepted": 1, "sent": 2, "delivered": 3, "read": 4, "played": 4}


def conversation_not_found() -> NotFoundError:
    return NotFoundError("Conversation not found.", code="conversation_not_found")


@dataclass(frozen=True)
class Filters:
    status: Literal["open", "pending_human", "resolved"] | None = None
    mode: Literal["bot", "human", "paused"] | None = None
    assignee: str | None = None  # me | none | a user id
    project_id: uuid.UUID | None = None
    channel_id: uuid.UUID | None = None


def conversation_read(conversation: Conversation, provider: str) -> ConversationRead:
    expires = window_expires_at(conversation) if provider == ChannelProvider.META_CLOUD else None
    can_reply = provider != ChannelProvider.META_CLOUD or (
        expires is not None and expires > utcnow() and not conversation.window_closed
    )
    return ConversationRead(
        id=conversation.id,
        project_id=conversation.project_id,
        channel_id=conversation.channel_id,
        provider=provider,
        chat_session_id=conversation.chat_session_id,
        contact=Contact(id=conversation.contact_id, name=conversation.contact_name),
        mode=conversation.mode,
        status=conversation.status,
        assignee_user_id=conversation.assignee_user_id,
        handoff_reason=conversation.handoff_reason,
        handoff_requested_at=conversation.handoff_requested_at,
        waiting_since=conversation.waiting_since,
        last_inbound_at=conversation.last_inbound_at,
        window_expires_at=expires,
        can_reply=can_reply,
        unread_count=conversation.unread_count,
        version=conversation.version,
        created_at=conversation.created_at,
        updated_at=conversation.updated_at,
    )


def message_read(message: ChatMessage, parts: list[ChannelMessage]) -> ConversationMessage:
    failed = next((p for p in parts if p.status == "failed"), None)
    if message.status == MessageStatus.SUPPRESSED:
        delivery: str | None = "suppressed"
    elif failed is not None:
        delivery = "failed"
    elif parts:
        delivery = min((p.status for p in parts), key=lambda s: DELIVERY_RANK.get(s, 0))
    else:
        delivery = None
    return ConversationMessage(
        id=message.id,
        seq=message.seq,
        role=message.role,
        author=AuthorRead(
            type=message.author_type or ("contact" if message.role == "user" else "bot"),
            user_id=message.author_user_id,
        ),
        content=message.content,
        status=message.status,
        delivery_status=delivery,
        error=DeliveryError(code=failed.error_code or "failed", title=failed.error_title)
        if failed is not None
        else None,
        citations=message.citations or [],
        created_at=message.created_at,
    )


class ConversationService:
    def __init__(self, maker: async_sessionmaker[AsyncSession], principal: Principal) -> None:
        self.maker = maker
        self.workspace_id = principal.workspace_id
        self.actor = Actor("user", principal.user_id, principal.email, principal.role)

    async def list_page(
        self, filters: Filters, params: PageParams
    ) -> tuple[list[ConversationRead], str | None]:
        """The workspace's conversations; the queue (`status=pending_human`) longest-waiting
        first, otherwise the most recently active first."""
        keyset = QUEUE_KEYSET if filters.status == "pending_human" else RECENT_KEYSET
        async with self.maker() as db:
            statement = self._filtered(
                ConversationRepository(db, self.workspace_id).scoped(), filters
            )
            rows = (await db.execute(keyset.paginate(statement, params))).scalars().all()
            items, cursor = keyset.page(rows, params)
            providers = await self._providers(db, {c.channel_id for c in items})
        return [conversation_read(c, providers[c.channel_id]) for c in items], cursor

    def _filtered(
        self, statement: Select[tuple[Conversation]], filters: Filters
    ) -> Select[tuple[Conversation]]:
        if filters.status:
            statement = statement.where(Conversation.status == filters.status)
        if filters.mode:
            statement = statement.where(Conversation.mode == filters.mode)
        if filters.project_id:
            statement = statement.where(Conversation.project_id == filters.project_id)
        if filters.channel_id:
            statement = statement.where(Conversation.channel_id == filters.channel_id)
        if filters.assignee == "me":
            statement = statement.where(Conversation.assignee_user_id == self.actor.user_id)
        elif filters.assignee == "none":
            statement = statement.where(Conversation.assignee_user_id.is_(None))
        elif filters.assignee:
            try:
                assignee = uuid.UUID(filters.assignee)
            except ValueError:
                raise field_error("assignee", "must be `me`, `none` or a user id") from None
            statement = statement.where(Conversation.assignee_user_id == assignee)
        return statement

    async def _providers(
        self, db: AsyncSession, channel_ids: set[uuid.UUID]
    ) -> dict[uuid.UUID, str]:
        if not channel_ids:
            return {}
        rows = await db.execute(
            select(Channel.id, Channel.provider).where(Channel.id.in_(channel_ids))
        )
        return {row.id: row.provider for row in rows}

    async def get(self, conversation_id: uuid.UUID) -> ConversationRead:
        async with self.maker() as db:
            conversation = await ConversationRepository(db, self.workspace_id).get(conversation_id)
            if conversation is None:
                raise conversation_not_found()
            providers = await self._providers(db, {conversation.channel_id})
        return conversation_read(conversation, providers[conversation.channel_id])

    async def messages(
        self, conversation_id: uuid.UUID, params: PageParams
    ) -> tuple[list[ConversationMessage], str | None]:
        """Oldest first, each with its author and delivery status."""
        async with self.maker() as db:
            conversation = await ConversationRepository(db, self.workspace_id).get(conversation_id)
            if conversation is None:
                raise conversation_not_found()
            statement = select(ChatMessage).where(
                ChatMessage.workspace_id == self.workspace_id,
                ChatMessage.chat_session_id == conversation.chat_session_id,
            )
            rows = (await db.execute(MESSAGE_KEYSET.paginate(statement, params))).scalars().all()
            items, cursor = MESSAGE_KEYSET.page(rows, params)
            parts = await ChannelMessageRepository(db, self.workspace_id).for_messages(
                [m.id for m in items]
            )
        return [message_read(m, parts.get(m.id, [])) for m in items], cursor

    async def act(
        self,
        conversation_id: uuid.UUID,
        action: Action,
        *,
        assignee_id: uuid.UUID | None = None,
        force: bool = False,
        reason: str | None = None,
    ) -> ConversationRead:
        """One transition, by the caller (whose role `authorize` checks)."""
        async with transaction(self.maker) as db:
            conversation = await self._locked(db, conversation_id)
            if action == Action.ASSIGN:
                assignee_id = assignee_id or self.actor.user_id
            authorize(self.actor, action, conversation, assignee_id=assignee_id, force=force)
            if action == Action.ASSIGN and assignee_id != self.actor.user_id:
                await self._check_operator(db, assignee_id)
            await apply(
                db,
                conversation,
                action,
                self.actor,
                reason=reason or ("operator" if action == Action.HANDOFF else None),
                assignee_id=assignee_id,
                force=force,
            )
            if action == Action.HANDOFF:
                await _send_handoff_message(db, conversation)
            provider = await self._provider(db, conversation)
        return conversation_read(conversation, provider)

    async def reply(
        self, conversation_id: uuid.UUID, text: str
    ) -> tuple[ConversationMessage, ConversationRead]:
        """Queue an operator's message to the contact; the operator takes the conversation
        (the bot falls silent) if it was not theirs already."""
        async with transaction(self.maker) as db:
            conversation = await self._locked(db, conversation_id)
            authorize(self.actor, Action.TAKEOVER, conversation)
            channel = await db.get(Channel, conversation.channel_id)
            assert channel is not None  # noqa: S101 - the conversation's channel
            _check_can_send(channel, conversation)
            if conversation.mode != Mode.HUMAN or conversation.assignee_user_id is None:
                await apply(
                    db,
                    conversation,
                    Action.TAKEOVER,
                    self.actor,
                    reason="operator",
                    assignee_id=conversation.assignee_user_id or self.actor.user_id,
                )
            message = await store_reply(
                db, conversation, text, author=Author.OPERATOR, author_user_id=self.actor.user_id
            )
            conversation.last_operator_reply_at, conversation.unread_count = utcnow(), 0
            parts = (
                await ChannelMessageRepository(db, self.workspace_id).for_messages([message.id])
            ).get(message.id, [])
            read = message_read(message, parts)
        return read, conversation_read(conversation, channel.provider)

    async def _locked(self, db: AsyncSession, conversation_id: uuid.UUID) -> Conversation:
        conversation = await ConversationRepository(db, self.workspace_id).lock(conversation_id)
        if conversation is None:
            raise conversation_not_found()
        return conversation

    async def _provider(self, db: AsyncSession, conversation: Conversation) -> str:
        return (await self._providers(db, {conversation.channel_id}))[conversation.channel_id]

    async def _check_operator(self, db: AsyncSession, user_id: uuid.UUID | None) -> None:
        member = await db.get(WorkspaceMember, (self.workspace_id, user_id))
        if member is None or not has_role(member.role, Role.AGENT):
            raise field_error(
                "assignee_id", "must be a member of this workspace with the agent role or above"
            )


def _check_can_send(channel: Channel, conversation: Conversation) -> None:
    if channel.status == ChannelStatus.DISABLED:
        raise ConflictError("The channel is disabled; enable it first.", code="channel_disabled")
    if channel.provider != ChannelProvider.META_CLOUD:
        return
    expires = window_expires_at(conversation)
    if expires is None or expires <= utcnow() or conversation.window_closed:
        raise ConflictError(
            "WhatsApp only allows free text within 24 hours of the contact's last message; "
            "this conversation's window has closed (a template message is needed).",
            code="outside_customer_service_window",
            details=[{"window_expired_at": expires.isoformat() if expires else None}],
        )


async def _send_handoff_message(db: AsyncSession, conversation: Conversation) -> None:
    channel = await db.get(Channel, conversation.channel_id)
    assert channel is not None  # noqa: S101 - the conversation's channel
    await store_reply(
        db, conversation, policy_of(channel.settings or {}).message, author=Author.SYSTEM
    )
