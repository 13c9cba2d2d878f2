"""Which limits a chat turn counts against: the caller (user or API key), the project, and the
end user within the project, each with its own per-minute rate and daily token budget."""

from __future__ import annotations

from dataclasses import dataclass

from app.auth.dependencies import Principal
from app.core.config import Settings
from app.core.ratelimit import RateLimits, Rule
from app.models import Project


def _pick(own: int | None, default: int) -> int:
    return default if own is None else own


@dataclass(frozen=True)
class TurnLimits:
    requests: list[Rule]
    tokens: list[Rule]


def turn_limits(settings: Settings, principal: Principal, project: Project) -> TurnLimits:
    requests: list[Rule] = []
    tokens: list[Rule] = []
    if principal.is_api_key:
        key = (str(principal.api_key_id),)
        requests.append(
            Rule(
                "api_key",
                key,
                _pick(principal.key_rate_limit, settings.RATE_LIMIT_API_KEY_PER_MINUTE),
            )
        )
        tokens.append(
            Rule(
                "api_key",
                key,
                _pick(principal.key_tokens_per_day, settings.QUOTA_API_KEY_TOKENS_PER_DAY),
                "day",
            )
        )
    elif principal.user_id is not None:
        user = (str(principal.user_id),)
        requests.append(Rule("user", user, settings.RATE_LIMIT_USER_PER_MINUTE))
        tokens.append(Rule("user", user, settings.QUOTA_USER_TOKENS_PER_DAY, "day"))
    project_key = (str(project.id),)
    requests.append(
        Rule(
            "project",
            project_key,
            _pick(project.rate_limit_per_minute, settings.RATE_LIMIT_PROJECT_PER_MINUTE),
        )
    )
    tokens.append(
        Rule(
            "project",
            project_key,
            _pick(project.tokens_per_day, settings.QUOTA_PROJECT_TOKENS_PER_DAY),
            "day",
        )
    )
    if principal.end_user_id is not None:
        end_user = (str(project.id), principal.end_user_id)
        requests.append(
            Rule(
                "end_user",
                end_user,
                _pick(
                    project.end_user_rate_limit_per_minute,
                    settings.RATE_LIMIT_END_USER_PER_MINUTE,
                ),
            )
        )
        tokens.append(
            Rule(
                "end_user",
                end_user,
                _pick(project.end_user_tokens_per_day, settings.QUOTA_END_USER_TOKENS_PER_DAY),
                "day",
            )
        )
    return TurnLimits(requests, tokens)


async def admit_turn(
    limits: RateLimits, settings: Settings, principal: Principal, project: Project
) -> TurnLimits:
    """Count the turn against every rate limit and check every token budget (429 if not)."""
    rules = turn_limits(settings, principal, project)
    await limits.check_quota(rules.tokens)
    await limits.hit(rules.requests)
    return rules
