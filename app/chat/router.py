"""Chat and session routes."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from app.chat.dependencies import ChatServiceDep, SessionServiceDep
from app.chat.schemas import (
    ChatRequest,
    ChatResponse,
    MessageRead,
    SessionRead,
    SessionUpdate,
)
from app.core.errors import error_responses
from app.core.pagination import Page, PageParamsDep

chat_router = APIRouter(tags=["Chat"])
sessions_router = APIRouter(tags=["Sessions"], responses=error_responses(401, 404, 422))


@chat_router.post(
    "/chat",
    response_model=ChatResponse,
    responses=error_responses(401, 404, 413, 422, 429, 502, 503, 504),
)
async def chat(body: ChatRequest, chat: ChatServiceDep) -> ChatResponse:
    """Send a message to a project's agent and get the reply.

    Without `session_id` a new session is created. The agent sees the project's active prompts,
    the session's last `history_window` messages, then this message. Your message is stored even
    when the LLM fails (the reply is then stored as `failed` and the error names both ids).
    """
    turn = await chat.send_message(body)
    assistant = MessageRead.from_model(turn.assistant_message)
    return ChatResponse(
        session_id=turn.session_id,
        message=MessageRead.from_model(turn.user_message),
        assistant_message=assistant,
        usage=assistant.usage,
    )


@sessions_router.get("/projects/{project_id}/sessions", response_model=Page[SessionRead])
async def list_sessions(
    project_id: uuid.UUID, sessions: SessionServiceDep, page: PageParamsDep
) -> object:
    """A project's chat sessions, most recently active first."""
    items, next_cursor = await sessions.list_page(project_id, page)
    return Page[SessionRead](
        items=[SessionRead.model_validate(s) for s in items], next_cursor=next_cursor
    )


@sessions_router.get("/sessions/{session_id}", response_model=SessionRead)
async def get_session(session_id: uuid.UUID, sessions: SessionServiceDep) -> object:
    """One chat session."""
    return await sessions.get(session_id)


@sessions_router.patch("/sessions/{session_id}", response_model=SessionRead)
async def rename_session(
    session_id: uuid.UUID, body: SessionUpdate, sessions: SessionServiceDep
) -> object:
    """Rename a session."""
    return await sessions.rename(session_id, body.title)


@sessions_router.delete("/sessions/{session_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_session(session_id: uuid.UUID, sessions: SessionServiceDep) -> Response:
    """Delete a session and all its messages."""
    await sessions.delete(session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@sessions_router.get("/sessions/{session_id}/messages", response_model=Page[MessageRead])
async def list_messages(
    session_id: uuid.UUID, sessions: SessionServiceDep, page: PageParamsDep
) -> object:
    """A session's messages, oldest first."""
    items, next_cursor = await sessions.list_messages(session_id, page)
    return Page[MessageRead](
        items=[MessageRead.from_model(m) for m in items], next_cursor=next_cursor
    )
