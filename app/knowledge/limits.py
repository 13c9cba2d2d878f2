"""A project's knowledge limits: the deployment's KNOWLEDGE_* settings, lowered by the
project's own `knowledge` overrides. An override may not raise a limit (422 when it tries):
the deployment's values protect the deployment (upload bodies are refused past
KNOWLEDGE_MAX_FILE_BYTES before any project is read), so they are ceilings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.core.config import Settings
from app.core.errors import ValidationFailedError
from app.knowledge.retrieval import check_method
from app.knowledge.schemas import KnowledgeSettings

# The project override -> the setting it may lower.
CEILINGS = {
    "max_documents": "KNOWLEDGE_MAX_DOCUMENTS_PER_PROJECT",
    "max_total_bytes": "KNOWLEDGE_MAX_BYTES_PER_PROJECT",
    "max_file_bytes": "KNOWLEDGE_MAX_FILE_BYTES",
    "max_pages": "KNOWLEDGE_MAX_PAGES",
}


@dataclass(frozen=True)
class KnowledgeLimits:
    max_documents: int
    max_total_bytes: int
    max_file_bytes: int
    max_pages: int


def limits_of(settings: Settings, knowledge: dict[str, Any] | None) -> KnowledgeLimits:
    overrides = knowledge or {}
    values = {}
    for name, setting in CEILINGS.items():
        ceiling = int(getattr(settings, setting))
        own = overrides.get(name)
        values[name] = ceiling if own is None else min(int(own), ceiling)
    return KnowledgeLimits(**values)


def check_overrides(settings: Settings, knowledge: KnowledgeSettings | None) -> None:
    """422 naming each override above the deployment's limit, or a search method that needs
    embeddings the deployment does not have."""
    if knowledge is not None:
        check_method(
            knowledge.search_method, bool(settings.EMBEDDINGS_BASE_URL), "knowledge.search_method"
        )
    details = []
    for name, setting in CEILINGS.items():
        own = getattr(knowledge, name, None)
        ceiling = int(getattr(settings, setting))
        if own is not None and own > ceiling:
            details.append(
                {
                    "field": f"knowledge.{name}",
                    "message": f"must be at most {ceiling} (this deployment's {setting})",
                    "type": "less_than_equal",
                }
            )
    if details:
        raise ValidationFailedError(
            "A project's knowledge limits may lower the deployment's, not raise them.",
            details=details,
        )
