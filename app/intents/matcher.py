"""Which intent a message selects: keyword and regex patterns, matched with a time bound.

Regexes come from users, so they are compiled with the `regex` module and every search runs
with a timeout: a pattern that backtracks catastrophically is abandoned (and logged) instead of
holding the event loop. The whole match of one message has one budget, `INTENT_MATCH_TIMEOUT_MS`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import regex

logger = logging.getLogger("app.intents")

FLAGS = regex.IGNORECASE | regex.UNICODE | regex.V0


@dataclass(frozen=True, slots=True)
class IntentRule:
    """What matching needs of an intent (a plain value, cacheable and detached from the DB)."""

    name: str
    patterns: tuple[tuple[str, str], ...]  # (type, value)
    reply: str
    links: tuple[tuple[str, str], ...]  # (text, url)
    requires_login: bool
    action: str = "reply"  # or "handoff": on a channel, hand the conversation to a human

    @classmethod
    def of(cls, intent: Any) -> IntentRule:
        return cls(
            name=intent.name,
            patterns=tuple((p["type"], p["value"]) for p in intent.patterns),
            reply=intent.reply,
            links=tuple((link["text"], link["url"]) for link in intent.links),
            requires_login=intent.requires_login,
            action=intent.action or "reply",
        )


def regex_problem(pattern: str) -> str | None:
    """Why a user-supplied regex cannot be used, or None."""
    try:
        regex.compile(pattern, FLAGS)
    except (regex.error, RecursionError, OverflowError) as exc:
        return f"is not a valid regular expression ({exc})"
    return None


@lru_cache(maxsize=4096)
def _compiled(kind: str, value: str) -> regex.Pattern[str]:
    if kind == "keyword":
        # Whole words, any case, any run of whitespace between the keyword's words.
        words = [regex.escape(word) for word in value.split()]
        return regex.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", FLAGS)
    return regex.compile(value, FLAGS)


def match_intent(
    rules: Sequence[IntentRule],
    message: str,
    *,
    timeout_seconds: float,
    clock: Callable[[], float] = time.monotonic,
) -> IntentRule | None:
    """The first rule (in the given order: priority) with a pattern found in `message`.

    Once the budget is spent, no later rule is tried: a lower-priority intent must not answer
    because a higher-priority pattern was too slow to decide."""
    deadline = clock() + timeout_seconds
    for rule in rules:
        for kind, value in rule.patterns:
            remaining = deadline - clock()
            if remaining <= 0:
                logger.warning(
                    "intent matching ran out of time intent=%s budget_ms=%d",
                    rule.name,
                    int(timeout_seconds * 1000),
                )
                return None
            try:
                if _compiled(kind, value).search(message, timeout=remaining):
                    return rule
            except TimeoutError:
                logger.warning("intent pattern timed out intent=%s type=%s", rule.name, kind)
                return None
    return None
