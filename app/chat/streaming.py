"""Replies generated in the background, persisted as they grow, and followed by any client.

A `Generation` owns one pending assistant message. It runs as its own task, so a client that
disconnects does not stop it; it writes the text to the database every `STREAM_FLUSH_SECONDS`
(with a heartbeat), and on each write it checks whether someone asked to cancel it. Followers in
the same process read it from memory; followers in another process poll the stored message.
Either way they see the same events:

    session (id "0")  ->  delta (id = characters so far) ...  ->  done | error (id "end")
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Integer, bindparam, case, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sse_starlette import ServerSentEvent

from app.chat.errors import classify
from app.chat.events import reply_finished
from app.chat.repository import MessageRepository, SessionRepository, event_values, turn_params
from app.chat.schemas import MessageRead
from app.core.config import Settings
from app.core.db import autocommit_session, engine_of
from app.core.driver import Prebuilt, run
from app.core.metrics import Metrics
from app.events.recorder import mark_recorded, wake_relay
from app.llm.base import LLMError, LLMProvider
from app.llm.resilience import CallReport
from app.llm.types import CompletionRequest, Usage
from app.models import ChatMessage, ChatSession, Event, MessageStatus, Project

logger = logging.getLogger("app.chat.streaming")

END_EVENT_ID = "end"
HEARTBEAT_EVERY_SECONDS = 5.0

# Why a generation stopped before the upstream finished: (error code, message).
CANCELLED = ("cancelled", "The reply was cancelled.")
INTERRUPTED = (
    "generation_interrupted",
    "The server generating the reply stopped before it finished.",
)
DELETED = ("reply_deleted", "The session was deleted while the reply was being generated.")
INTERNAL = ("internal_error", "The reply could not be generated.")


def session_event(
    session_id: uuid.UUID,
    message_id: uuid.UUID,
    assistant_message_id: uuid.UUID,
    citations: list[dict[str, Any]] | None = None,
) -> ServerSentEvent:
    """The stream's first event; `citations` are the reply's sources, known before its text."""
    data = {
        "session_id": str(session_id),
        "message_id": str(message_id),
        "assistant_message_id": str(assistant_message_id),
        "citations": citations or [],
    }
    return ServerSentEvent(data=json.dumps(data), event="session", id="0")


def delta_event(text: str, offset: int) -> ServerSentEvent:
    """A text fragment; its id is the reply's length in characters once it is applied."""
    return ServerSentEvent(data=json.dumps({"content": text}), event="delta", id=str(offset))


def terminal_event(message: MessageRead, fallback_reply: str | None = None) -> ServerSentEvent:
    """`done` for a finished reply, `error` (in the error shape, plus the message) otherwise.
    An LLM failure in a project with a fallback reply carries it as `fallback_reply`."""
    stored = message.model_dump(mode="json")
    if message.error is None:
        data: dict[str, Any] = {
            "message": stored,
            "finish_reason": message.finish_reason,
            "usage": stored["usage"],
            "latency_ms": message.latency_ms,
            "citations": stored["citations"],
        }
        return ServerSentEvent(data=json.dumps(data), event="done", id=END_EVENT_ID)
    error = {"code": message.error.code, "message": message.error.message}
    data = {"error": error, "message": stored}
    if fallback_reply is not None:
        data["fallback_reply"] = fallback_reply
    return ServerSentEvent(data=json.dumps(data), event="error", id=END_EVENT_ID)


def ping_event() -> ServerSentEvent:
    return ServerSentEvent(comment="ping")


def llm_call_fields(
    *,
    outcome: str,
    provider: str | None,
    model: str | None,
    attempts: int,
    fallback: bool,
    usage: Usage | None,
    latency_ms: int,
) -> dict[str, Any]:
    """The structured fields of the one log line per LLM call (a reply)."""
    return {
        "event": "llm_call",
        "outcome": outcome,
        "provider": provider,
        "model": model,
        "attempts": attempts,
        "fallback": fallback,
        "prompt_tokens": usage.prompt_tokens if usage else None,
        "completion_tokens": usage.completion_tokens if usage else None,
        "total_tokens": usage.total_tokens if usage else None,
        "latency_ms": latency_ms,
    }


class Generation:
    """One reply being generated: by streaming from the upstream, or in one `complete` call."""

    def __init__(
        self,
        *,
        maker: async_sessionmaker[AsyncSession],
        settings: Settings,
        workspace_id: uuid.UUID,
        message: ChatMessage,
        provider: LLMProvider | None,
        request: CompletionRequest,
        setup_error: LLMError | None = None,
        canned: str | None = None,
        fallback_reply: str | None = None,
        on_tokens: Callable[[int], Awaitable[None]] | None = None,
        stream: bool = True,
        project_id: uuid.UUID | None = None,
        events_include_content: bool = False,
    ) -> None:
        self.maker = maker
        self.project_id = project_id  # for the reply's event (none without it)
        self.events_include_content = events_include_content
        self.settings = settings
        self.workspace_id = workspace_id
        self.message = message  # the pending row as created; replaced by the stored final state
        self.provider = provider
        self.request = request
        self.setup_error = setup_error
        self.canned = canned  # an intent's reply: stored as is, no LLM call
        self.fallback_reply = fallback_reply  # offered to followers if the LLM fails
        self.on_tokens = on_tokens  # charges the tokens used to the caller's budgets
        self.stream = stream
        self.text = ""
        self.error: LLMError | None = None  # the upstream failure, when that is how it ended
        self.final: MessageRead | None = None
        self.task: asyncio.Task[None] | None = None
        self._stop_reason: tuple[str, str] | None = None
        self._changed = asyncio.Event()

    @property
    def message_id(self) -> uuid.UUID:
        return self.message.id

    @property
    def report(self) -> CallReport | None:
        """How the LLM call went (attempts, fallback), once it has been made."""
        report = getattr(self.provider, "report", None)
        return report if isinstance(report, CallReport) else None

    # -- control ---------------------------------------------------------------------------

    def stop(self, reason: tuple[str, str]) -> None:
        """Stop generating (cancel, shutdown, deleted session); what arrived is kept."""
        if self.task is not None and not self.task.done() and self._stop_reason is None:
            self._stop_reason = reason
            self.task.cancel()

    async def wait(self, at_most: float | None = None) -> MessageRead | None:
        """The final message once stored (None if `at_most` seconds pass first)."""
        if self.task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.task), at_most)
        return self.final

    # -- following -------------------------------------------------------------------------

    async def follow(self, offset: int = 0) -> AsyncIterator[ServerSentEvent]:
        """Deltas from character `offset` on, live, then the terminal event."""
        while True:
            changed = self._changed
            if len(self.text) > offset:
                text, offset = self.text[offset:], len(self.text)
                yield delta_event(text, offset)
                continue
            if self.final is not None:
                if len(self.final.content) > offset:
                    yield delta_event(self.final.content[offset:], len(self.final.content))
                fallback = self.fallback_reply if self.error is not None else None
                yield terminal_event(self.final, fallback_reply=fallback)
                return
            await changed.wait()

    def abandon(self) -> None:
        """The task ended without storing a final state (cancelled before it ever ran): end
        the followers' streams. The stored row stays pending until found stale."""
        self.message.error_code, self.message.error_message = INTERRUPTED
        self.message.status = MessageStatus.FAILED
        self.final = MessageRead.from_model(self.message)
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        started = time.perf_counter()
        flusher = asyncio.create_task(self._flush_loop())
        finish_reason: str | None = None
        usage: Usage | None = None
        model: str | None = None
        failure: tuple[str, str] | None = None
        try:
            if self.setup_error is not None:
                raise self.setup_error
            if self.canned is not None:
                self.text, finish_reason = self.canned, "stop"
                self._notify()
            elif self.stream:
                assert self.provider is not None  # noqa: S101 - set unless setup_error is
                async with contextlib.aclosing(self.provider.stream(self.request)) as chunks:
                    async for chunk in chunks:
                        if chunk.delta:
                            self.text += chunk.delta
                            self._notify()
                        finish_reason = chunk.finish_reason or finish_reason
                        usage = chunk.usage or usage
                        model = chunk.model or model
            else:
                assert self.provider is not None  # noqa: S101 - set unless setup_error is
                completion = await self.provider.complete(self.request)
                self.text = completion.content
                finish_reason, usage, model = (
                    completion.finish_reason,
                    completion.usage,
                    completion.model,
                )
        except LLMError as exc:
            self.error = exc
            failure = (classify(exc)[1], exc.message)
        except asyncio.CancelledError:
            failure = self._stop_reason or INTERRUPTED
        except Exception:
            logger.exception("reply generation failed message_id=%s", self.message_id)
            failure = INTERNAL
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
        latency_ms = int((time.perf_counter() - started) * 1000)
        values: dict[str, Any] = {
            "content": self.text,
            "latency_ms": latency_ms,
            "model": model or self.request.model or None,
            "finish_reason": finish_reason,
        }
        report = self.report
        if report is not None:  # who answered, after retries and fallbacks
            values["attempts"] = report.attempts
            if report.provider is not None:
                values["provider"] = report.provider
                values["model"] = model or report.model
        if usage is not None:
            values |= {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
            }
        if failure is None:
            values["status"] = MessageStatus.COMPLETE
        else:
            status = MessageStatus.INCOMPLETE if self.text else MessageStatus.FAILED
            values |= {"status": status, "error_code": failure[0], "error_message": failure[1]}
        # Shielded: a second cancellation (shutdown) must not lose the final state.
        await asyncio.shield(self._store_final(values, deleted=failure == DELETED))
        self._notify()
        if usage is not None and self.on_tokens is not None:
            try:
                await self.on_tokens(usage.total_tokens)
            except Exception:
                logger.exception("could not charge tokens message_id=%s", self.message_id)
        report = self.report
        logger.info(
            "reply finished message_id=%s status=%s code=%s latency_ms=%d chars=%d",
            self.message_id,
            values["status"],
            values.get("error_code"),
            latency_ms,
            len(self.text),
            extra=llm_call_fields(
                outcome=values.get("error_code") or "success",
                provider=values.get("provider") or (self.provider.name if self.provider else None),
                model=values.get("model"),
                attempts=report.attempts if report else 0,
                fallback=report.fallback if report else False,
                usage=usage,
                latency_ms=latency_ms,
            )
            | {"message_id": str(self.message_id), "status": values["status"]},
        )

    async def _store_final(self, values: dict[str, Any], *, deleted: bool) -> None:
        now = datetime.now(UTC)
        stored: ChatMessage | None = None
        if not deleted:
            event = None
            if self.project_id is not None:
                event = reply_finished(
                    self.workspace_id,
                    self.project_id,
                    self.message,
                    values,
                    include_content=self.events_include_content,
                )
            for pause in STORE_RETRY_PAUSES:  # the text is only here: a blip must not lose it
                try:
                    stored = await finish_pending_reply(
                        self.maker, self.workspace_id, self.message, values, now, event=event
                    )
                    break
                except SQLAlchemyError:
                    if pause is None:
                        logger.exception("could not store the reply message_id=%s", self.message_id)
                        break
                    logger.warning(
                        "storing the reply failed, retrying message_id=%s", self.message_id
                    )
                    await asyncio.sleep(pause)
        if stored is None:  # deleted meanwhile (or the write failed): report what we have
            for key, value in values.items():
                setattr(self.message, key, value)
            self.message.completed_at = now
            if deleted:
                self.message.error_code, self.message.error_message = DELETED
            stored = self.message
        self.message = stored
        self.final = MessageRead.from_model(stored)

    async def _flush_loop(self) -> None:
        """Persist the text as it grows, keep a heartbeat, and notice cancel requests."""
        flushed = 0
        beat = time.monotonic()
        while True:
            await asyncio.sleep(self.settings.STREAM_FLUSH_SECONDS)
            now = datetime.now(UTC)
            length = len(self.text)
            write = length != flushed or time.monotonic() - beat >= HEARTBEAT_EVERY_SECONDS
            try:
                # Shielded: cancelling this loop (the reply is done) must not interrupt a
                # statement mid-way. On SQLite an UPDATE ... RETURNING whose rows were never
                # fetched keeps the write lock, and the reply's final store then waited out the
                # whole busy timeout (30 s) behind it.
                row = await asyncio.shield(self._flush_once(write, length, flushed, now))
            except SQLAlchemyError:
                logger.warning("could not flush the reply message_id=%s", self.message_id)
                continue
            if write:
                flushed, beat = length, time.monotonic()
            if row is None:  # deleted, or no longer pending
                self.stop(DELETED)
                return
            if row[0] is not None:
                self.stop(CANCELLED)
                return

    async def _flush_once(self, write: bool, length: int, flushed: int, now: datetime) -> Any:
        """One statement, in autocommit (no BEGIN/COMMIT round trips around it): store the text
        so far and the heartbeat, or only read whether a cancel was asked for. Its row, or None
        when the reply is no longer pending."""
        async with autocommit_session(self.maker) as db:
            connection = await db.connection()
            where = (
                ChatMessage.workspace_id == self.workspace_id,
                ChatMessage.id == self.message_id,
                ChatMessage.status == MessageStatus.PENDING,
            )
            if write:
                values: dict[str, Any] = {"heartbeat_at": now}
                if length != flushed:
                    values["content"] = self.text[:length]
                statement: Any = (
                    update(ChatMessage)
                    .where(*where)
                    .values(**values)
                    .returning(ChatMessage.cancel_requested_at)
                )
            else:
                statement = select(ChatMessage.cancel_requested_at).where(*where)
            return (await connection.execute(statement)).first()


async def finish_pending_reply(
    maker: async_sessionmaker[AsyncSession],
    workspace_id: uuid.UUID,
    message: ChatMessage,
    values: dict[str, Any],
    now: datetime,
    *,
    event: dict[str, Any] | None = None,
) -> ChatMessage | None:
    """Store a reply's final state if it is still pending, add its tokens to the session, let
    go of the session if this reply's turn holds it, and record `event` (its
    `reply.completed` / `reply.failed`) if it was stored.

    Returns the stored message (as it now is), or None when it no longer exists. On Postgres
    this is one prebuilt statement (data-modifying CTEs) outside any transaction block: one
    round trip.
    """
    tokens = {key: values.get(key) or 0 for key in SESSION_TOKEN_COLUMNS}
    engine = engine_of(maker)
    if engine.dialect.name == "postgresql":  # a connection, no ORM session: this is per turn
        params = {f"v_{key}": values.get(key, getattr(message, key)) for key in FINAL_COLUMNS}
        params |= {f"add_{key}": value for key, value in tokens.items()}
        params |= {"b_workspace_id": workspace_id, "message_id": message.id, "now": now}
        if event is not None:
            params |= turn_params([], [event])
        async with engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            rows = await run(connection, _finish_statement(event is not None), params)
        if rows:
            if event is not None:
                wake_relay(maker)
            return ChatMessage(**rows[0])
    else:
        async with maker() as db, db.begin():
            result = await db.execute(
                update(ChatMessage)
                .where(
                    ChatMessage.workspace_id == workspace_id,
                    ChatMessage.id == message.id,
                    ChatMessage.status == MessageStatus.PENDING,
                )
                .values(**values, completed_at=now, heartbeat_at=now)
                .returning(ChatMessage)
            )
            stored: ChatMessage | None = result.scalar_one_or_none()
            if stored is not None:
                await SessionRepository(db, workspace_id).touch(
                    message.chat_session_id, now, release=message.id, **tokens
                )
                if event is not None:
                    db.add(Event(**event))
                    mark_recorded(db)
        if stored is not None:
            return stored
    async with maker() as db:  # no longer pending (marked interrupted meanwhile), or deleted
        found: ChatMessage | None = await MessageRepository(db, workspace_id).get(message.id)
        return found


SESSION_TOKEN_COLUMNS = ("prompt_tokens", "completion_tokens", "total_tokens")
# Pauses between tries of a reply's final store (None: the last try).
STORE_RETRY_PAUSES = (0.2, 0.5, 1.0, 2.0, None)
# What a reply's final state sets (Generation.run's `values`; missing ones keep their value).
FINAL_COLUMNS = (
    "content",
    "latency_ms",
    "model",
    "provider",
    "finish_reason",
    "attempts",
    "status",
    "error_code",
    "error_message",
    *SESSION_TOKEN_COLUMNS,
)


@cache
def _finish_statement(with_event: bool) -> Prebuilt:
    """WITH finished AS (UPDATE the pending message ... RETURNING it)[, recorded AS (INSERT
    its event ... FROM finished)] UPDATE its session (the tokens, the activity, the lease)
    RETURNING the message: atomic, and built once. The event's parameters are `e0_<column>`
    (`turn_params`); it is inserted only if the message was still pending."""
    columns = ChatMessage.__table__.columns
    now = bindparam("now", type_=ChatMessage.completed_at.type)
    finished = (
        update(ChatMessage)
        .where(
            ChatMessage.workspace_id == bindparam("b_workspace_id"),
            ChatMessage.id == bindparam("message_id"),
            ChatMessage.status == MessageStatus.PENDING,
        )
        .values(
            {key: bindparam(f"v_{key}", type_=columns[key].type) for key in FINAL_COLUMNS}
            | {"completed_at": now, "heartbeat_at": now}
        )
        .returning(*columns)
        .cte("finished")
    )
    held = ChatSession.turn_owner == finished.c.id
    statement = (
        update(ChatSession)
        .where(ChatSession.id == finished.c.chat_session_id)
        .values(
            {
                key: getattr(ChatSession, key) + bindparam(f"add_{key}", type_=Integer())
                for key in SESSION_TOKEN_COLUMNS
            }
            | {
                "last_activity_at": now,
                "turn_owner": case((held, None), else_=ChatSession.turn_owner),
                "turn_until": case((held, None), else_=ChatSession.turn_until),
            }
        )
        .returning(*finished.c)
    )
    if with_event:
        values = event_values("e0_")
        recorded = insert(Event).from_select(
            list(values), select(*values.values()).select_from(finished)
        )
        statement = statement.add_cte(recorded.cte("recorded"))
    return Prebuilt(statement)


class GenerationRegistry:
    """The generations running in this process (the fast path for followers and cancels)."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._running: dict[uuid.UUID, Generation] = {}
        self.metrics = metrics

    def start(self, generation: Generation) -> Generation:
        message_id = generation.message_id
        self._running[message_id] = generation
        generation.task = asyncio.create_task(generation.run(), name=f"generation-{message_id}")
        generation.task.add_done_callback(lambda _: self._finished(generation))
        if self.metrics is not None:
            self.metrics.active_generations.inc()
        return generation

    def _finished(self, generation: Generation) -> None:
        self._running.pop(generation.message_id, None)
        if self.metrics is not None:
            self.metrics.active_generations.dec()
        if generation.final is None:
            generation.abandon()

    def get(self, message_id: uuid.UUID) -> Generation | None:
        return self._running.get(message_id)

    def __len__(self) -> int:
        return len(self._running)

    async def shutdown(self, grace_seconds: float) -> None:
        """Let running replies finish for `grace_seconds`, then stop and store the rest."""
        running = [g.task for g in self._running.values() if g.task is not None]
        if not running:
            return
        logger.info("waiting up to %ss for %d running replies", grace_seconds, len(running))
        if grace_seconds > 0:
            await asyncio.wait(running, timeout=grace_seconds)
        for generation in list(self._running.values()):
            generation.stop(INTERRUPTED)
        remaining = [task for task in running if not task.done()]
        if remaining:
            await asyncio.wait(remaining, timeout=10)


async def follow_stored(
    maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    workspace_id: uuid.UUID,
    message_id: uuid.UUID,
    offset: int,
) -> AsyncIterator[ServerSentEvent]:
    """Follow a reply generated elsewhere (another process) by polling its stored row.

    A pending reply whose heartbeat has stopped for `STREAM_STALE_SECONDS` is marked as
    interrupted (its process died), so a follower never waits forever.
    """
    while True:
        async with maker() as db:
            message = await MessageRepository(db, workspace_id).get(message_id)
        if message is None:
            code, text = DELETED
            yield ServerSentEvent(
                data=json.dumps({"error": {"code": code, "message": text}}),
                event="error",
                id=END_EVENT_ID,
            )
            return
        if len(message.content) > offset:
            yield delta_event(message.content[offset:], len(message.content))
            offset = len(message.content)
        if message.status != MessageStatus.PENDING:
            yield terminal_event(MessageRead.from_model(message))
            return
        if _is_stale(message, settings):
            await mark_interrupted(maker, workspace_id, message)
            continue
        await asyncio.sleep(settings.STREAM_POLL_SECONDS)


def _is_stale(message: ChatMessage, settings: Settings) -> bool:
    last_sign_of_life = message.heartbeat_at or message.created_at
    return datetime.now(UTC) - last_sign_of_life > timedelta(seconds=settings.STREAM_STALE_SECONDS)


async def interrupt_stale_replies(
    maker: async_sessionmaker[AsyncSession], settings: Settings, limit: int = 200
) -> int:
    """Mark pending replies whose process went silent as interrupted (a periodic job: a reply
    nobody follows must end too, with its `reply.failed`); how many."""
    cutoff = datetime.now(UTC) - timedelta(seconds=settings.STREAM_STALE_SECONDS)
    async with maker() as db:
        stale = (
            await db.execute(
                select(ChatMessage)
                .where(
                    ChatMessage.status == MessageStatus.PENDING,
                    func.coalesce(ChatMessage.heartbeat_at, ChatMessage.created_at) < cutoff,
                )
                .limit(limit)
            )
        ).scalars()
        found = list(stale)
    for message in found:
        await mark_interrupted(maker, message.workspace_id, message)
    return len(found)


async def mark_interrupted(
    maker: async_sessionmaker[AsyncSession], workspace_id: uuid.UUID, message: ChatMessage
) -> None:
    """End a pending reply whose generating process is gone, keeping what it stored (and
    record its `reply.failed`)."""
    now = datetime.now(UTC)
    code, text = INTERRUPTED
    async with maker() as db, db.begin():
        result = await db.execute(
            update(ChatMessage)
            .where(
                ChatMessage.workspace_id == workspace_id,
                ChatMessage.id == message.id,
                ChatMessage.status == MessageStatus.PENDING,
            )
            .values(
                status=_interrupted_status(),
                error_code=code,
                error_message=text,
                completed_at=now,
            )
            .returning(ChatMessage)
        )
        stored = result.scalar_one_or_none()
        if stored is not None:
            project = (
                await db.execute(
                    select(Project.id, Project.events_include_content)
                    .join(ChatSession, ChatSession.project_id == Project.id)
                    .where(ChatSession.id == stored.chat_session_id)
                )
            ).first()
            if project is not None:
                values = {"status": stored.status, "error_code": code, "content": stored.content}
                row = reply_finished(
                    workspace_id, project[0], stored, values, include_content=project[1]
                )
                db.add(Event(**row))
                mark_recorded(db)
    logger.warning("reply marked interrupted (no heartbeat) message_id=%s", message.id)


def _interrupted_status() -> Any:
    """`incomplete` when some text was stored, else `failed` (decided in SQL, race-free)."""
    return case(
        (func.length(ChatMessage.content) > 0, MessageStatus.INCOMPLETE.value),
        else_=MessageStatus.FAILED.value,
    )
