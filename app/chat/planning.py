"""How a message will be answered: by an intent's canned reply, or by an LLM request built
from the project's prompts (with `{{placeholders}}` filled), the history and the message. On a
channel conversation, a handoff step comes first: a handoff keyword, or an intent whose action
is `handoff`, hands the conversation to a human instead (app/conversations/policy.py).

`plan_without_llm` runs those steps; when none answers, the caller may retrieve knowledge-base
sources (app/knowledge/grounding.py, the one step that reads the database) and pass them to
`plan_llm_reply` as an extra system message."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from app.chat.templates import render
from app.conversations.policy import INSTRUCTION, HandoffPolicy
from app.core.config import Settings
from app.intents.matcher import IntentRule, match_intent
from app.llm.base import LLMError, LLMProvider
from app.llm.registry import ProviderRegistry
from app.llm.resilience import ResilientProvider, Target
from app.llm.types import CompletionRequest, LLMMessage
from app.models import Project
from app.projects.config import ProjectConfig

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


@dataclass(frozen=True)
class ReplyPlan:
    request: CompletionRequest
    provider: LLMProvider | None  # None: `setup_error` says why (or an intent answers)
    provider_name: str | None
    model: str | None
    setup_error: LLMError | None = None
    intent: IntentRule | None = None
    canned: str | None = None  # the intent's reply, rendered; no LLM call is made
    handoff: str | None = None  # why the conversation goes to a human (no reply is generated)

    @property
    def answered_by_intent(self) -> bool:
        return self.canned is not None


def plan_without_llm(
    config: ProjectConfig,
    settings: Settings,
    *,
    message: str,
    context: Mapping[str, str | int | float | bool | None] | None = None,
    handoff: HandoffPolicy | None = None,
) -> ReplyPlan | None:
    """The plan when no LLM call answers `message`: a handoff keyword or intent, or an
    intent's canned reply. None when the LLM is to answer (after any knowledge retrieval)."""
    if handoff is not None and (keyword := handoff.keyword_in(message)) is not None:
        return _no_reply(handoff=f"keyword: {keyword}")
    if config.rules:
        rule = match_intent(
            config.rules, message, timeout_seconds=settings.INTENT_MATCH_TIMEOUT_MS / 1000
        )
        if rule is not None and handoff is not None and rule.action == "handoff":
            return _no_reply(intent=rule, handoff=f"intent: {rule.name}")
        if rule is not None:
            return _no_reply(intent=rule, canned=render(rule.reply, context))
    return None


def plan_llm_reply(
    config: ProjectConfig,
    registry: ProviderRegistry,
    settings: Settings,
    *,
    history: Sequence[LLMMessage],
    message: str,
    context: Mapping[str, str | int | float | bool | None] | None = None,
    extra_system: Sequence[str] = (),
    handoff: HandoffPolicy | None = None,
) -> ReplyPlan:
    """The LLM request for `message`: the project's prompts, then `extra_system` (a caller's
    system messages, the knowledge sources), the history and the message."""
    project = config.project
    system = [render(p, context) for p in config.prompts] or [DEFAULT_SYSTEM_PROMPT]
    if handoff is not None and handoff.ask_model:
        system.append(INSTRUCTION)
    targets, setup_error = _targets(registry, project)
    primary = targets[0] if targets else None
    provider: LLMProvider | None = None
    if targets:
        policy = registry.policy
        if project.llm_timeout is not None:
            policy = replace(policy, total_timeout=project.llm_timeout)
        provider = ResilientProvider(targets, policy, registry.breakers, metrics=registry.metrics)
    model = primary.model if primary else project.model
    request = CompletionRequest(
        model=model or "",
        messages=(
            *(LLMMessage("system", text) for text in (*system, *extra_system)),
            *history,
            LLMMessage("user", message),
        ),
        temperature=(
            project.temperature if project.temperature is not None else settings.LLM_TEMPERATURE
        ),
        max_tokens=project.max_tokens or settings.LLM_MAX_TOKENS,
    )
    return ReplyPlan(
        request=request,
        provider=provider,
        provider_name=primary.provider.name if primary else (project.provider or None),
        model=model,
        setup_error=setup_error,
    )


def _no_reply(
    *, intent: IntentRule | None = None, canned: str | None = None, handoff: str | None = None
) -> ReplyPlan:
    """A plan that makes no LLM call: an intent's canned reply, or a handoff."""
    return ReplyPlan(
        request=CompletionRequest(model="", messages=(), temperature=0.0, max_tokens=1),
        provider=None,
        provider_name=None,
        model=None,
        intent=intent,
        canned=canned,
        handoff=handoff,
    )


def _targets(registry: ProviderRegistry, project: Project) -> tuple[list[Target], LLMError | None]:
    """The project's provider/model, then its fallbacks; those not configured here are left
    out (the first such error is kept for when none is left)."""
    wanted = [(project.provider, project.model)] + [
        (f.get("provider"), f.get("model")) for f in project.fallback_models or []
    ]
    targets: list[Target] = []
    first_error: LLMError | None = None
    for name, model in wanted:
        try:
            provider = registry.get(name)
        except LLMError as exc:
            first_error = first_error or exc
            continue
        target = Target(provider, registry.model_for(provider, model))
        if target not in targets:
            targets.append(target)
    return targets, (None if targets else first_error)
