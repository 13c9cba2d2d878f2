"""One search of a project's knowledge base, by the method asked for:

- `keyword`: app/knowledge/search.py (FTS5 bm25, or Postgres full text weighted by IDF);
- `semantic`: app/knowledge/vectors.py (the question's embedding against the chunks');
- `hybrid`: both, fused by reciprocal rank fusion.

Without a method, a project searches `hybrid` when the deployment has an embedding model and
`keyword` otherwise. The question is embedded by the caller (`embed_question`), before any
transaction where it can be: a turn must not hold its transaction open across an HTTP call."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import ValidationFailedError
from app.knowledge import search, vectors
from app.knowledge.search import Filters, Hit
from app.llm.base import LLMError
from app.llm.embeddings import Embedder, Vector

logger = logging.getLogger("app.knowledge")

SearchMethod = Literal["keyword", "semantic", "hybrid"]
SEARCH_METHODS: tuple[SearchMethod, ...] = ("keyword", "semantic", "hybrid")
HYBRID_DEPTH = 20  # each ranking contributes at least this many chunks to the fusion


@dataclass(frozen=True)
class Ranked:
    hit: Hit  # its `score`: the method's (bm25/IDF, cosine, or the fused RRF score)
    keyword_rank: int | None = None  # 1-based, in each ranking that holds it
    semantic_rank: int | None = None


def method_of(wanted: SearchMethod | None, embedder: Embedder | None) -> SearchMethod:
    """The method a search uses: the one asked for, or the deployment's default."""
    if wanted is not None:
        return wanted
    return "hybrid" if embedder is not None else "keyword"


def check_method(wanted: SearchMethod | None, embeddings: bool, field: str) -> None:
    """422 when `wanted` needs embeddings the deployment does not have."""
    if wanted in ("semantic", "hybrid") and not embeddings:
        problem = (
            f"'{wanted}' needs an embedding model, and this deployment has none "
            "(EMBEDDINGS_BASE_URL); use 'keyword'"
        )
        raise ValidationFailedError(
            f"The request is invalid: {field}: {problem}.",
            code="embeddings_not_configured",
            details=[{"field": field, "message": problem, "type": "value_error"}],
        )


async def embed_question(
    embedder: Embedder | None, method: SearchMethod, question: str
) -> Vector | None:
    """The question's vector when `method` uses one; None for `keyword`, or when the
    provider fails (logged: the search then runs by keyword)."""
    if method == "keyword" or embedder is None:
        return None
    try:
        return await embedder.query(question)
    except LLMError as exc:
        logger.warning(
            "question not embedded, searching by keyword: %s (%s)", exc, type(exc).__name__
        )
        return None


async def find(
    db: AsyncSession,
    embedder: Embedder | None,
    workspace_id: uuid.UUID,
    project_id: uuid.UUID,
    question: str,
    limit: int,
    *,
    method: SearchMethod,
    vector: Vector | None,
    filters: Filters = search.NO_FILTERS,
) -> list[Ranked]:
    """The best `limit` chunks, best first. Without a vector (keyword, or the embedding
    failed) this is keyword search: one statement."""
    if vector is None or embedder is None or method == "keyword":
        hits = await search.keyword(db, workspace_id, project_id, question, limit, filters)
        return [Ranked(hit, keyword_rank=n) for n, hit in enumerate(hits, start=1)]
    depth = limit if method == "semantic" else max(limit * 2, HYBRID_DEPTH)
    nearest = await vectors.semantic(
        db, vectors.CACHE, workspace_id, project_id, vector, embedder.model, depth, filters
    )
    if method == "semantic":
        return [Ranked(hit, semantic_rank=n) for n, hit in enumerate(nearest, start=1)]
    keyword = await search.keyword(db, workspace_id, project_id, question, depth, filters)
    return [
        Ranked(hit, keyword_rank=ranks[0], semantic_rank=ranks[1])
        for hit, ranks in vectors.fuse([keyword, nearest], limit)
    ]
