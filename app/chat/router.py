"""Chat, session and message routes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import JSONResponse, StreamingResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from app.chat.dependencies import (
    ChatServiceDep,
    ExporterDep,
    FeedbackDep,
    SessionDeleterDep,
    SessionReaderDep,
    SessionWriterDep,
    StreamChatServiceDep,
    UsageServiceDep,
)
from app.chat.export import EXTENSIONS, MEDIA_TYPES, ExportFormat
from app.chat.schemas import (
    ChatRequest,
    ChatResponse,
    FeedbackRequest,
    MessageRead,
    RegenerateRequest,
    SessionRead,
    SessionUpdate,
)
from app.chat.service import ChatService, ChatTurn
from app.chat.streaming import Generation, ping_event, session_event
from app.chat.usage import GroupBy, UsageReport
from app.core.dependencies import SettingsDep
from app.core.errors import error_responses
from app.core.idempotency import HEADER as IDEMPOTENCY_HEADER
from app.core.idempotency import (
    IDEMPOTENCY_DOC,
    IdempotencyStore,
    Replay,
    fingerprint,
    replay_response,
    run_idempotent,
    store_for,
)
from app.core.pagination import Page, PageParamsDep
from app.core.responses import ModelResponse
from app.intents.schemas import Link
from app.llm.resilience import report_headers

chat_router = APIRouter(tags=["Chat"])
sessions_router = APIRouter(tags=["Sessions"], responses=error_responses(401, 403, 404, 422))

STREAM_DESCRIPTION = """\
With `"stream": true` (or `Accept: text/event-stream`) the answer is a stream of Server-Sent
Events, each a `data:` line of JSON with an `event:` name and an `id:`:

- `session` (first, id `0`): `{session_id, message_id, assistant_message_id}`
- `delta` (id = characters of the reply so far): `{content}`, a text fragment
- `done` (last on success, id `end`): `{message, finish_reason, usage, latency_ms}`
- `error` (last on failure, id `end`): `{error: {code, message}, message}`

A `: ping` comment is sent every ~15 s while the upstream is slow. Exactly one of `done` /
`error` ends every stream, then the connection closes. The reply is generated and stored even
if you disconnect: reconnect with `GET /sessions/{session_id}/messages/{message_id}/stream` and
`Last-Event-ID`. Invalid input, authentication and unknown ids are answered as plain JSON errors
before any event is sent.
"""

SSE_EXAMPLE = (
    'event: session\nid: 0\ndata: {"session_id": "…", "message_id": "…", '
    '"assistant_message_id": "…", "citations": []}\n\n'
    'event: delta\nid: 5\ndata: {"content": "Hello"}\n\n'
    'event: delta\nid: 12\ndata: {"content": " there!"}\n\n'
    'event: done\nid: end\ndata: {"message": {…}, "finish_reason": "stop", '
    '"usage": {…}, "latency_ms": 840, "citations": []}\n\n'
)


def _stream_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    responses = error_responses(*codes)
    responses[200] = {
        "description": "The reply as JSON, or as an event stream when streaming was asked for.",
        "content": {"text/event-stream": {"schema": {"type": "string"}, "example": SSE_EXAMPLE}},
    }
    return responses


def wants_stream(flag: bool | None, request: Request) -> bool:
    if flag is not None:
        return flag
    return "text/event-stream" in request.headers.get("accept", "")


def event_stream(events: AsyncIterator[ServerSentEvent], ping_seconds: float) -> Response:
    return EventSourceResponse(
        events, ping=ping_seconds, ping_message_factory=ping_event, send_timeout=60
    )


def _turn_stream(turn: ChatTurn, generation: Generation, ping_seconds: float) -> Response:
    first = session_event(
        turn.session_id,
        turn.user_message.id,
        turn.assistant_message.id,
        turn.assistant_message.citations,
    )

    async def events() -> AsyncIterator[ServerSentEvent]:
        yield first
        async for event in generation.follow(0):
            yield event

    return event_stream(events(), ping_seconds)


async def _answer(
    chat: ChatService, turn: ChatTurn, generation: Generation, stream: bool, ping: float
) -> Response | ChatResponse:
    if stream:
        return _turn_stream(turn, generation, ping)
    turn = await chat.wait_for_reply(turn, generation)
    return ModelResponse(chat_response(turn), headers=report_headers(turn.report))


def chat_response(turn: ChatTurn) -> ChatResponse:
    assistant = MessageRead.from_model(turn.assistant_message)
    intent = turn.intent
    return ChatResponse(
        session_id=turn.session_id,
        message=MessageRead.from_model(turn.user_message),
        assistant_message=assistant,
        usage=assistant.usage,
        reply=turn.fallback_reply if turn.fallback and turn.fallback_reply else assistant.content,
        intent=intent.name if intent else None,
        links=[Link(text=text, url=url) for text, url in intent.links] if intent else [],
        requires_login=intent.requires_login if intent else False,
        fallback=turn.fallback,
        citations=assistant.citations,
    )


@chat_router.post(
    "/chat",
    response_model=ChatResponse,
    responses=_stream_responses(401, 404, 409, 413, 422, 429, 502, 503, 504),
    description=(
        "Send a message to a project's agent and get the reply.\n\n"
        "Without `session_id` a new session is created (titled from your message). The agent "
        "sees the project's active prompts, the session's last `history_window` messages, then "
        "this message. Your message is stored even when the LLM fails (the reply is then "
        "stored as `failed` and the error names both ids).\n\n"
        + STREAM_DESCRIPTION
        + IDEMPOTENCY_DOC
    ),
)
async def chat(
    body: ChatRequest, request: Request, chat: ChatServiceDep
) -> Response | ChatResponse:
    """Send a message (JSON or streamed reply)."""
    stream = wants_stream(body.stream, request)
    chat = chat.for_end_user(body.end_user_id)
    settings = chat.settings
    ping = settings.STREAM_PING_SECONDS
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        turn, generation = await chat.start_turn(body, stream=stream)
        return await _answer(chat, turn, generation, stream, ping)
    store = store_for(chat.maker, chat.principal, settings)
    print_ = fingerprint(request, body.model_dump(mode="json"), stream, chat.principal.end_user_id)
    if stream:
        return await _idempotent_stream(chat, store, key, print_, body, ping)

    async def answer() -> JSONResponse:
        turn, generation = await chat.start_turn(body, stream=False)
        response = await _answer(chat, turn, generation, False, ping)
        assert isinstance(response, JSONResponse)  # noqa: S101 - the JSON branch of _answer
        return response

    return await run_idempotent(store, key, print_, answer)


async def _idempotent_stream(
    chat: ChatService,
    store: IdempotencyStore,
    key: str,
    print_: str,
    body: ChatRequest,
    ping: float,
) -> Response:
    """A streamed turn under an Idempotency-Key: a retry follows the first request's reply."""
    outcome = await store.begin(key, print_)
    if isinstance(outcome, Replay):
        stored = outcome.response
        if stored.get("kind") != "stream":
            return replay_response(outcome)
        session_id = uuid.UUID(stored["session_id"])
        events = await chat.follow(session_id, uuid.UUID(stored["assistant_message_id"]), None)
        assert events is not None  # noqa: S101 - no Last-Event-ID: never None
        response = event_stream(events, ping)
        response.headers["Idempotent-Replayed"] = "true"
        return response
    try:
        turn, generation = await chat.start_turn(body, stream=True)
    except BaseException:
        await asyncio.shield(store.release(outcome))
        raise
    ids = {
        "kind": "stream",
        "session_id": str(turn.session_id),
        "message_id": str(turn.user_message.id),
        "assistant_message_id": str(turn.assistant_message.id),
    }
    await store.finish(outcome, 200, ids, {})
    return _turn_stream(turn, generation, ping)


@sessions_router.post(
    "/sessions/{session_id}/regenerate",
    response_model=ChatResponse,
    responses=_stream_responses(409, 502, 503, 504),
)
async def regenerate(
    session_id: uuid.UUID,
    request: Request,
    chat: ChatServiceDep,
    settings: SettingsDep,
    body: RegenerateRequest | None = None,
) -> Response | ChatResponse:
    """Answer the session's last message again.

    The previous reply stays in the session with status `superseded` (and out of the agent's
    history); the new one follows it. Answers like `POST /chat`, streamed on request. 409 when
    the session has no reply yet or its last reply is still being generated.
    """
    stream = wants_stream(body.stream if body else None, request)
    turn, generation = await chat.regenerate(session_id, stream=stream)
    return await _answer(chat, turn, generation, stream, settings.STREAM_PING_SECONDS)


@sessions_router.get(
    "/sessions/{session_id}/messages/{message_id}/stream",
    responses={
        200: {
            "description": "The reply's events (see `POST /chat`).",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        204: {"description": "`Last-Event-ID: end`: the client already has the whole reply."},
        **error_responses(409),
    },
    response_class=Response,
)
async def stream_reply(
    session_id: uuid.UUID,
    message_id: uuid.UUID,
    chat: StreamChatServiceDep,
    settings: SettingsDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    last_event_id_query: Annotated[
        str | None,
        Query(
            alias="last_event_id",
            description="Same as the `Last-Event-ID` header, for clients that cannot set it.",
        ),
    ] = None,
) -> Response:
    """Follow a reply: what you missed, then the rest live.

    Works while the reply is being generated (on any API process) and after it finished. Send
    the last event id you received as `Last-Event-ID` (browsers' `EventSource` does this when
    it reconnects) to get only what came after it; without it you get the whole reply from the
    `session` event on. `Last-Event-ID: end` answers 204, which tells `EventSource` to stop.
    """
    events = await chat.follow(session_id, message_id, last_event_id or last_event_id_query)
    if events is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return event_stream(events, settings.STREAM_PING_SECONDS)


@sessions_router.post(
    "/sessions/{session_id}/messages/{message_id}/cancel",
    response_model=MessageRead,
    responses={
        202: {"model": MessageRead, "description": "Cancel requested; still stopping."},
        **error_responses(409),
    },
)
async def cancel_reply(
    session_id: uuid.UUID, message_id: uuid.UUID, chat: ChatServiceDep
) -> Response:
    """Stop a reply being generated.

    The reply keeps what was generated and ends `incomplete` (or `failed` if nothing arrived)
    with error code `cancelled`; its stream ends with that `error` event. Works from any API
    process. Answers 200 with the stopped reply (a reply that had already finished is returned
    unchanged), or 202 if the generating process has not confirmed yet.
    """
    message = await chat.cancel(session_id, message_id)
    read = MessageRead.from_model(message)
    code = status.HTTP_202_ACCEPTED if read.status == "pending" else status.HTTP_200_OK
    return JSONResponse(read.model_dump(mode="json"), status_code=code)


@sessions_router.post(
    "/messages/{message_id}/feedback",
    response_model=MessageRead,
    responses=error_responses(409),
)
async def give_feedback(
    message_id: uuid.UUID, body: FeedbackRequest, sessions: FeedbackDep
) -> MessageRead:
    """Rate a reply `up` or `down` (null withdraws it), with an optional comment.

    Shown on the message as `feedback` and counted in the project's usage.
    """
    message = await sessions.set_feedback(message_id, body.rating, body.comment)
    return MessageRead.from_model(message)


@sessions_router.get("/projects/{project_id}/sessions", response_model=Page[SessionRead])
async def list_sessions(
    project_id: uuid.UUID,
    sessions: SessionReaderDep,
    page: PageParamsDep,
    end_user_id: Annotated[
        str | None,
        Query(max_length=200, description="Only this end user's sessions (project owners)."),
    ] = None,
) -> object:
    """A project's chat sessions, most recently active first.

    With an API key: only the sessions of the end user named by `X-End-User-ID`.
    """
    items, next_cursor = await sessions.list_page(project_id, page, end_user_id=end_user_id)
    return Page[SessionRead](
        items=[SessionRead.from_model(s) for s in items], next_cursor=next_cursor
    )


@sessions_router.get("/projects/{project_id}/usage", response_model=UsageReport)
async def project_usage(
    project_id: uuid.UUID,
    usage: UsageServiceDep,
    from_: Annotated[
        datetime | None,
        Query(
            alias="from",
            description="Start (ISO date-time, UTC if no offset); default 30 days before `to`.",
        ),
    ] = None,
    to: Annotated[datetime | None, Query(description="End, exclusive (default: now).")] = None,
    group_by: Annotated[
        GroupBy, Query(description="`day`: one bucket per UTC day; `none`: totals only.")
    ] = "day",
) -> UsageReport:
    """Messages, tokens, failures, reply latency (p50/p95) and feedback for a project."""
    return await usage.report(project_id, from_, to, group_by)


@sessions_router.get("/sessions/{session_id}", response_model=SessionRead)
async def get_session(session_id: uuid.UUID, sessions: SessionReaderDep) -> SessionRead:
    """One chat session, with its token totals."""
    return SessionRead.from_model(await sessions.get(session_id))


@sessions_router.patch("/sessions/{session_id}", response_model=SessionRead)
async def rename_session(
    session_id: uuid.UUID, body: SessionUpdate, sessions: SessionWriterDep
) -> SessionRead:
    """Rename a session (it is titled from its first message until then)."""
    return SessionRead.from_model(await sessions.rename(session_id, body.title))


@sessions_router.delete("/sessions/{session_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_session(session_id: uuid.UUID, sessions: SessionDeleterDep) -> Response:
    """Delete a session and all its messages (a reply being generated stops)."""
    await sessions.delete(session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@sessions_router.get("/sessions/{session_id}/messages", response_model=Page[MessageRead])
async def list_messages(
    session_id: uuid.UUID, sessions: SessionReaderDep, page: PageParamsDep
) -> object:
    """A session's messages, oldest first."""
    items, next_cursor = await sessions.list_messages(session_id, page)
    return Page[MessageRead](
        items=[MessageRead.from_model(m) for m in items], next_cursor=next_cursor
    )


@sessions_router.get(
    "/sessions/{session_id}/export",
    responses={
        200: {
            "description": "The whole session as a file download.",
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "text/markdown": {"schema": {"type": "string"}},
            },
        }
    },
    response_class=Response,
)
async def export_session(
    session_id: uuid.UUID,
    exporter: ExporterDep,
    format: Annotated[ExportFormat, Query(description="`json` (default) or `markdown`.")] = "json",
) -> Response:
    """Download a session with all its messages (including failed and superseded replies)."""
    parts = await exporter.open(session_id, format)
    filename = f"session-{session_id}.{EXTENSIONS[format]}"
    return StreamingResponse(
        parts,
        media_type=MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
