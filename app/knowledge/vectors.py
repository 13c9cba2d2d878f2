"""Semantic search, when the deployment configures an embedding provider (EMBEDDINGS_*: any
OpenAI-compatible `/embeddings`, called through the resilient provider layer like a
completion: retries with backoff, a circuit breaker, one deadline).

- Vectors live beside their chunks in `kb_embeddings`, one per chunk and model, as float32
  bytes of unit length; they go with their chunk (ON DELETE CASCADE), so a deleted document or
  an old version is never found by meaning either. A new version of a document takes the
  vectors of its chunks whose text did not change (by content hash) in the swap's transaction;
  the rest are embedded by the `knowledge.embed` job afterwards, while keyword search already
  serves the new version.
- Search is exact: the question's vector against every vector of the project's enabled
  documents, in numpy. Each process keeps the vectors of each document version it read (and
  each project's as one matrix while its documents are unchanged), up to
  KNOWLEDGE_VECTOR_CACHE_MB; the documents themselves (which are enabled, which version, how
  many chunks are embedded, the filters) are read on every search, so the cache can only be
  stale in what it no longer needs.
- Keyword and semantic results are fused by reciprocal rank fusion (k = 60).

Postgres's pgvector would do the scan in the database; it is not installable for the
PostgreSQL 15 of this deployment's platform, and an exact scan of a project's vectors in numpy
costs milliseconds at our scale (the retrieval benchmark measures it)."""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from sqlalchemy import Uuid, bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.knowledge.search import POSTGRES_FILTERS, SQLITE_FILTERS, Filters, Hit, filter_params
from app.llm.embeddings import Vector

logger = logging.getLogger("app.knowledge")

RRF_K = 60


def encode(vector: Vector) -> bytes:
    return vector.astype("<f4").tobytes()


def decode(data: bytes, dims: int) -> Vector:
    return np.frombuffer(data, dtype="<f4", count=dims).astype(np.float32)


# -- storage -------------------------------------------------------------------------------

# A new version's chunks take the vectors of the previous version's chunks with the same text.
# Runs in the swap's transaction, before the old version is deleted.
_REUSE_SQL = text(
    """
INSERT INTO kb_embeddings (chunk_id, model, document_id, dims, vector, workspace_id)
SELECT n.id, e.model, n.document_id, e.dims, e.vector, n.workspace_id
FROM kb_chunks AS n
JOIN kb_embeddings AS e ON e.chunk_id = (
    SELECT o.id FROM kb_chunks AS o JOIN kb_embeddings AS x ON x.chunk_id = o.id
    WHERE o.workspace_id = n.workspace_id AND o.document_id = n.document_id
        AND o.content_hash = n.content_hash AND o.version <> n.version AND x.model = :model
    ORDER BY o.id LIMIT 1
) AND e.model = :model
WHERE n.workspace_id = :workspace_id AND n.document_id = :document_id
    AND n.version = :version
"""
).bindparams(bindparam("workspace_id", type_=Uuid()), bindparam("document_id", type_=Uuid()))

_MISSING_SQL = text(
    """
SELECT c.id, c.text FROM kb_chunks AS c
WHERE c.workspace_id = :workspace_id AND c.document_id = :document_id
    AND c.version = :version
    AND NOT EXISTS (
        SELECT 1 FROM kb_embeddings AS e WHERE e.chunk_id = c.id AND e.model = :model)
ORDER BY c.position LIMIT :limit
"""
).bindparams(bindparam("workspace_id", type_=Uuid()), bindparam("document_id", type_=Uuid()))

_COUNT_SQL = text(
    """
SELECT count(*) FROM kb_embeddings AS e JOIN kb_chunks AS c ON c.id = e.chunk_id
WHERE e.workspace_id = :workspace_id AND e.document_id = :document_id AND e.model = :model
    AND c.version = :version
"""
).bindparams(bindparam("workspace_id", type_=Uuid()), bindparam("document_id", type_=Uuid()))


async def reuse(
    db: AsyncSession, workspace_id: uuid.UUID, document_id: uuid.UUID, version: int, model: str
) -> int:
    """Copy the vectors of unchanged chunks to `version`; how many chunks of it have one."""
    await db.execute(_REUSE_SQL, _version(workspace_id, document_id, version, model))
    return await embedded(db, workspace_id, document_id, version, model)


async def embedded(
    db: AsyncSession, workspace_id: uuid.UUID, document_id: uuid.UUID, version: int, model: str
) -> int:
    params = _version(workspace_id, document_id, version, model)
    return int(await db.scalar(_COUNT_SQL, params) or 0)


async def missing(
    db: AsyncSession,
    workspace_id: uuid.UUID,
    document_id: uuid.UUID,
    version: int,
    model: str,
    limit: int,
) -> list[tuple[int, str]]:
    """Up to `limit` chunks of `version` without a vector of `model`: (id, text), in order."""
    params = _version(workspace_id, document_id, version, model) | {"limit": limit}
    return [(int(row[0]), str(row[1])) for row in await db.execute(_MISSING_SQL, params)]


def _version(
    workspace_id: uuid.UUID, document_id: uuid.UUID, version: int, model: str
) -> dict[str, Any]:
    """The parameters naming one version of a document, and the model."""
    return {
        "workspace_id": workspace_id,
        "document_id": document_id,
        "version": version,
        "model": model,
    }


# -- search --------------------------------------------------------------------------------

_DOCUMENTS_SQL = """
SELECT d.id, d.index_version, d.chunks_embedded FROM kb_documents AS d
WHERE d.workspace_id = :workspace_id AND d.project_id = :project_id AND d.enabled
    AND d.chunks_embedded > 0 {filters}
"""
_DOCUMENTS = {
    dialect: text(_DOCUMENTS_SQL.replace("{filters}", filters))
    .bindparams(bindparam("workspace_id", type_=Uuid()), bindparam("project_id", type_=Uuid()))
    .columns(id=Uuid())
    for dialect, filters in (("sqlite", SQLITE_FILTERS), ("postgresql", POSTGRES_FILTERS))
}

_VECTORS_SQL = (
    text(
        """
SELECT e.document_id, e.chunk_id, e.dims, e.vector
FROM kb_embeddings AS e
JOIN kb_chunks AS c ON c.id = e.chunk_id
JOIN kb_documents AS d ON d.id = e.document_id
WHERE e.workspace_id = :workspace_id AND d.workspace_id = :workspace_id
    AND e.document_id IN :documents AND e.model = :model AND c.version = d.index_version
ORDER BY e.document_id, c.position
"""
    )
    .bindparams(
        bindparam("workspace_id", type_=Uuid()),
        bindparam("documents", type_=Uuid(), expanding=True),
    )
    .columns(document_id=Uuid())
)

_HITS_SQL = (
    text(
        """
SELECT c.id, c.public_id, c.document_id, d.title, c.text, c.position, c.page_start,
    c.page_end, c.char_start, c.char_end, c.heading
FROM kb_chunks AS c JOIN kb_documents AS d ON d.id = c.document_id
WHERE c.workspace_id = :workspace_id AND d.workspace_id = :workspace_id
    AND c.project_id = :project_id AND c.id IN :ids AND d.enabled
    AND c.version = d.index_version
"""
    )
    .bindparams(
        bindparam("workspace_id", type_=Uuid()),
        bindparam("project_id", type_=Uuid()),
        bindparam("ids", expanding=True),
    )
    .columns(public_id=Uuid(), document_id=Uuid())
)


@dataclass(frozen=True)
class _Block:
    """The vectors of one version of one document, as far as they are embedded."""

    ids: np.ndarray[Any, np.dtype[np.int64]]
    matrix: Vector  # (len(ids), dims)

    @property
    def nbytes(self) -> int:
        return int(self.ids.nbytes + self.matrix.nbytes)


class VectorCache:
    """Blocks by (document, version, chunks embedded, model): a key never changes meaning, so
    nothing needs invalidating; least recently used blocks go past `max_bytes`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._blocks: OrderedDict[tuple[Any, ...], _Block] = OrderedDict()

    def get(self, key: tuple[Any, ...]) -> _Block | None:
        block = self._blocks.get(key)
        if block is not None:
            self._blocks.move_to_end(key)
        return block

    def put(self, key: tuple[Any, ...], block: _Block) -> None:
        if block.nbytes > self.max_bytes or key in self._blocks:
            return
        self._blocks[key] = block
        self.size += block.nbytes
        while self.size > self.max_bytes:
            _, old = self._blocks.popitem(last=False)
            self.size -= old.nbytes


# The process's cache; Background sizes it from KNOWLEDGE_VECTOR_CACHE_MB at startup.
CACHE = VectorCache(256 * 1024 * 1024)


async def semantic(
    db: AsyncSession,
    cache: VectorCache,
    workspace_id: uuid.UUID,
    project_id: uuid.UUID,
    question: Vector,
    model: str,
    limit: int,
    filters: Filters,
) -> list[Hit]:
    """The `limit` chunks nearest to `question` (cosine, best first) among the project's
    enabled documents that pass `filters`."""
    params: dict[str, Any] = {"workspace_id": workspace_id, "project_id": project_id}
    statement = _DOCUMENTS[db.get_bind().dialect.name]
    found = await db.execute(statement, params | filter_params(db, filters))
    documents = [(row[0], int(row[1]), int(row[2])) for row in found]
    # The project's documents as one matrix, kept while none of them changes; built from
    # each document's block, so a change reloads only that document's vectors.
    view_key = ("view", model, tuple(documents))
    view = cache.get(view_key)
    if view is None:
        blocks: list[_Block] = []
        absent: dict[uuid.UUID, tuple[Any, ...]] = {}
        for document_id, version, count in documents:
            key = (document_id, version, count, model)
            block = cache.get(key)
            if block is None:
                absent[document_id] = key
            else:
                blocks.append(block)
        if absent:
            for document_id, block in (await _load(db, workspace_id, list(absent), model)).items():
                cache.put(absent[document_id], block)
                blocks.append(block)
        blocks = [b for b in blocks if b.matrix.shape[1] == question.shape[0]]
        if not blocks:
            return []
        view = _Block(
            np.concatenate([b.ids for b in blocks]), np.vstack([b.matrix for b in blocks])
        )
        cache.put(view_key, view)
    if view.matrix.shape[1] != question.shape[0]:
        return []
    ids, scores = view.ids, view.matrix @ question
    take = min(len(ids), limit)
    best = np.argpartition(-scores, take - 1)[:take]
    best = best[np.argsort(-scores[best], kind="stable")]
    similarity = {int(ids[i]): float(scores[i]) for i in best}
    rows = (await db.execute(_HITS_SQL, params | {"ids": list(similarity)})).mappings()
    hits = [
        Hit(**{k: v for k, v in row.items() if k != "id"}, score=similarity[int(row["id"])])
        for row in rows
    ]
    hits.sort(key=lambda hit: -hit.score)
    return hits


async def _load(
    db: AsyncSession, workspace_id: uuid.UUID, documents: list[uuid.UUID], model: str
) -> dict[uuid.UUID, _Block]:
    params = {"workspace_id": workspace_id, "documents": documents, "model": model}
    gathered: dict[uuid.UUID, tuple[list[int], list[Vector]]] = {}
    for document_id, chunk_id, dims, data in await db.execute(_VECTORS_SQL, params):
        ids, vectors = gathered.setdefault(document_id, ([], []))
        ids.append(int(chunk_id))
        vectors.append(decode(data, int(dims)))
    blocks = {}
    for document_id, (ids, vectors) in gathered.items():
        widths = {v.shape[0] for v in vectors}
        if len(widths) != 1:  # a model that changed its width: only the newest width counts
            width = vectors[-1].shape[0]
            pairs = [(i, v) for i, v in zip(ids, vectors, strict=True) if v.shape[0] == width]
            ids, vectors = [i for i, _ in pairs], [v for _, v in pairs]
        blocks[document_id] = _Block(np.asarray(ids, dtype=np.int64), np.vstack(vectors))
    return blocks


def fuse(rankings: Sequence[Sequence[Hit]], limit: int) -> list[tuple[Hit, list[int | None]]]:
    """Reciprocal rank fusion: a chunk scores the sum of 1 / (RRF_K + rank) over the rankings
    that hold it (rank from 1). Best first, with the chunk's rank in each ranking (None where
    it is absent); the score on the hit is the fused one."""
    fused: dict[uuid.UUID, tuple[Hit, list[int | None], float]] = {}
    for position, ranking in enumerate(rankings):
        for rank, hit in enumerate(ranking, start=1):
            entry = fused.get(hit.public_id)
            if entry is None:
                entry = (hit, [None] * len(rankings), 0.0)
            ranks = entry[1]
            ranks[position] = rank
            fused[hit.public_id] = (entry[0], ranks, entry[2] + 1.0 / (RRF_K + rank))
    ordered = sorted(fused.values(), key=lambda item: -item[2])[:limit]
    return [(replace(hit, score=score), ranks) for hit, ranks, score in ordered]
