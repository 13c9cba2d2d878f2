"""Project slugs: a readable, URL-safe name unique in the workspace (e.g. `support-bot`)."""

from __future__ import annotations

import re
import secrets
import unicodedata

SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"


def slugify(name: str) -> str:
    """`"Support Bot (ID)"` -> `"support-bot-id"`; accents dropped; `"project"` if none left."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48].strip("-") or "project"


def with_suffix(slug: str) -> str:
    """The slug made unique by a short random suffix."""
    return f"{slug[:41]}-{secrets.token_hex(3)}"
