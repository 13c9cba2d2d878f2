"""Keyword retrieval over a project's chunks: SQLite FTS5 `bm25`; Postgres `tsvector` with a
GIN index, weighted by BM25's IDF from `kb_terms`. Only the asking project's chunks of enabled
documents, at the version each document serves (`index_version`: a document being indexed
again serves its previous version until the new one is swapped in), can match: the workspace
and project are in every statement.

A question in natural language becomes an OR of its words, each quoted (FTS5) or read as
lexemes by `to_tsvector` (Postgres), so no character of it is query syntax."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, Uuid, bindparam, delete, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import KnowledgeChunk

MAX_TERMS = 32
_WORD = re.compile(r"\w+", re.UNICODE)
# Words too common to say anything (English and Indonesian); and FTS5's and websearch's
# operators, which must never be read as such.
_STOP = frozenset(
    """
    a an and are as at be by do does for from has have
    how i in is it of on or not near the this that to
    was what when where which who why will with you your ada apa dan
    di ini itu ke yang untuk dengan dari
    """.split()  # noqa: SIM905 - a word list
)


@dataclass
class Hit:
    public_id: uuid.UUID  # the chunk's
    document_id: uuid.UUID
    title: str
    text: str
    position: int
    page_start: int | None
    page_end: int | None
    char_start: int
    char_end: int
    heading: str | None
    score: float


def terms(question: str) -> list[str]:
    """The question's distinct words that can match, in order (at most MAX_TERMS)."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(question.lower()):
        if word not in _STOP and word.replace("_", ""):
            seen.setdefault(word, None)
    return list(seen)[:MAX_TERMS]


def fts5_query(words: list[str]) -> str:
    return " OR ".join('"' + word.replace('"', '""') + '"' for word in words)


# The filters on documents `d`, with their parameters from `filter_params`.
SQLITE_FILTERS = """
    AND (:documents IS NULL OR d.id IN (SELECT value FROM json_each(:documents)))
    AND (:metadata IS NULL OR NOT EXISTS (
        SELECT 1 FROM json_each(:metadata) AS f
        WHERE json_extract(d.metadata, '$."' || f.key || '"') IS NOT f.value))"""
POSTGRES_FILTERS = """
    AND (CAST(:documents AS uuid[]) IS NULL OR d.id = ANY (CAST(:documents AS uuid[])))
    AND (CAST(:metadata AS jsonb) IS NULL
        OR CAST(d.metadata AS jsonb) @> CAST(:metadata AS jsonb))"""

_SQLITE_SQL = text(
    """
SELECT c.public_id, c.document_id, d.title, c.text, c.position, c.page_start,
    c.page_end, c.char_start, c.char_end, c.heading, -bm25(kb_chunks_fts) AS score
FROM kb_chunks_fts
JOIN kb_chunks AS c ON c.id = kb_chunks_fts.rowid
JOIN kb_documents AS d ON d.id = c.document_id
WHERE kb_chunks_fts MATCH :query AND c.workspace_id = :workspace_id
    AND c.project_id = :project_id AND d.workspace_id = :workspace_id
    AND d.enabled AND c.version = d.index_version
{filters}
ORDER BY bm25(kb_chunks_fts) LIMIT :limit
""".replace("{filters}", SQLITE_FILTERS)
)

# Postgres: BM25's IDF from `kb_terms` (per project, how many chunks hold each lexeme). The
# question's lexemes are weighted by it, and the candidates come from the rarest of them, so
# common words never make every chunk a candidate and a search costs about the same at
# 100,000 chunks as at 10,000:
# - the chunks holding any of the rarest lexemes, rarest first for as long as the chunks
#   counted stay under CANDIDATE_BUDGET;
# - when even the rarest is in more chunks than that, the chunks holding all of the rarest
#   few, as many as it takes for the chunks expected to hold them all (if independent) to
#   fall under the budget;
# - and at most CANDIDATE_CAP of them whatever happens.
# A candidate scores the IDF of each of the question's lexemes it holds, plus `ts_rank`
# (under 1: term frequency breaks ties).
CANDIDATE_BUDGET = 1000
CANDIDATE_CAP = 2000
# Both are written into the statement, not bound: once Postgres plans the prepared statement
# generically (from its sixth run), a LIMIT it cannot see reads as "a few rows", and the plan
# becomes a walk over every chunk of the project's index, filtered by tsv: 14 ms became 180 at
# 100,000 chunks.
_POSTGRES_SQL = text(
    r"""
WITH total AS MATERIALIZED (
    SELECT greatest(coalesce(sum(chunk_count), 0), 1) AS chunks FROM kb_documents
    WHERE workspace_id = :workspace_id AND project_id = :project_id
), weights AS (
    SELECT k.term, k.chunks,
        ('''' || replace(replace(k.term, '\', '\\'), '''', '''''') || '''')::tsquery AS q,
        ln(1 + (t.chunks - k.chunks + 0.5) / (k.chunks + 0.5)) AS idf
    FROM kb_terms AS k, total AS t
    WHERE k.workspace_id = :workspace_id AND k.project_id = :project_id AND k.chunks > 0
        AND k.term = ANY (SELECT DISTINCT lexeme FROM unnest(to_tsvector('english', :query)))
), ranked AS (
    SELECT w.q, w.chunks, row_number() OVER r AS n, sum(w.chunks) OVER r AS running,
        t.chunks * exp(sum(ln(least(w.chunks::float / t.chunks, 1))) OVER r) AS together
    FROM weights AS w, total AS t
    WINDOW r AS (ORDER BY w.chunks, w.term)
), search AS (
    SELECT (SELECT string_agg(q::text, ' | ') FROM weights)::tsquery AS every,
        CASE WHEN (SELECT min(chunks) FROM weights) <= {budget}
            THEN (SELECT string_agg(q::text, ' | ') FROM ranked WHERE running <= {budget})
            ELSE (SELECT string_agg(q::text, ' & ') FROM ranked WHERE n <= coalesce(
                (SELECT min(n) FROM ranked WHERE together <= {budget}),
                (SELECT max(n) FROM ranked)))
        END::tsquery AS candidates
), found AS MATERIALIZED (
    -- The chunks first, by the GIN index, then their documents: planned on its own, so stale
    -- statistics of kb_documents cannot turn it into a walk over every document's chunks,
    SELECT c.id, c.public_id, c.document_id, c.version, c.text, c.position, c.page_start,
        c.page_end, c.char_start, c.char_end, c.heading,
        (SELECT sum(w.idf) FROM weights AS w WHERE c.tsv @@ w.q) + ts_rank(c.tsv, s.every)
            AS score
    FROM search AS s, kb_chunks AS c
    WHERE c.tsv @@ s.candidates AND c.workspace_id = :workspace_id
        AND c.project_id = :project_id
    LIMIT {cap}
)
SELECT c.public_id, c.document_id, d.title, c.text, c.position, c.page_start,
    c.page_end, c.char_start, c.char_end, c.heading, c.score
FROM found AS c
-- Each candidate's document by its key (OFFSET 0 keeps the lookup a lookup): however few
-- candidates a generic plan expects, it is never a scan of every document per candidate.
CROSS JOIN LATERAL (
    SELECT d.title FROM kb_documents AS d
    WHERE d.id = c.document_id AND d.workspace_id = :workspace_id AND d.enabled
        AND d.index_version = c.version {filters}
    OFFSET 0
) AS d
ORDER BY score DESC, c.id LIMIT :limit
""".replace("{filters}", POSTGRES_FILTERS)
    .replace("{budget}", str(CANDIDATE_BUDGET))
    .replace("{cap}", str(CANDIDATE_CAP))
)

# Postgres: keep `kb_terms` in step with the chunks, in the statement that writes or deletes
# them. `{changes}` is a relation of (tsv, delta): +1 for a chunk added, -1 for one deleted;
# each of its lexemes moves by the sum (a lexeme in as many chunks as before is not written).
# Terms are written in order, so two documents of a project indexed at once lock their shared
# terms in the same order (no deadlock); in the "C" collation, as the column is (migration
# 0015: compared byte by byte).
MOVE_TERMS = """
moved AS (
    SELECT u.term COLLATE "C" AS term, sum(v.delta) AS delta
    FROM {changes} AS v, unnest(tsvector_to_array(v.tsv)) AS u(term)
    GROUP BY 1 HAVING sum(v.delta) <> 0
), counted AS (
    INSERT INTO kb_terms (project_id, term, workspace_id, chunks)
    SELECT {project_id}, m.term, :workspace_id, m.delta FROM moved AS m ORDER BY m.term
    ON CONFLICT (project_id, term) DO UPDATE SET chunks = kb_terms.chunks + excluded.chunks
)"""

# Every version of a document's chunks but `:keep` (all of them for NULL) is deleted, and the
# chunks of `:keep` (not counted yet) are counted: the whole document's effect on `kb_terms`
# in one ordered pass.
_SWAP_OUT_SQL = text(
    """
WITH gone AS (
    DELETE FROM kb_chunks WHERE workspace_id = :workspace_id AND document_id = :document_id
        AND version IS DISTINCT FROM :keep
    RETURNING tsv
), changes AS (
    SELECT tsv, -1 AS delta FROM gone
    UNION ALL
    SELECT tsv, 1 FROM kb_chunks
    WHERE workspace_id = :workspace_id AND document_id = :document_id AND version = :keep
), {move_terms}
SELECT count(*) FROM gone
""".replace("{move_terms}", MOVE_TERMS.strip())
    .replace("{changes}", "changes")
    .replace("{project_id}", ":project_id")
)

_UUIDS = (bindparam("workspace_id", type_=Uuid()), bindparam("project_id", type_=Uuid()))
_SQLITE = _SQLITE_SQL.bindparams(*_UUIDS).columns(public_id=Uuid(), document_id=Uuid())
_POSTGRES = _POSTGRES_SQL.bindparams(*_UUIDS).columns(public_id=Uuid(), document_id=Uuid())
_SWAP_OUT = _SWAP_OUT_SQL.bindparams(
    *_UUIDS, bindparam("document_id", type_=Uuid()), bindparam("keep", type_=Integer())
)


async def swap_out(
    db: AsyncSession,
    workspace_id: uuid.UUID,
    project_id: uuid.UUID,
    document_id: uuid.UUID,
    keep: int | None,
) -> None:
    """Delete the document's chunks of every version but `keep` (all of them for None), with
    their keyword index rows: SQLite's by trigger; on Postgres, in the same statement, the
    deleted chunks' lexemes are counted out of `kb_terms` and those of `keep`'s (written
    since, and not counted yet) in."""
    if db.get_bind().dialect.name == "postgresql":
        params = {"workspace_id": workspace_id, "project_id": project_id, "keep": keep}
        await db.execute(_SWAP_OUT, params | {"document_id": document_id})
        return
    condition = (KnowledgeChunk.workspace_id == workspace_id) & (
        KnowledgeChunk.document_id == document_id
    )
    if keep is not None:
        condition &= KnowledgeChunk.version != keep
    await db.execute(delete(KnowledgeChunk).where(condition))


@dataclass(frozen=True)
class Filters:
    """Only these documents, and only documents whose metadata holds every one of these keys
    with these values (None: no such condition)."""

    documents: tuple[uuid.UUID, ...] | None = None
    metadata: dict[str, str | int | float | bool] | None = None


NO_FILTERS = Filters()


async def keyword(
    db: AsyncSession,
    workspace_id: uuid.UUID,
    project_id: uuid.UUID,
    question: str,
    limit: int,
    filters: Filters = NO_FILTERS,
) -> list[Hit]:
    words = terms(question)
    if not words:
        return []
    params: dict[str, Any] = {"workspace_id": workspace_id, "project_id": project_id}
    if db.get_bind().dialect.name == "postgresql":
        statement, params["query"] = _POSTGRES, " ".join(words)
    else:
        statement, params["query"] = _SQLITE, fts5_query(words)
    params |= filter_params(db, filters)
    rows = (await db.execute(statement, params | {"limit": limit})).mappings()
    return [Hit(**{**row, "score": float(row["score"])}) for row in rows]


def filter_params(db: AsyncSession, filters: Filters) -> dict[str, Any]:
    """`:documents` and `:metadata` for the dialect's filters (None: no such condition)."""
    metadata = None if filters.metadata is None else json.dumps(filters.metadata)
    documents: Any = None
    if filters.documents is not None:
        if db.get_bind().dialect.name == "postgresql":
            documents = list(filters.documents)
        else:
            documents = json.dumps([d.hex for d in filters.documents])  # as SQLite stores them
    return {"documents": documents, "metadata": metadata}
