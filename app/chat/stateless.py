"""Turns that are not stored: the caller sends the history (`/api/v1/chat`, the OpenAI-compatible
endpoint). The project's intents, prompts and fallback reply apply as for stored turns."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.dependencies import Principal
from app.chat.errors import classify, upstream_error
from app.chat.limits import admit_turn
from app.chat.planning import ReplyPlan, plan_llm_reply, plan_without_llm
from app.chat.service import check_message
from app.chat.streaming import llm_call_fields
from app.core.config import Settings
from app.core.errors import field_error, project_not_found
from app.core.ratelimit import RateLimits, Rule
from app.knowledge import grounding
from app.llm.base import LLMError
from app.llm.registry import ProviderRegistry
from app.llm.resilience import CallReport, report_headers
from app.llm.types import LLMMessage, StreamChunk, Usage
from app.models import Project
from app.projects.config import ProjectConfigs
from app.projects.service import ProjectService

logger = logging.getLogger("app.chat.stateless")


@dataclass(frozen=True)
class StatelessTurn:
    project: Project  # detached: only its loaded columns are read
    plan: ReplyPlan
    budgets: list[Rule] = field(default_factory=list)  # token budgets the reply is charged to
    citations: list[dict[str, Any]] = field(default_factory=list)  # the sources `[n]` cites

    async def charge(self, limits: RateLimits, usage: Usage | None) -> None:
        if usage is not None:
            await limits.charge(self.budgets, usage.total_tokens)


@dataclass(frozen=True)
class StatelessReply:
    content: str
    model: str
    finish_reason: str | None
    usage: Usage | None
    intent_name: str | None = None
    fallback: bool = False  # the LLM failed; `content` is the project's fallback reply
    latency_ms: int = 0
    report: CallReport | None = None


class StatelessChat:
    def __init__(
        self,
        maker: async_sessionmaker[AsyncSession],
        principal: Principal,
        registry: ProviderRegistry,
        settings: Settings,
        limits: RateLimits,
        configs: ProjectConfigs,
    ) -> None:
        self.maker = maker
        self.principal = principal
        self.registry = registry
        self.settings = settings
        self.limits = limits
        self.configs = configs

    def for_end_user(self, end_user_id: str | None) -> StatelessChat:
        """The same service acting for the end user a request body names."""
        principal = self.principal.with_end_user(end_user_id)
        if principal is self.principal:
            return self
        return StatelessChat(
            self.maker, principal, self.registry, self.settings, self.limits, self.configs
        )

    async def project(self) -> Project:
        """The key's project."""
        assert self.principal.project_id is not None  # noqa: S101 - an API key's
        async with self.maker() as db:
            return await ProjectService(db, self.principal.workspace_id).get(
                self.principal.project_id
            )

    def check_message(self, field: str, message: str) -> None:
        check_message(self.settings, field, message)

    def check_history(self, field: str, history: Sequence[LLMMessage]) -> None:
        limit = self.settings.MAX_HISTORY_MESSAGES
        if len(history) > limit:
            raise field_error(field, f"must hold at most {limit} messages (got {len(history)})")
        for index, message in enumerate(history):
            self.check_message(f"{field}.{index}.content", message.content)

    async def prepare(
        self,
        *,
        message: str,
        history: Sequence[LLMMessage],
        context: Mapping[str, str | int | float | bool | None] | None = None,
        extra_system: Sequence[str] = (),
        project_ref: str | None = None,
    ) -> StatelessTurn:
        """Plan the reply in the key's project. `project_ref` (an id or slug) must name it."""
        workspace_id = self.principal.workspace_id
        async with self.maker() as db:
            if project_ref is None:
                assert self.principal.project_id is not None  # noqa: S101 - an API key's
                config = await self.configs.current(db, workspace_id, self.principal.project_id)
            else:
                found = await ProjectService(db, workspace_id).get_by_id_or_slug(project_ref)
                if found is None or found.id != self.principal.project_id:
                    raise project_not_found()
                config = await self.configs.get(db, workspace_id, found.id, found.revision)
        if config is None:
            raise project_not_found()
        project = config.project
        admitted = await admit_turn(self.limits, self.settings, self.principal, project)
        plan = plan_without_llm(config, self.settings, message=message, context=context)
        if plan is not None:
            return StatelessTurn(project, plan, admitted.tokens)
        sources: list[grounding.Source] = []
        if config.grounding is not None:
            embedder = self.registry.embedder
            question = await grounding.embed(config.grounding, embedder, message)
            async with self.maker() as db:
                sources = await grounding.retrieve(
                    db, workspace_id, project.id, question, config.grounding, embedder
                )
        plan = plan_llm_reply(
            config,
            self.registry,
            self.settings,
            history=history,
            message=message,
            context=context,
            extra_system=grounding.system_messages(extra_system, sources),
        )
        return StatelessTurn(project, plan, admitted.tokens, grounding.citations(sources) or [])

    async def complete(self, turn: StatelessTurn) -> StatelessReply:
        """The whole reply; an LLM failure is the fallback reply if the project has one, else
        raised as the matching `UpstreamError`."""
        plan = turn.plan
        if plan.canned is not None:
            return StatelessReply(
                content=plan.canned,
                model=turn.project.slug,
                finish_reason="stop",
                usage=None,
                intent_name=plan.intent.name if plan.intent else None,
            )
        started = time.perf_counter()
        try:
            if plan.setup_error is not None:
                raise plan.setup_error
            assert plan.provider is not None  # noqa: S101 - set unless setup_error is
            completion = await plan.provider.complete(plan.request)
        except LLMError as exc:
            return self.fallback_or_raise(turn, exc)
        await turn.charge(self.limits, completion.usage)
        latency_ms = int((time.perf_counter() - started) * 1000)
        report = _report(turn)
        logger.info(
            "stateless reply project_id=%s latency_ms=%d",
            turn.project.id,
            latency_ms,
            extra=llm_call_fields(
                outcome="success",
                provider=report.provider if report else None,
                model=completion.model,
                attempts=report.attempts if report else 0,
                fallback=report.fallback if report else False,
                usage=completion.usage,
                latency_ms=latency_ms,
            ),
        )
        return StatelessReply(
            content=completion.content,
            model=completion.model,
            finish_reason=completion.finish_reason,
            usage=completion.usage,
            latency_ms=int((time.perf_counter() - started) * 1000),
            report=_report(turn),
        )

    async def stream(self, turn: StatelessTurn) -> AsyncIterator[StreamChunk]:
        """The reply as chunks. The first chunk is awaited by `start_stream`, so a failure
        before any text is an ordinary error (or the fallback reply)."""
        plan = turn.plan
        if plan.canned is not None:
            yield StreamChunk(delta=plan.canned, finish_reason="stop", model=turn.project.slug)
            return
        if plan.setup_error is not None:
            raise plan.setup_error
        assert plan.provider is not None  # noqa: S101 - set unless setup_error is
        async with contextlib.aclosing(plan.provider.stream(plan.request)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def start_stream(
        self, turn: StatelessTurn
    ) -> tuple[StreamChunk, AsyncIterator[StreamChunk], bool]:
        """The first chunk, the rest, and whether this is the fallback reply: a failure before
        the first chunk is the fallback reply (as one chunk) when the project has one, else
        raised as an `UpstreamError`."""
        chunks = self.stream(turn)
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            first = StreamChunk(finish_reason="stop")
        except LLMError as exc:
            reply = self.fallback_or_raise(turn, exc)
            return StreamChunk(delta=reply.content, finish_reason="stop"), _empty(), True
        return first, chunks, False

    async def stream_finished(
        self, turn: StatelessTurn, started: float, outcome: str, usage: Usage | None
    ) -> None:
        """A streamed reply ended: charge its tokens and write its LLM-call log line."""
        await turn.charge(self.limits, usage)
        latency_ms = int((time.perf_counter() - started) * 1000)
        report = _report(turn)
        logger.info(
            "stateless stream finished project_id=%s outcome=%s latency_ms=%d",
            turn.project.id,
            outcome,
            latency_ms,
            extra=llm_call_fields(
                outcome=outcome,
                provider=report.provider if report else None,
                model=report.model if report else turn.plan.model,
                attempts=report.attempts if report else 0,
                fallback=report.fallback if report else False,
                usage=usage,
                latency_ms=latency_ms,
            ),
        )

    def fallback_or_raise(self, turn: StatelessTurn, exc: LLMError) -> StatelessReply:
        status, code = classify(exc)
        report = _report(turn)
        logger.warning(
            "stateless reply failed project_id=%s status=%d code=%s fallback=%s",
            turn.project.id,
            status,
            code,
            turn.project.fallback_reply is not None,
            extra={
                "event": "llm_call",
                "outcome": code,
                "provider": report.provider or exc.provider if report else exc.provider,
                "model": turn.plan.model,
                "attempts": report.attempts if report else 0,
                "fallback_reply": turn.project.fallback_reply is not None,
            },
        )
        if turn.project.fallback_reply is None:
            error = upstream_error(exc)
            error.headers |= report_headers(_report(turn))
            raise error
        return StatelessReply(
            content=turn.project.fallback_reply,
            model=turn.plan.model or turn.project.slug,
            finish_reason="stop",
            usage=None,
            fallback=True,
            report=_report(turn),
        )


def _report(turn: StatelessTurn) -> CallReport | None:
    report = getattr(turn.plan.provider, "report", None)
    return report if isinstance(report, CallReport) else None


async def _empty() -> AsyncIterator[StreamChunk]:
    return
    yield  # pragma: no cover - makes this an async generator
