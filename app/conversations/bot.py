"""The bot's turn on a channel conversation: the `conversation.reply` job, queued with the
contact's message (app/channels/inbound.py).

The server decides whether the bot may speak twice: when the message is stored (the job is only
queued in `bot` mode), and again after the LLM returns, in the transaction that would queue the
reply, on the locked conversation. If a human took over meanwhile, the reply is stored as
`suppressed` (kept for the record, never sent, not part of the history). No transaction is open
during the LLM call.

Jobs of one conversation share an ordering key, so its turns run one at a time. A job whose
message is no longer the contact's latest leaves it to the newer one: that turn's history holds
both messages, and one reply answers them together.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.channels.outbound import store_reply
from app.chat.planning import ReplyPlan, plan_llm_reply, plan_without_llm
from app.chat.repository import MessageRepository
from app.conversations.policy import model_handoff, policy_of
from app.conversations.repository import ConversationRepository
from app.conversations.transitions import BOT, Action, apply
from app.core.config import Settings
from app.core.driver import transaction
from app.jobs.queue import enqueue
from app.jobs.worker import JobKind, JobRun
from app.knowledge import grounding
from app.llm.base import LLMError
from app.llm.registry import ProviderRegistry
from app.llm.types import LLMMessage
from app.models import (
    Author,
    Channel,
    ChatMessage,
    Conversation,
    ConversationStatus,
    MessageRole,
    MessageStatus,
    Mode,
)
from app.projects.config import ProjectConfig, ProjectConfigs

logger = logging.getLogger("app.conversations")
REPLY_KIND = "conversation.reply"


REPLY_ATTEMPTS = 3


async def queue_reply(
    db: AsyncSession, workspace_id: uuid.UUID, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> None:
    """The bot's turn for a contact's message. (On Postgres the contact-message statement,
    app/channels/contact_message.py, writes this same row itself.)"""
    await enqueue(
        db,
        REPLY_KIND,
        {"conversation_id": str(conversation_id), "message_id": str(message_id)},
        workspace_id=workspace_id,
        dedupe_key=f"reply:{message_id}",
        ordering_key=f"conversation:{conversation_id}",
        max_attempts=REPLY_ATTEMPTS,
    )


@dataclass
class Outcome:
    """What the turn produced: a reply, a handoff (with its reason), or a failure."""

    text: str = ""
    handoff: str | None = None
    error: LLMError | None = None
    fields: dict[str, Any] | None = None
    intent: str | None = None


def reply_job(
    settings: Settings,
    maker: async_sessionmaker[AsyncSession],
    registry: ProviderRegistry,
    configs: ProjectConfigs,
) -> JobKind:
    async def answer(job: JobRun) -> None:
        conversation_id = uuid.UUID(job.payload["conversation_id"])
        message_id = uuid.UUID(job.payload["message_id"])
        turn = await _read(maker, configs, conversation_id, message_id)
        if turn is None:
            return
        conversation, channel, message, config, history = turn
        policy = policy_of(channel.settings or {})
        question = message.content
        plan = plan_without_llm(config, settings, message=question, handoff=policy)
        sources: list[grounding.Source] = []
        if plan is None:
            if config.grounding is not None:
                asked = await grounding.embed(config.grounding, registry.embedder, question)
                async with maker() as db:
                    sources = await grounding.retrieve(
                        db,
                        conversation.workspace_id,
                        config.project.id,
                        asked,
                        config.grounding,
                        registry.embedder,
                    )
            extra = (conversation.bot_note,) if conversation.bot_note else ()
            plan = plan_llm_reply(
                config,
                registry,
                settings,
                history=history,
                message=question,
                extra_system=grounding.system_messages(extra, sources),
                handoff=policy,
            )
        outcome = await _generate(plan)
        if outcome.fields is not None and sources:
            outcome.fields["citations"] = grounding.citations(sources)
        async with transaction(maker) as db:
            await _store(db, settings, conversation_id, outcome, policy.message, config)

    return JobKind(answer)


async def _read(
    maker: async_sessionmaker[AsyncSession],
    configs: ProjectConfigs,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
) -> tuple[Conversation, Channel, ChatMessage, ProjectConfig, list[LLMMessage]] | None:
    """What the turn needs, or None when there is nothing to answer: the bot no longer has
    the conversation, or a newer message from the contact will be answered instead."""
    async with maker() as db:
        conversation = await db.get(Conversation, conversation_id)
        message = await db.get(ChatMessage, message_id)
        if conversation is None or message is None or conversation.mode != Mode.BOT:
            return None
        newer = await db.scalar(
            select(
                exists().where(
                    ChatMessage.chat_session_id == message.chat_session_id,
                    ChatMessage.seq > message.seq,
                    ChatMessage.role == MessageRole.USER,
                )
            )
        )
        if newer:
            return None
        channel = await db.get(Channel, conversation.channel_id)
        config = await configs.current(db, conversation.workspace_id, conversation.project_id)
        if channel is None or config is None:
            return None
        rows = await MessageRepository(db, conversation.workspace_id).history_window(
            message.chat_session_id, config.project.history_window, before_seq=message.seq
        )
    history = [LLMMessage(role, content) for role, content in rows]  # type: ignore[arg-type]
    return conversation, channel, message, config, history


async def _generate(plan: ReplyPlan) -> Outcome:
    intent = plan.intent.name if plan.intent else None
    if plan.handoff is not None:
        return Outcome(handoff=plan.handoff, intent=intent)
    if plan.canned is not None:
        return Outcome(text=plan.canned, intent=intent, fields={"intent": intent})
    if plan.provider is None:
        assert plan.setup_error is not None  # noqa: S101 - a plan without a provider says why
        return Outcome(error=plan.setup_error)
    started = time.monotonic()
    try:
        completion = await plan.provider.complete(plan.request)
    except LLMError as exc:
        return Outcome(error=exc)
    text, asked = model_handoff(completion.content)
    if asked is not None:
        return Outcome(handoff=f"llm: {asked}"[:30])
    usage = completion.usage
    fields: dict[str, Any] = {
        "provider": plan.provider_name,
        "model": completion.model or plan.model,
        "finish_reason": completion.finish_reason,
        "latency_ms": int((time.monotonic() - started) * 1000),
        "prompt_tokens": usage.prompt_tokens if usage else None,
        "completion_tokens": usage.completion_tokens if usage else None,
        "total_tokens": usage.total_tokens if usage else None,
    }
    if not text.strip():
        return Outcome(
            error=LLMError("the model answered with no text", provider=str(plan.provider_name))
        )
    return Outcome(text=text, fields=fields)


async def _store(
    db: AsyncSession,
    settings: Settings,
    conversation_id: uuid.UUID,
    outcome: Outcome,
    handoff_message: str,
    config: ProjectConfig,
) -> None:
    """The second gate, on the locked conversation: send only if the bot still has it."""
    conversation = await ConversationRepository(db, config.project.workspace_id).lock(
        conversation_id
    )
    if conversation is None:
        return
    speak = conversation.mode == Mode.BOT and conversation.status != ConversationStatus.RESOLVED
    content = bool(config.project.events_include_content)
    if outcome.handoff is not None:
        if speak:
            await _handoff(db, conversation, outcome.handoff, handoff_message, content)
        return
    if outcome.error is not None:
        await _failed(db, settings, conversation, outcome.error, handoff_message, config, speak)
        return
    if not speak:
        logger.info("bot reply suppressed conversation_id=%s", conversation.id)
    await store_reply(
        db,
        conversation,
        outcome.text,
        author=Author.BOT,
        status=MessageStatus.COMPLETE if speak else MessageStatus.SUPPRESSED,
        send=speak,
        include_content=content,
        **(outcome.fields or {}),
    )
    if speak:
        conversation.failed_replies, conversation.bot_note = 0, None


async def _handoff(
    db: AsyncSession, conversation: Conversation, reason: str, message: str, content: bool
) -> None:
    await apply(db, conversation, Action.HANDOFF, BOT, reason=reason[:30])
    await store_reply(db, conversation, message, author=Author.SYSTEM, include_content=content)


async def _failed(
    db: AsyncSession,
    settings: Settings,
    conversation: Conversation,
    error: LLMError,
    handoff_message: str,
    config: ProjectConfig,
    speak: bool,
) -> None:
    """A failed reply is kept as `failed`. After BOT_FAILURE_HANDOFF_THRESHOLD in a row the
    conversation goes to a human; before that, the project's fallback reply (if any) is sent."""
    content = bool(config.project.events_include_content)
    await store_reply(
        db,
        conversation,
        "",
        author=Author.BOT,
        status=MessageStatus.FAILED,
        send=False,
        include_content=content,
        error_code=type(error).__name__,
        error_message=error.message[:1000],
    )
    if not speak:
        return
    conversation.failed_replies += 1
    if conversation.failed_replies >= settings.BOT_FAILURE_HANDOFF_THRESHOLD:
        await _handoff(db, conversation, "bot_error", handoff_message, content)
    elif config.project.fallback_reply:
        await store_reply(
            db,
            conversation,
            config.project.fallback_reply,
            author=Author.BOT,
            include_content=content,
        )
