"""Every model, imported so `Base.metadata` is complete (Alembic and tests rely on this)."""

from app.models.base import Base
from app.models.chat import ChatMessage, ChatSession, MessageRole, MessageStatus
from app.models.project import Project, Prompt
from app.models.user import RefreshToken, User, Workspace, WorkspaceMember

__all__ = [
    "Base",
    "ChatMessage",
    "ChatSession",
    "MessageRole",
    "MessageStatus",
    "Project",
    "Prompt",
    "RefreshToken",
    "User",
    "Workspace",
    "WorkspaceMember",
]
