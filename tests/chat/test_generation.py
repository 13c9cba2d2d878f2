"""Generation edge cases that are hard to reach over HTTP."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from app.chat.streaming import CANCELLED, Generation, GenerationRegistry
from app.llm.types import CompletionRequest
from app.models import ChatMessage
from tests.conftest import make_settings


async def test_a_generation_stopped_before_it_ran_still_ends_its_followers() -> None:
    message = ChatMessage(
        id=uuid.uuid4(),
        chat_session_id=uuid.uuid4(),
        seq=2,
        role="assistant",
        content="",
        status="pending",
        created_at=datetime.now(UTC),
    )
    generation = Generation(
        maker=None,  # type: ignore[arg-type]  # never reached: it is stopped before it runs
        settings=make_settings("sqlite+aiosqlite:///unused.db"),
        workspace_id=uuid.uuid4(),
        message=message,
        provider=None,
        request=CompletionRequest(model="m", messages=(), temperature=0.7, max_tokens=10),
    )
    registry = GenerationRegistry()
    registry.start(generation)
    generation.stop(CANCELLED)
    events: list[Any] = [event async for event in generation.follow()]
    assert [e.event for e in events] == ["error"]
    assert '"generation_interrupted"' in events[0].data
    assert registry.get(message.id) is None
