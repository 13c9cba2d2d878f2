"""An OpenAI-compatible surface: `POST /v1/chat/completions` and `GET /v1/models`.

Point any OpenAI client at `<base>/v1` with a project API key. `model` names the key's project
(its id or slug); the project's intents, prompts (as the system message, before any system
messages you send) and fallback reply apply; `user` is the end user. Nothing is stored: the
client sends the conversation, as with OpenAI. Errors use OpenAI's `{"error": {...}}` body.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sse_starlette import EventSourceResponse, ServerSentEvent

from app.chat.errors import classify
from app.chat.stateless import StatelessChat, StatelessReply, StatelessTurn
from app.chat.streaming import ping_event
from app.compat.dependencies import StatelessChatDep
from app.core.config import Settings
from app.core.dependencies import SettingsDep
from app.core.errors import (
    NotFoundError,
    ValidationFailedError,
    error_responses,
    field_error,
    openai_error_body,
)
from app.core.idempotency import HEADER as IDEMPOTENCY_HEADER
from app.core.idempotency import fingerprint, run_idempotent, store_for
from app.core.responses import ModelResponse
from app.knowledge.schemas import CitationRead
from app.llm.base import LLMError
from app.llm.resilience import CallReport, report_headers
from app.llm.types import LLMMessage, StreamChunk, Usage

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])

OWNER = "chatbot-platform"
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class CompletionMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"] = Field(
        description="Tool and function messages are not supported."
    )
    content: str | list[TextPart] | None = Field(
        default=None, description="A string, or text parts (other part types are rejected)."
    )

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI's request body; fields not listed here are accepted and ignored."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "model": "my-chatbot",
                    "messages": [{"role": "user", "content": "What is machine learning?"}],
                    "user": "customer-42",
                }
            ]
        },
    )

    model: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)
    ] = Field(description="The project: its id or slug (see `GET /v1/models`).")
    messages: list[CompletionMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=32768)
    n: int | None = Field(default=None, ge=1, le=1, description="Only 1 is supported.")
    user: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
        | None
    ) = Field(default=None, description="Your id for the end user.")


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = OWNER


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class CompletionChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class CompletionChoice(BaseModel):
    index: int = 0
    message: CompletionChoiceMessage
    finish_reason: str
    logprobs: None = None


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage | None
    system_fingerprint: None = None
    citations: list[CitationRead] = Field(
        default_factory=list,
        description="Not in OpenAI's API: the knowledge-base sources `[n]` in the reply refers "
        "to (empty when the project's knowledge is off or nothing matched). Streamed, they are "
        "on the first chunk.",
    )


_ERRORS = error_responses(400, 401, 403, 404, 413, 429, 502, 503, 504)
_STREAM_DOC = (
    "With `stream: true`: `text/event-stream` of `data:` lines, each a `chat.completion.chunk`, "
    "ending with `data: [DONE]` (a usage chunk comes before it with "
    "`stream_options.include_usage`). A failure before any text is an ordinary error response "
    "(or the project's fallback reply); after text has been sent it is a final "
    '`data: {"error": {...}}` line.'
)


def _split(body: ChatCompletionRequest) -> tuple[list[str], list[LLMMessage], str]:
    """(caller system messages, history, the last user message)."""
    system = [m.text for m in body.messages if m.role in ("system", "developer")]
    turns = [m for m in body.messages if m.role in ("user", "assistant")]
    if not turns or turns[-1].role != "user":
        raise field_error("messages", "the last non-system message must be from the user")
    history = [LLMMessage(m.role, m.text) for m in turns[:-1]]  # type: ignore[arg-type]
    return system, history, turns[-1].text


async def _prepare(chat: StatelessChat, body: ChatCompletionRequest) -> StatelessTurn:
    system, history, message = _split(body)
    index = len(body.messages) - 1
    chat.check_message(f"messages.{index}.content", message)
    chat.check_history("messages", history)
    try:
        turn = await chat.prepare(
            message=message, history=history, extra_system=system, project_ref=body.model
        )
    except NotFoundError as exc:
        raise NotFoundError(
            f"The model '{body.model}' does not exist or this API key cannot use it; use the "
            "key's project id or slug (GET /v1/models lists it).",
            code="model_not_found",
        ) from exc
    request = turn.plan.request
    max_tokens = body.max_completion_tokens or body.max_tokens
    request = replace(
        request,
        temperature=request.temperature if body.temperature is None else body.temperature,
        max_tokens=max_tokens or request.max_tokens,
    )
    return replace(turn, plan=replace(turn.plan, request=request))


def _headers(turn: StatelessTurn, fallback: bool) -> dict[str, str]:
    report = getattr(turn.plan.provider, "report", None)
    headers = {"X-Chatbot-Project": str(turn.project.id)}
    if isinstance(report, CallReport):
        headers |= report_headers(report)
    if turn.plan.intent is not None:
        headers["X-Chatbot-Intent"] = turn.plan.intent.name
    if fallback:
        headers["X-Chatbot-Fallback"] = "true"
    return headers


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={
        **_ERRORS,
        200: {
            "description": "The completion, or a stream of chunks.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
    },
    description="Create a chat completion with the project's agent, as OpenAI's endpoint "
    "does. Authenticate with a project API key holding `chat`.\n\n" + _STREAM_DOC,
)
async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    chat: StatelessChatDep,
    settings: SettingsDep,
) -> Response | ChatCompletion:
    """Create a chat completion (OpenAI-compatible)."""
    chat = chat.for_end_user(body.user)
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is not None and body.stream:
        raise ValidationFailedError(
            "Idempotency-Key is supported on non-streamed completions only.",
            code="idempotency_not_supported",
        )
    if key is None or body.stream:
        return await _create(body, chat, settings)

    async def answer() -> JSONResponse:
        response = await _create(body, chat, settings)
        assert isinstance(response, JSONResponse)  # noqa: S101 - not streamed
        return response

    return await run_idempotent(
        store_for(chat.maker, chat.principal, settings),
        key,
        fingerprint(request, body.model_dump(mode="json"), chat.principal.end_user_id),
        answer,
    )


async def _create(body: ChatCompletionRequest, chat: StatelessChat, settings: Settings) -> Response:
    turn = await _prepare(chat, body)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        first, rest, fallback = await chat.start_stream(turn)
        events = _chunk_events(
            completion_id,
            created,
            body.model,
            first,
            rest,
            include_usage,
            finished=partial(chat.stream_finished, turn, time.perf_counter()),
            citations=turn.citations,
        )
        return EventSourceResponse(
            events,
            ping=settings.STREAM_PING_SECONDS,
            ping_message_factory=ping_event,
            send_timeout=60,
            headers=_headers(turn, fallback),
        )
    reply: StatelessReply = await chat.complete(turn)
    usage = reply.usage
    completion = ChatCompletion(
        id=completion_id,
        created=created,
        model=body.model,
        choices=[
            CompletionChoice(
                message=CompletionChoiceMessage(content=reply.content),
                finish_reason=reply.finish_reason or "stop",
            )
        ],
        usage=CompletionUsage(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
        )
        if usage
        else CompletionUsage(prompt_tokens=0, completion_tokens=0, total_tokens=0),
        citations=[CitationRead.model_validate(c) for c in turn.citations],
    )
    return ModelResponse(completion, headers=_headers(turn, reply.fallback))


async def _chunk_events(
    completion_id: str,
    created: int,
    model: str,
    first: StreamChunk,
    rest: AsyncIterator[StreamChunk],
    include_usage: bool,
    *,
    finished: Callable[[str, Usage | None], Awaitable[None]],
    citations: list[dict[str, Any]] | None = None,
) -> AsyncIterator[ServerSentEvent]:
    def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> str:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": [
                {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            ],
            **extra,
        }
        return json.dumps(body)

    opening: dict[str, Any] = {"citations": citations} if citations else {}
    yield ServerSentEvent(data=chunk({"role": "assistant", "content": ""}, **opening))
    finish_reason: str | None = None
    usage = None
    try:
        current: StreamChunk | None = first
        while current is not None:
            if current.delta:
                yield ServerSentEvent(data=chunk({"content": current.delta}))
            finish_reason = current.finish_reason or finish_reason
            usage = current.usage or usage
            current = await anext(rest, None)
    except LLMError as exc:
        status, code = classify(exc)
        await finished(code, usage)
        error = openai_error_body(status, code, f"The LLM request failed: {exc.message}")
        yield ServerSentEvent(data=json.dumps(error))
        return
    finally:
        aclose = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()
    await finished("success", usage)
    yield ServerSentEvent(data=chunk({}, finish_reason or "stop"))
    if include_usage:
        totals = {
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0,
            "total_tokens": usage.total_tokens if usage else 0,
        }
        body = json.loads(chunk({}))
        body["choices"] = []
        body["usage"] = totals
        yield ServerSentEvent(data=json.dumps(body))
    yield ServerSentEvent(data="[DONE]")


@router.get("/models", response_model=ModelList, responses=error_responses(400, 401, 403))
async def list_models(chat: StatelessChatDep) -> ModelList:
    """The models this key can use: its project, named by slug (its id works too)."""
    project = await chat.project()
    return ModelList(data=[ModelCard(id=project.slug, created=int(project.created_at.timestamp()))])


@router.get(
    "/models/{model}", response_model=ModelCard, responses=error_responses(400, 401, 403, 404)
)
async def get_model(model: str, chat: StatelessChatDep) -> ModelCard:
    """One model: the key's project, by id or slug."""
    project = await chat.project()
    if model not in (project.slug, str(project.id)):
        raise NotFoundError(f"The model '{model}' does not exist.", code="model_not_found")
    return ModelCard(id=model, created=int(project.created_at.timestamp()))
