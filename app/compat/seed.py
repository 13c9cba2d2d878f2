"""The seed's stateless chat contract (`POST /api/v1/chat`), for backends calling on behalf of
their users: the caller keeps the conversation and sends it as `conversation_history`."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints

from app.chat.schemas import ChatRequest, MessageRead, UsageRead
from app.chat.service import ChatService
from app.chat.stateless import StatelessChat
from app.chat.templates import Context
from app.compat.dependencies import KeyChatServiceDep, StatelessChatDep
from app.core.dependencies import SettingsDep
from app.core.errors import error_responses, field_error
from app.core.idempotency import HEADER as IDEMPOTENCY_HEADER
from app.core.idempotency import fingerprint, run_idempotent, store_for
from app.core.responses import ModelResponse
from app.intents.matcher import IntentRule
from app.intents.schemas import Link
from app.knowledge.schemas import CitationRead
from app.llm.resilience import report_headers
from app.llm.types import LLMMessage

router = APIRouter(tags=["Server-to-server"])


class HistoryMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str = Field(description="1..MAX_MESSAGE_CHARS characters.")


EndUserRef = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class SimpleChatRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "message": "Saya ingin membuat surat keterangan tidak mampu",
                    "conversation_history": [
                        {"role": "user", "content": "Halo"},
                        {"role": "assistant", "content": "Halo! Ada yang bisa saya bantu?"},
                    ],
                    "user_id": 123,
                    "context": {"user_name": "Budi"},
                }
            ]
        },
    )

    message: str = Field(min_length=1, description="1..MAX_MESSAGE_CHARS characters.")
    conversation_history: list[HistoryMessage] = Field(
        default_factory=list,
        description="The conversation so far, oldest first (roles `user` / `assistant`; at "
        "most MAX_HISTORY_MESSAGES). Used instead of a stored session.",
    )
    user_id: EndUserRef | StrictInt | None = Field(
        default=None,
        description="Your id for the end user (a string or an integer); the same as "
        "`X-End-User-ID`.",
    )
    context: Context | None = None
    session_id: uuid.UUID | None = Field(
        default=None,
        description="Store the turn in this session (one of this end user's) and use its "
        "stored history; `conversation_history` must then be empty.",
    )
    persist: bool = Field(
        default=False,
        description="Start a new stored session with this turn (its id is returned).",
    )


class SimpleChatResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "reply": "Untuk membuat surat keterangan tidak mampu…",
                    "links": [{"text": "Formulir SKTM", "url": "/user/pengajuan/form/tidak-mampu"}],
                    "requires_login": False,
                    "intent": None,
                    "fallback": False,
                    "session_id": None,
                    "message_id": None,
                    "usage": {"prompt_tokens": 52, "completion_tokens": 40, "total_tokens": 92},
                }
            ]
        }
    )

    reply: str
    links: list[Link] = Field(description="The matched intent's links (empty otherwise).")
    requires_login: bool = Field(description="The matched intent's flag (false otherwise).")
    intent: str | None = Field(description="The intent that answered (no LLM call), if any.")
    fallback: bool = Field(
        description="True when the LLM failed and `reply` is the project's fallback reply."
    )
    session_id: uuid.UUID | None = Field(description="The session, when the turn was stored.")
    message_id: uuid.UUID | None = Field(description="The stored reply's id, when stored.")
    usage: UsageRead | None = Field(description="Tokens used, when the upstream reported them.")
    citations: list[CitationRead] = Field(
        default_factory=list,
        description="The knowledge-base sources `[n]` in `reply` refers to (empty when the "
        "project's knowledge is off or nothing matched).",
    )


def _intent_fields(intent: IntentRule | None) -> dict[str, object]:
    if intent is None:
        return {"intent": None, "links": [], "requires_login": False}
    return {
        "intent": intent.name,
        "links": [Link(text=text, url=url) for text, url in intent.links],
        "requires_login": intent.requires_login,
    }


@router.post(
    "/api/v1/chat",
    response_model=SimpleChatResponse,
    responses=error_responses(401, 403, 404, 409, 413, 422, 429, 502, 503, 504),
)
async def simple_chat(
    body: SimpleChatRequest,
    request: Request,
    stateless: StatelessChatDep,
    stored: KeyChatServiceDep,
    settings: SettingsDep,
) -> Response:
    """Answer a message with the project's agent (authenticate with a project API key holding
    `chat`; the key selects the project).

    Intents are tried first; otherwise the LLM gets the project's prompts (with `{{name}}`
    placeholders filled from `context`), `conversation_history` and the message. Nothing is
    stored unless `session_id` or `persist` is given. If the LLM fails and the project has a
    `fallback_reply`, it is the reply (with `fallback: true`); otherwise the error is returned.

    An `Idempotency-Key` header makes retries safe, as on `POST /chat`.
    """
    end_user = None if body.user_id is None else str(body.user_id)
    principal = stateless.principal.with_end_user(end_user)

    async def answer() -> JSONResponse:
        response, headers = await _simple_answer(body, end_user, stateless, stored)
        return ModelResponse(response, headers=headers)

    return await run_idempotent(
        store_for(stateless.maker, principal, settings),
        request.headers.get(IDEMPOTENCY_HEADER),
        fingerprint(request, body.model_dump(mode="json"), principal.end_user_id),
        answer,
    )


async def _simple_answer(
    body: SimpleChatRequest,
    end_user: str | None,
    stateless: StatelessChat,
    stored: ChatService,
) -> tuple[SimpleChatResponse, dict[str, str]]:
    if body.session_id is not None or body.persist:
        if body.conversation_history:
            raise field_error(
                "conversation_history",
                "must be empty with session_id or persist: the session's stored history is used",
            )
        chat = stored.for_end_user(end_user)
        assert chat.principal.project_id is not None  # noqa: S101 - an API key's
        request = ChatRequest(
            project_id=chat.principal.project_id,
            message=body.message,
            session_id=body.session_id,
            context=body.context,
        )
        turn, generation = await chat.start_turn(request, stream=False)
        turn = await chat.wait_for_reply(turn, generation)
        reply = MessageRead.from_model(turn.assistant_message)
        return SimpleChatResponse(
            reply=turn.fallback_reply if turn.fallback and turn.fallback_reply else reply.content,
            fallback=turn.fallback,
            session_id=turn.session_id,
            message_id=reply.id,
            usage=reply.usage,
            citations=reply.citations,
            **_intent_fields(turn.intent),
        ), report_headers(turn.report)

    stateless = stateless.for_end_user(end_user)
    stateless.check_message("message", body.message)
    history = [LLMMessage(m.role, m.content) for m in body.conversation_history]
    stateless.check_history("conversation_history", history)
    planned = await stateless.prepare(message=body.message, history=history, context=body.context)
    answer = await stateless.complete(planned)
    usage = answer.usage
    return SimpleChatResponse(
        reply=answer.content,
        fallback=answer.fallback,
        session_id=None,
        message_id=None,
        usage=UsageRead(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
        )
        if usage
        else None,
        citations=[CitationRead.model_validate(c) for c in planned.citations],
        **_intent_fields(planned.plan.intent),
    ), report_headers(answer.report)
