"""A chat turn: store the message, call the LLM with no transaction open, store the reply."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sse_starlette import ServerSentEvent

from app.auth.dependencies import Principal
from app.chat.errors import upstream_error
from app.chat.events import include_content, message_created, session_created
from app.chat.limits import admit_turn
from app.chat.planning import ReplyPlan, plan_llm_reply, plan_without_llm
from app.chat.repository import EVERYONE, Audience, MessageRepository, SessionRepository
from app.chat.schemas import ChatRequest
from app.chat.streaming import (
    CANCELLED,
    DELETED,
    END_EVENT_ID,
    INTERRUPTED,
    Generation,
    GenerationRegistry,
    follow_stored,
    session_event,
)
from app.chat.templates import Context
from app.core.config import Settings
from app.core.driver import transaction
from app.core.errors import (
    ConflictError,
    InternalError,
    NotFoundError,
    UpstreamError,
    ValidationFailedError,
    check_project_reach,
    field_error,
    project_not_found,
)
from app.core.ratelimit import RateLimits, Rule
from app.events.recorder import wake_relay
from app.intents.matcher import IntentRule
from app.knowledge import grounding
from app.llm.registry import ProviderRegistry
from app.llm.resilience import CallReport, report_headers
from app.llm.types import LLMMessage
from app.models import ChatMessage, ChatSession, MessageRole, MessageStatus, Project
from app.projects.config import ProjectConfig, ProjectConfigs

TITLE_MAX_CHARS = 80
CANCEL_WAIT_SECONDS = 5.0


@dataclass
class ChatTurn:
    session_id: uuid.UUID
    user_message: ChatMessage
    assistant_message: ChatMessage
    intent: IntentRule | None = None  # the intent whose canned reply answers
    fallback_reply: str | None = None  # the project's, sent if the LLM fails
    fallback: bool = False  # the LLM failed and `fallback_reply` is the answer
    report: CallReport | None = None  # the LLM call's attempts and fallback, once made


@dataclass
class _PreparedTurn(ChatTurn):
    plan: ReplyPlan | None = None
    budgets: list[Rule] = field(default_factory=list)  # token budgets the reply is charged to
    project_id: uuid.UUID | None = None
    events_include_content: bool = False


def session_not_found() -> NotFoundError:
    return NotFoundError("Chat session not found.", code="session_not_found")


def audience_of(principal: Principal) -> Audience:
    """All the workspace's sessions for a user; for an API key, its project's sessions of the
    end user it acts for."""
    if principal.is_api_key:
        return Audience(principal.project_id, per_end_user=True, end_user_id=principal.end_user_id)
    return EVERYONE


def message_not_found() -> NotFoundError:
    return NotFoundError("Message not found.", code="message_not_found")


def check_message(settings: Settings, field: str, message: str) -> None:
    """422 naming `field` unless `message` has text and at most MAX_MESSAGE_CHARS characters."""
    limit = settings.MAX_MESSAGE_CHARS
    if not message.strip():
        raise field_error(field, "must not be empty or only whitespace")
    if len(message) > limit:
        raise field_error(field, f"must be at most {limit} characters (got {len(message)})")


def title_from_message(message: str) -> str:
    """A session title from its first message: first line, whitespace collapsed, cut at a word."""
    text = re.sub(r"\s+", " ", message.strip().splitlines()[0] if message.strip() else "").strip()
    if len(text) <= TITLE_MAX_CHARS:
        return text
    cut = text[: TITLE_MAX_CHARS - 1].rsplit(" ", 1)[0] or text[: TITLE_MAX_CHARS - 1]
    return cut.rstrip(" ,.;:") + "…"


class ChatService:
    """Runs chat turns. Each turn stores the user's message and a pending reply in one short
    transaction, then a background `Generation` asks the LLM (no transaction open) and stores
    the reply; the caller waits for it (JSON) or follows it (SSE)."""

    def __init__(
        self,
        maker: async_sessionmaker[AsyncSession],
        principal: Principal,
        registry: ProviderRegistry,
        settings: Settings,
        generations: GenerationRegistry,
        limits: RateLimits,
        configs: ProjectConfigs,
    ) -> None:
        self.maker = maker
        self.principal = principal
        self.workspace_id = principal.workspace_id
        self.audience = audience_of(principal)
        self.registry = registry
        self.settings = settings
        self.generations = generations
        self.limits = limits
        self.configs = configs

    # -- turns -----------------------------------------------------------------------------

    async def send_message(self, data: ChatRequest) -> ChatTurn:
        """Store the user's message, ask the LLM, store and return the reply.

        The user's message is committed before the LLM is called, so it survives any failure;
        a failed reply is stored as `failed` and reported as an `UpstreamError`.
        """
        turn, generation = await self.start_turn(data, stream=False)
        return await self.wait_for_reply(turn, generation)

    def for_end_user(self, end_user_id: str | None) -> ChatService:
        """The same service acting for the end user a request body names."""
        principal = self.principal.with_end_user(end_user_id)
        if principal is self.principal:
            return self
        return ChatService(
            self.maker,
            principal,
            self.registry,
            self.settings,
            self.generations,
            self.limits,
            self.configs,
        )

    async def start_turn(self, data: ChatRequest, *, stream: bool) -> tuple[ChatTurn, Generation]:
        """Store the message and a pending reply, and start generating it in the background."""
        check_message(self.settings, "message", data.message)
        prepared = await self._prepare(data)
        return prepared, self._start(prepared, stream=stream)

    async def regenerate(
        self, session_id: uuid.UUID, *, stream: bool
    ) -> tuple[ChatTurn, Generation]:
        """Answer the session's last message again; the previous reply is kept, `superseded`."""
        prepared = await self._prepare_regenerate(session_id)
        return prepared, self._start(prepared, stream=stream)

    async def wait_for_reply(self, turn: ChatTurn, generation: Generation) -> ChatTurn:
        """Wait for a started reply; a failed one is raised as the matching HTTP error."""
        final = await generation.wait()
        turn.assistant_message = generation.message
        turn.report = generation.report
        if final is None or final.error is None:
            return turn
        details = [_turn_details(turn)]
        if generation.error is not None:
            if turn.fallback_reply is not None:  # the failure stays recorded on the message
                turn.fallback = True
                return turn
            error = upstream_error(generation.error, details=details)
            error.headers |= report_headers(turn.report)
            raise error
        code, message = final.error.code, final.error.message
        if code == CANCELLED[0]:
            raise ConflictError(message, code=code, details=details)
        if code == DELETED[0]:
            raise session_not_found()
        if code == INTERRUPTED[0]:
            raise UpstreamError(message, status_code=503, code=code, details=details)
        raise InternalError(message, details=details)

    def _start(self, prepared: _PreparedTurn, *, stream: bool) -> Generation:
        plan = prepared.plan
        assert plan is not None  # noqa: S101 - every prepared turn has a plan
        return self.generations.start(
            Generation(
                maker=self.maker,
                settings=self.settings,
                workspace_id=self.workspace_id,
                message=prepared.assistant_message,
                provider=plan.provider,
                request=plan.request,
                setup_error=plan.setup_error,
                canned=plan.canned,
                fallback_reply=prepared.fallback_reply,
                on_tokens=partial(self.limits.charge, prepared.budgets),
                stream=stream,
                project_id=prepared.project_id,
                events_include_content=prepared.events_include_content,
            )
        )

    async def _prepare(self, data: ChatRequest) -> _PreparedTurn:
        """Store the message and a pending reply. Turns of one session take turns: while
        another turn's reply is being generated, this one waits (polling, no transaction
        held) up to SESSION_TURN_WAIT_SECONDS, then answers 409 `session_busy`."""
        check_project_reach(self.audience.project_id, data.project_id)
        reply_id = uuid.uuid4()
        question = grounding.Question(data.message)
        if self.registry.embedder is not None:  # embedded before the turn's transaction
            cached = self.configs.peek(data.project_id)
            if cached is not None:
                question = await grounding.embed(
                    cached.grounding, self.registry.embedder, data.message
                )
        deadline = time.monotonic() + self.settings.SESSION_TURN_WAIT_SECONDS
        pause = 0.02
        while True:
            prepared = await self._prepare_once(data, reply_id, question)
            if prepared is not None:
                wake_relay(self.maker)  # its events are committed
                return prepared
            if time.monotonic() >= deadline:
                raise ConflictError(
                    "Another message to this session is still being answered; try again when "
                    "it is done.",
                    code="session_busy",
                    headers={"Retry-After": "1"},
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, self.settings.STREAM_POLL_SECONDS)

    async def _prepare_once(
        self, data: ChatRequest, reply_id: uuid.UUID, question: grounding.Question
    ) -> _PreparedTurn | None:
        """One try at storing the turn: None if another turn holds the session.

        In the steady state this is BEGIN, the session claim (which also reserves the message
        positions and reads the project's revision), the history, one INSERT of both
        messages, COMMIT: the project's settings come from the in-memory cache."""
        now = datetime.now(UTC)
        async with transaction(self.maker) as db:
            sessions = SessionRepository(db, self.workspace_id, self.audience)
            if data.session_id is None:
                config = await self.configs.current(db, self.workspace_id, data.project_id)
                if config is None:
                    raise project_not_found()
                project = config.project
                admitted = await admit_turn(self.limits, self.settings, self.principal, project)
                chat_session = sessions.add(
                    ChatSession(
                        id=uuid.uuid4(),
                        project_id=project.id,
                        end_user_id=self.principal.end_user_id,
                        title=title_from_message(data.message),
                        message_count=2,
                        event_seq=3,  # session.created, message.created, the reply's
                        created_at=now,
                        last_activity_at=now,
                        turn_owner=reply_id,
                        turn_until=now + self._turn_lease(project),
                    )
                )
                await db.flush()  # the session row first: the messages refer to it
                session_id, history, last_seq, last_event_seq = chat_session.id, [], 2, 3
                events = [session_created(chat_session, include_content=include_content(config))]
            else:
                session_id = data.session_id
                config, last_seq, last_event_seq = await self._claim(
                    db, sessions, data, reply_id, now
                )
                events = []
                if config is None:
                    return None
                project = config.project
                admitted = await admit_turn(self.limits, self.settings, self.principal, project)
                history = await MessageRepository(db, self.workspace_id).history_window(
                    session_id, project.history_window
                )
            user_message = ChatMessage(
                id=uuid.uuid4(),
                chat_session_id=session_id,
                seq=last_seq - 1,
                role=MessageRole.USER,
                content=data.message,
                status=MessageStatus.COMPLETE,
                created_at=now,
                completed_at=now,
                event_seq=last_event_seq - 1,
            )
            prepared = await self._pending_reply(
                db,
                config,
                user_message,
                history,
                seq=last_seq,
                event_seq=last_event_seq,
                now=now,
                context=data.context,
                reply_id=reply_id,
                question=question,
            )
            events.append(
                message_created(
                    self.workspace_id,
                    project.id,
                    user_message,
                    end_user_id=self.principal.end_user_id,
                    include_content=include_content(config),
                )
            )
            await MessageRepository(db, self.workspace_id).insert(
                user_message, prepared.assistant_message, events=tuple(events)
            )
            prepared.budgets = admitted.tokens
            return prepared

    async def _claim(
        self,
        db: AsyncSession,
        sessions: SessionRepository,
        data: ChatRequest,
        reply_id: uuid.UUID,
        now: datetime,
    ) -> tuple[ProjectConfig | None, int, int]:
        """Claim the session for this turn: (the project's config, the last message position
        and the last event sequence number reserved), or (None, 0, 0) when another turn holds
        it. 404 for an unknown session or one of another project (or end user)."""
        assert data.session_id is not None  # noqa: S101 - only turns of existing sessions
        # The lease lasts the turn's deadline (the project's, when the cache knows it) and a
        # margin; a project whose deadline grew meanwhile extends it below.
        known = self.configs.peek(data.project_id)
        lease = self._turn_lease(known.project if known else None)
        claim = await sessions.claim_turn(
            data.session_id, data.project_id, reply_id, now + lease, now, reserve=2
        )
        if claim is None:  # busy, unless the session is not found (a session implies its project)
            found = await sessions.get(data.session_id)
            if found is None or found.project_id != data.project_id:
                if await self.configs.current(db, self.workspace_id, data.project_id) is None:
                    raise project_not_found()
                raise session_not_found()
            return None, 0, 0
        config = await self.configs.get(db, self.workspace_id, data.project_id, claim.revision)
        if config is None:
            raise project_not_found()
        if (needed := self._turn_lease(config.project)) > lease:
            await sessions.extend_turn(data.session_id, reply_id, now + needed)
        return config, claim.last_seq, claim.last_event_seq

    def _turn_lease(self, project: Project | None) -> timedelta:
        """How long a turn may hold its session: its LLM deadline and a margin (a turn whose
        process died lets go after this)."""
        timeout = project.llm_timeout if project is not None else None
        return timedelta(seconds=max(self.settings.LLM_TOTAL_TIMEOUT, timeout or 0) + 30)

    async def _prepare_regenerate(self, session_id: uuid.UUID) -> _PreparedTurn:
        now = datetime.now(UTC)
        async with self.maker() as db, db.begin():
            sessions = SessionRepository(db, self.workspace_id, self.audience)
            messages = MessageRepository(db, self.workspace_id)
            chat_session = await sessions.get(session_id)
            if chat_session is None:
                raise session_not_found()
            config = await self.configs.current(db, self.workspace_id, chat_session.project_id)
            if config is None:
                raise project_not_found()
            project = config.project
            admitted = await admit_turn(self.limits, self.settings, self.principal, project)
            previous = await messages.last_of_role(session_id, MessageRole.ASSISTANT)
            user_message = await messages.last_of_role(session_id, MessageRole.USER)
            if previous is None or user_message is None or previous.seq < user_message.seq:
                raise ConflictError(
                    "The session has no reply to regenerate.", code="nothing_to_regenerate"
                )
            if not await messages.supersede(previous.id):
                raise ConflictError(
                    "The last reply is still being generated (or is being regenerated); wait "
                    "for it to finish or cancel it first.",
                    code="reply_in_progress",
                )
            history = await messages.history_window(
                session_id, project.history_window, before_seq=user_message.seq
            )
            seq, event_seq = await sessions.reserve_seqs(session_id, 1, now)
            prepared = await self._pending_reply(
                db, config, user_message, history, seq=seq, event_seq=event_seq, now=now
            )
            await messages.insert(prepared.assistant_message)
            prepared.budgets = admitted.tokens
            return prepared

    async def _pending_reply(
        self,
        db: AsyncSession,
        config: ProjectConfig,
        user_message: ChatMessage,
        history: list[tuple[str, str]],
        *,
        seq: int,
        event_seq: int,
        now: datetime,
        context: Context | None = None,
        reply_id: uuid.UUID | None = None,
        question: grounding.Question | None = None,
    ) -> _PreparedTurn:
        """Build the LLM request for `user_message` (or pick the intent that answers it) and
        the pending reply to it (for the caller to INSERT). A project grounded in its
        knowledge base gets its sources here: one statement, only when no intent answers."""
        message = user_message.content
        plan = plan_without_llm(config, self.settings, message=message, context=context)
        sources: list[grounding.Source] = []
        if plan is None:
            if config.grounding is not None:
                sources = await grounding.retrieve(
                    db,
                    self.workspace_id,
                    config.project.id,
                    question or grounding.Question(message),
                    config.grounding,
                    self.registry.embedder,
                )
            plan = plan_llm_reply(
                config,
                self.registry,
                self.settings,
                history=[LLMMessage(role, content) for role, content in history],  # type: ignore[arg-type]
                message=message,
                context=context,
                extra_system=grounding.system_messages((), sources),
            )
        assistant_message = ChatMessage(
            id=reply_id or uuid.uuid4(),
            chat_session_id=user_message.chat_session_id,
            seq=seq,
            role=MessageRole.ASSISTANT,
            content="",
            status=MessageStatus.PENDING,
            provider=plan.provider_name,
            model=plan.model,
            intent=plan.intent.name if plan.intent else None,
            created_at=now,
            heartbeat_at=now,
            event_seq=event_seq,
            citations=grounding.citations(sources),
        )
        return _PreparedTurn(
            session_id=user_message.chat_session_id,
            user_message=user_message,
            assistant_message=assistant_message,
            intent=plan.intent,
            fallback_reply=config.project.fallback_reply,
            plan=plan,
            project_id=config.project.id,
            events_include_content=include_content(config),
        )

    # -- replies in progress ---------------------------------------------------------------

    async def get_reply(
        self, session_id: uuid.UUID, message_id: uuid.UUID
    ) -> tuple[ChatMessage, ChatMessage | None]:
        """A reply of the session and the user message it answers."""
        async with self.maker() as db:
            sessions = SessionRepository(db, self.workspace_id, self.audience)
            messages = MessageRepository(db, self.workspace_id)
            if await sessions.get(session_id) is None:
                raise session_not_found()
            message = await messages.in_session(session_id, message_id)
            if message is None:
                raise message_not_found()
            if message.role != MessageRole.ASSISTANT:
                raise ConflictError(
                    "Only a reply (an assistant message) can be streamed or cancelled.",
                    code="not_a_reply",
                )
            question = await messages.last_of_role(
                session_id, MessageRole.USER, before_seq=message.seq
            )
            return message, question

    async def follow(
        self, session_id: uuid.UUID, message_id: uuid.UUID, last_event_id: str | None
    ) -> AsyncIterator[ServerSentEvent] | None:
        """The reply's events after `last_event_id` (all of them without one), live until it
        ends. None when the client already has the terminal event."""
        offset = _parse_last_event_id(last_event_id)
        reply, question = await self.get_reply(session_id, message_id)
        if offset is None:
            return None

        async def events() -> AsyncIterator[ServerSentEvent]:
            if last_event_id is None and question is not None:
                yield session_event(session_id, question.id, message_id, reply.citations)
            local = self.generations.get(message_id)
            source = (
                local.follow(offset)
                if local is not None
                else follow_stored(self.maker, self.settings, self.workspace_id, message_id, offset)
            )
            async for event in source:
                yield event

        return events()

    async def cancel(self, session_id: uuid.UUID, message_id: uuid.UUID) -> ChatMessage:
        """Ask whichever process generates the reply to stop, and wait briefly for it."""
        message, _ = await self.get_reply(session_id, message_id)
        if message.status != MessageStatus.PENDING:
            return message
        async with self.maker() as db, db.begin():
            await MessageRepository(db, self.workspace_id).request_cancel(message_id)
        local = self.generations.get(message_id)
        if local is not None:
            local.stop(CANCELLED)
            await local.wait(at_most=CANCEL_WAIT_SECONDS)
        deadline = time.monotonic() + CANCEL_WAIT_SECONDS + 4 * self.settings.STREAM_FLUSH_SECONDS
        while True:
            async with self.maker() as db:
                current = await MessageRepository(db, self.workspace_id).get(message_id)
            if current is None:
                raise message_not_found()
            if current.status != MessageStatus.PENDING or time.monotonic() > deadline:
                return current
            await asyncio.sleep(self.settings.STREAM_POLL_SECONDS)


def _parse_last_event_id(value: str | None) -> int | None:
    """The character offset to resume from; None when the client has seen the end."""
    if value is None or not value.strip():
        return 0
    value = value.strip()
    if value == END_EVENT_ID:
        return None
    if value.isdigit() and len(value) <= 9:
        return int(value)
    raise ValidationFailedError(
        "Last-Event-ID must be an event id from this stream (a number, or 'end').",
        code="invalid_last_event_id",
    )


def _turn_details(turn: ChatTurn) -> dict[str, str]:
    return {
        "session_id": str(turn.session_id),
        "message_id": str(turn.user_message.id),
        "assistant_message_id": str(turn.assistant_message.id),
    }
