"""Every model, imported so `Base.metadata` is complete (Alembic and tests rely on this)."""

from app.models.api_key import ApiKey
from app.models.audit import AuditEntry
from app.models.base import Base
from app.models.channel import (
    Author,
    Channel,
    ChannelMessage,
    ChannelProvider,
    ChannelStatus,
    Conversation,
    ConversationStatus,
    Mode,
)
from app.models.chat import (
    ChatMessage,
    ChatSession,
    FeedbackRating,
    MessageRole,
    MessageStatus,
)
from app.models.event import Event, Webhook, WebhookDelivery
from app.models.idempotency import IdempotencyKey
from app.models.intent import Intent
from app.models.invitation import Invitation
from app.models.job import Job
from app.models.knowledge import (
    DocumentSource,
    DocumentStatus,
    KnowledgeChunk,
    KnowledgeDocument,
    KnowledgeEmbedding,
    KnowledgeFilePart,
)
from app.models.project import Project, Prompt
from app.models.user import (
    PasswordResetToken,
    RefreshToken,
    User,
    Workspace,
    WorkspaceMember,
)

__all__ = [
    "ApiKey",
    "AuditEntry",
    "Author",
    "Base",
    "Channel",
    "ChannelMessage",
    "ChannelProvider",
    "ChannelStatus",
    "ChatMessage",
    "ChatSession",
    "Conversation",
    "ConversationStatus",
    "DocumentSource",
    "DocumentStatus",
    "Event",
    "FeedbackRating",
    "IdempotencyKey",
    "Intent",
    "Invitation",
    "Job",
    "KnowledgeChunk",
    "KnowledgeDocument",
    "KnowledgeEmbedding",
    "KnowledgeFilePart",
    "MessageRole",
    "MessageStatus",
    "Mode",
    "PasswordResetToken",
    "Project",
    "Prompt",
    "RefreshToken",
    "User",
    "Webhook",
    "WebhookDelivery",
    "Workspace",
    "WorkspaceMember",
]
