"""WhatsApp channels (app/channels/), their conversations with contacts (app/conversations/),
and the provider side of each message."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.types import utcnow
from app.models.base import Base, Timestamps, UUIDPrimaryKey, WorkspaceScoped


class ChannelProvider(enum.StrEnum):
    META_CLOUD = "meta_cloud"
    WHAPI = "whapi"


class ChannelStatus(enum.StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"  # by a user: webhooks are acknowledged and ignored, nothing is sent
    AUTH_ERROR = "auth_error"  # the provider refused our credentials: sends wait for new ones


class Mode(enum.StrEnum):
    """Who answers automatically: the seed's BOT / AGENT / PAUSE."""

    BOT = "bot"
    HUMAN = "human"
    PAUSED = "paused"


class ConversationStatus(enum.StrEnum):
    OPEN = "open"
    PENDING_HUMAN = "pending_human"  # in the operators' queue, by waiting time
    RESOLVED = "resolved"


class Author(enum.StrEnum):
    CONTACT = "contact"
    BOT = "bot"
    OPERATOR = "operator"
    DEVICE = "device"  # typed on the linked phone, not sent by us
    SYSTEM = "system"  # the handoff message, admin command confirmations


class Channel(UUIDPrimaryKey, WorkspaceScoped, Timestamps, Base):
    __tablename__ = "channels"

    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default=ChannelStatus.ACTIVE)
    # Meta: the number's id, unique across tenants (one number, one channel).
    phone_number_id: Mapped[str | None] = mapped_column(String(100))
    display_phone_number: Mapped[str | None] = mapped_column(String(50))
    base_url: Mapped[str | None] = mapped_column(String(2000))
    api_version: Mapped[str | None] = mapped_column(String(20))
    # Fernet ciphertexts (app/channels/secrets.py): needed in clear to call and to verify.
    access_token_enc: Mapped[str] = mapped_column(Text)
    app_secret_enc: Mapped[str | None] = mapped_column(Text)
    # SHA-256 hex: only ever compared.
    verify_token_hash: Mapped[str | None] = mapped_column(String(64))
    webhook_secret_hash: Mapped[str | None] = mapped_column(String(64))
    # Numbers whose messages are admin commands (the seed's WHAPI_ADMINS).
    admin_numbers: Mapped[list[str]] = mapped_column(JSON, default=list)
    # handoff_keywords, handoff_message (app/conversations/policy.py).
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Set for the channel the seed's `/webhook/whapi` serves (built from settings).
    from_settings: Mapped[bool] = mapped_column(default=False)
    last_webhook_at: Mapped[datetime | None]
    last_error_code: Mapped[str | None] = mapped_column(String(50))
    last_error_at: Mapped[datetime | None]
    # After a throughput error (130429), the channel's sends wait until then.
    throttled_until: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("provider", "phone_number_id", name="uq_channels_provider"),
        Index("ix_channels_workspace_id_project_id", "workspace_id", "project_id"),
        Index("ix_channels_project_id", "project_id"),
    )


class Conversation(UUIDPrimaryKey, WorkspaceScoped, Timestamps, Base):
    """One per channel contact, linked 1:1 to the chat session holding its messages."""

    __tablename__ = "conversations"

    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    channel_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"))
    chat_session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("chat_sessions.id", ondelete="CASCADE"), unique=True
    )
    # The address we send to: the WhatsApp id (digits) or, for username users, the BSUID.
    contact_id: Mapped[str] = mapped_column(String(128))
    contact_name: Mapped[str | None] = mapped_column(String(200))
    mode: Mapped[str] = mapped_column(String(10), default=Mode.BOT)
    status: Mapped[str] = mapped_column(String(20), default=ConversationStatus.OPEN)
    assignee_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    handoff_reason: Mapped[str | None] = mapped_column(String(30))
    handoff_requested_at: Mapped[datetime | None]
    assigned_at: Mapped[datetime | None]
    # Since when a human has had it (for the note the bot gets when it is handed back).
    human_since: Mapped[datetime | None]
    # Told to the bot on its next turn only: a human handled the recent messages.
    bot_note: Mapped[str | None] = mapped_column(Text)
    waiting_since: Mapped[datetime | None]
    last_inbound_at: Mapped[datetime | None]
    last_inbound_external_id: Mapped[str | None] = mapped_column(String(200))
    last_operator_reply_at: Mapped[datetime | None]
    unread_count: Mapped[int] = mapped_column(default=0)
    # Consecutive failed bot replies (reset by a good one).
    failed_replies: Mapped[int] = mapped_column(default=0)
    # Meta said the 24-hour window was closed (131047) after our last inbound message.
    window_closed: Mapped[bool] = mapped_column(default=False)
    # Incremented by every transition: the optimistic check of concurrent ones.
    version: Mapped[int] = mapped_column(default=1)

    __table_args__ = (
        UniqueConstraint("channel_id", "contact_id", name="uq_conversations_channel_id"),
        Index(
            "ix_conversations_workspace_id_status_waiting_since",
            "workspace_id",
            "status",
            "waiting_since",
        ),
        Index(
            "ix_conversations_workspace_id_assignee_user_id",
            "workspace_id",
            "assignee_user_id",
        ),
        Index("ix_conversations_project_id", "project_id"),
    )


class ChannelMessage(UUIDPrimaryKey, WorkspaceScoped, Base):
    """The provider side of one message part: its provider id (the dedupe key of inbound
    ones) and delivery status (outbound ones)."""

    __tablename__ = "channel_messages"

    channel_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"))
    # Null for an admin's command (it belongs to no conversation).
    conversation_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE")
    )
    chat_message_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("chat_messages.id", ondelete="CASCADE")
    )
    direction: Mapped[str] = mapped_column(String(3))  # in | out
    # A reply over 4,096 characters goes as parts 0, 1, ...
    part: Mapped[int] = mapped_column(default=0)
    recipient: Mapped[str | None] = mapped_column(String(128))
    # What to send (out); the text is kept here too for commands that have no chat message.
    body: Mapped[str | None] = mapped_column(Text)
    external_id: Mapped[str | None] = mapped_column(String(200))
    # received (in) | queued, accepted, sent, delivered, read, failed (out)
    status: Mapped[str] = mapped_column(String(20))
    error_code: Mapped[str | None] = mapped_column(String(50))
    error_title: Mapped[str | None] = mapped_column(Text)
    pricing: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]

    __table_args__ = (
        # The dedupe guarantee: a provider's message id is stored once per channel.
        UniqueConstraint(
            "channel_id", "direction", "external_id", name="uq_channel_messages_channel_id"
        ),
        Index("ix_channel_messages_chat_message_id", "chat_message_id"),
        Index("ix_channel_messages_conversation_id_created_at", "conversation_id", "created_at"),
    )
