"""A chat turn: store the message, call the LLM with no transaction open, store the reply."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.chat.errors import classify, upstream_error
from app.chat.repository import MessageRepository, SessionRepository
from app.chat.schemas import ChatRequest
from app.core.config import Settings
from app.core.errors import NotFoundError, ValidationFailedError
from app.llm.base import LLMError, LLMProvider
from app.llm.registry import ProviderRegistry
from app.llm.types import Completion, CompletionRequest, LLMMessage
from app.models import ChatMessage, ChatSession, MessageRole, MessageStatus
from app.projects.service import ProjectService
from app.prompts.repository import PromptRepository

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
TITLE_MAX_CHARS = 80


@dataclass
class ChatTurn:
    session_id: uuid.UUID
    user_message: ChatMessage
    assistant_message: ChatMessage


@dataclass
class _PreparedTurn(ChatTurn):
    provider: LLMProvider | None
    request: CompletionRequest
    setup_error: LLMError | None


def session_not_found() -> NotFoundError:
    return NotFoundError("Chat session not found.", code="session_not_found")


def title_from_message(message: str) -> str:
    """A session title from its first message: first line, whitespace collapsed, cut at a word."""
    text = re.sub(r"\s+", " ", message.strip().splitlines()[0] if message.strip() else "").strip()
    if len(text) <= TITLE_MAX_CHARS:
        return text
    cut = text[: TITLE_MAX_CHARS - 1].rsplit(" ", 1)[0] or text[: TITLE_MAX_CHARS - 1]
    return cut.rstrip(" ,.;:") + "…"


class ChatService:
    """Runs chat turns. Owns its transactions: one short one before the LLM call, one after."""

    def __init__(
        self,
        maker: async_sessionmaker[AsyncSession],
        workspace_id: uuid.UUID,
        registry: ProviderRegistry,
        settings: Settings,
    ) -> None:
        self.maker = maker
        self.workspace_id = workspace_id
        self.registry = registry
        self.settings = settings

    async def send_message(self, data: ChatRequest) -> ChatTurn:
        """Store the user's message, ask the LLM, store and return the reply.

        The user's message is committed before the LLM is called, so it survives any failure;
        a failed reply is stored as `failed` and reported as an `UpstreamError`.
        """
        self._check_message(data.message)
        turn = await self._prepare(data)
        started = time.perf_counter()
        try:
            if turn.setup_error is not None:
                raise turn.setup_error
            assert turn.provider is not None  # noqa: S101 - set whenever setup_error is None
            completion = await turn.provider.complete(turn.request)
        except LLMError as exc:
            await self._record_failure(turn, exc, _elapsed_ms(started))
            raise upstream_error(exc, details=[_turn_details(turn)]) from exc
        except Exception:
            await self._record_failure(turn, None, _elapsed_ms(started))
            raise
        turn.assistant_message = await self._record_reply(turn, completion, _elapsed_ms(started))
        return turn

    def _check_message(self, message: str) -> None:
        limit = self.settings.MAX_MESSAGE_CHARS
        problem = None
        if not message.strip():
            problem = "must not be empty or only whitespace"
        elif len(message) > limit:
            problem = f"must be at most {limit} characters (got {len(message)})"
        if problem:
            raise ValidationFailedError(
                f"The request is invalid: message: {problem}",
                details=[{"field": "message", "message": problem, "type": "value_error"}],
            )

    async def _prepare(self, data: ChatRequest) -> _PreparedTurn:
        now = datetime.now(UTC)
        async with self.maker() as db, db.begin():
            project = await ProjectService(db, self.workspace_id).get(data.project_id)
            sessions = SessionRepository(db, self.workspace_id)
            messages = MessageRepository(db, self.workspace_id)
            if data.session_id is None:
                chat_session = sessions.add(
                    ChatSession(
                        id=uuid.uuid4(),
                        project_id=project.id,
                        title=title_from_message(data.message),
                        message_count=2,
                        created_at=now,
                        last_activity_at=now,
                    )
                )
                await db.flush()
                history: list[ChatMessage] = []
                last_seq = 2
            else:
                found = await sessions.get(data.session_id)
                if found is None or found.project_id != project.id:
                    raise session_not_found()
                chat_session = found
                history = await messages.history_window(chat_session.id, project.history_window)
                last_seq = await sessions.reserve_seqs(chat_session.id, 2, now)
            system_prompts = await PromptRepository(db, self.workspace_id).active_contents(
                project.id
            )

            provider, setup_error = self._resolve_provider(project.provider)
            provider_name = provider.name if provider else (project.provider or "")
            model = self.registry.model_for(provider, project.model) if provider else project.model
            request = CompletionRequest(
                model=model or "",
                messages=(
                    *(LLMMessage("system", p) for p in system_prompts or [DEFAULT_SYSTEM_PROMPT]),
                    *(LLMMessage(m.role, m.content) for m in history),  # type: ignore[arg-type]
                    LLMMessage("user", data.message),
                ),
                temperature=(
                    project.temperature
                    if project.temperature is not None
                    else self.settings.LLM_TEMPERATURE
                ),
                max_tokens=project.max_tokens or self.settings.LLM_MAX_TOKENS,
            )
            user_message = messages.add(
                ChatMessage(
                    id=uuid.uuid4(),
                    chat_session_id=chat_session.id,
                    seq=last_seq - 1,
                    role=MessageRole.USER,
                    content=data.message,
                    status=MessageStatus.COMPLETE,
                    created_at=now,
                    completed_at=now,
                )
            )
            assistant_message = messages.add(
                ChatMessage(
                    id=uuid.uuid4(),
                    chat_session_id=chat_session.id,
                    seq=last_seq,
                    role=MessageRole.ASSISTANT,
                    content="",
                    status=MessageStatus.PENDING,
                    provider=provider_name or None,
                    model=model,
                    created_at=now,
                )
            )
        return _PreparedTurn(
            session_id=chat_session.id,
            user_message=user_message,
            assistant_message=assistant_message,
            provider=provider,
            request=request,
            setup_error=setup_error,
        )

    def _resolve_provider(self, name: str | None) -> tuple[LLMProvider | None, LLMError | None]:
        try:
            return self.registry.get(name), None
        except LLMError as exc:
            return None, exc

    async def _record_reply(
        self, turn: _PreparedTurn, completion: Completion, latency_ms: int
    ) -> ChatMessage:
        usage = completion.usage
        return await self._finish(
            turn,
            content=completion.content,
            status=MessageStatus.COMPLETE,
            model=completion.model or turn.request.model,
            finish_reason=completion.finish_reason,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            total_tokens=usage.total_tokens if usage else None,
            latency_ms=latency_ms,
        )

    async def _record_failure(
        self, turn: _PreparedTurn, exc: LLMError | None, latency_ms: int
    ) -> ChatMessage:
        code, message = (
            (classify(exc)[1], exc.message)
            if exc
            else ("internal_error", "The reply could not be generated.")
        )
        return await self._finish(
            turn,
            status=MessageStatus.FAILED,
            error_code=code,
            error_message=message,
            latency_ms=latency_ms,
        )

    async def _finish(self, turn: _PreparedTurn, **values: object) -> ChatMessage:
        now = datetime.now(UTC)
        async with self.maker() as db, db.begin():
            message = await MessageRepository(db, self.workspace_id).get(turn.assistant_message.id)
            if message is None:  # the session was deleted while the LLM was answering
                for key, value in values.items():
                    setattr(turn.assistant_message, key, value)
                return turn.assistant_message
            for key, value in values.items():
                setattr(message, key, value)
            message.completed_at = now
            await SessionRepository(db, self.workspace_id).touch(turn.session_id, now)
        return message


def _elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def _turn_details(turn: ChatTurn) -> dict[str, str]:
    return {
        "session_id": str(turn.session_id),
        "message_id": str(turn.user_message.id),
        "assistant_message_id": str(turn.assistant_message.id),
    }
