"""When the bot should hand a conversation to a human, cheapest check first: the channel's
handoff keywords, then an intent with `action: "handoff"` (both in the reply plan, no LLM call),
then the model asking for it with a `HANDOFF:` line, then repeated failures (app/conversations/
bot.py)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_KEYWORDS = (
    "human",
    "agent",
    "operator",
    "customer service",
    "cs",
    "manusia",
    "petugas",
    "admin",
    "operator manusia",
)
DEFAULT_HANDOFF_MESSAGE = (
    "Baik, saya sambungkan dengan petugas kami. / "
    "OK, I am connecting you with a member of our team."
)
MARKER = re.compile(r"^\s*HANDOFF:\s*(?P<reason>.*)$", re.MULTILINE | re.IGNORECASE)
INSTRUCTION = (
    "If you cannot help with the user's request, or the user asks for a human, answer with one "
    "line `HANDOFF: <short reason>` and nothing else; a human operator will take over."
)


@dataclass(frozen=True)
class HandoffPolicy:
    keywords: tuple[str, ...] = DEFAULT_KEYWORDS
    message: str = DEFAULT_HANDOFF_MESSAGE
    ask_model: bool = True  # tell the model it may ask for a human

    def keyword_in(self, text: str) -> str | None:
        """The first handoff keyword in the text, matched case-insensitively on whole words."""
        lowered = text.casefold()
        for keyword in self.keywords:
            if re.search(rf"(?<!\w){re.escape(keyword.casefold())}(?!\w)", lowered):
                return keyword
        return None


def policy_of(settings: dict[str, Any]) -> HandoffPolicy:
    """A channel's policy from its `settings` (defaults for what is not set)."""
    keywords: Sequence[str] = settings.get("handoff_keywords") or DEFAULT_KEYWORDS
    return HandoffPolicy(
        keywords=tuple(k for k in keywords if k.strip()),
        message=settings.get("handoff_message") or DEFAULT_HANDOFF_MESSAGE,
        ask_model=bool(settings.get("llm_handoff", True)),
    )


def model_handoff(text: str) -> tuple[str, str | None]:
    """(the reply without a `HANDOFF:` line, the reason if the model asked for a human)."""
    found = MARKER.search(text)
    if found is None:
        return text, None
    reason = found.group("reason").strip() or "the model asked for a human"
    return MARKER.sub("", text).strip(), reason
