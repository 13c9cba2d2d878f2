"""Keyword retrieval over a project's chunks: SQLite FTS5 `bm25`; Postgres `tsvector` with a
GIN index, weighted by BM25's IDF from `kb_terms`. Only the asking project's chunks of enabled
documents, at the version each document serves (`index_version`: a document being indexed
again serves its previous version until the new one is swapped in), can match: the workspace
and project are in every statement.

A question in natural language becomes an OR of its words, each quoted (FTS5) or read as
lexemes by `to_tsvector` (Postgres), so no character of it is query syntax."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Uuid, bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

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
ORDER BY bm25(kb_chunks_fts) LIMIT :limit
"""
)

# Postgres: BM25's IDF from `kb_terms` (per project, how many chunks hold each lexeme). The
# question's lexemes are weighted by it. The candidates are the chunks holding its rarest
# lexemes: rarest first, for as long as the chunks counted so far stay under CANDIDATE_BUDGET
# (the rarest one always), so common words never make every chunk a candidate and a search
# costs about the same at 100,000 chunks as at 10,000. A chunk that has none of them lacks the
# question's most telling words. A candidate scores the IDF of each of the question's lexemes
# it holds, plus `ts_rank` (under 1: term frequency breaks ties).
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
), chosen AS (
    SELECT q FROM (
        SELECT q, chunks, sum(chunks) OVER (ORDER BY chunks, term) AS running FROM weights
    ) AS ranked
    WHERE running <= :budget OR running = chunks
), search AS (
    SELECT (SELECT string_agg(q::text, ' | ') FROM weights)::tsquery AS every,
        (SELECT string_agg(q::text, ' | ') FROM chosen)::tsquery AS candidates
), found AS MATERIALIZED (
    -- The chunks first, by the GIN index, then their documents: planned on its own, so stale
    -- statistics of kb_documents cannot turn it into a walk over every document's chunks.
    SELECT c.id, c.public_id, c.document_id, c.version, c.text, c.position, c.page_start,
        c.page_end, c.char_start, c.char_end, c.heading,
        (SELECT sum(w.idf) FROM weights AS w WHERE c.tsv @@ w.q) + ts_rank(c.tsv, s.every)
            AS score
    FROM search AS s, kb_chunks AS c
    WHERE c.tsv @@ s.candidates AND c.workspace_id = :workspace_id
        AND c.project_id = :project_id
)
SELECT c.public_id, c.document_id, d.title, c.text, c.position, c.page_start,
    c.page_end, c.char_start, c.char_end, c.heading, c.score
FROM found AS c
JOIN kb_documents AS d ON d.id = c.document_id
WHERE d.workspace_id = :workspace_id AND d.enabled AND c.version = d.index_version
ORDER BY score DESC, c.id LIMIT :limit
"""
)

# Postgres: keep `kb_terms` in step with a document's chunks. `:keep` is the version that
# stays (its lexemes count +1 a chunk), every other version of the document is about to be
# deleted (-1); None: the whole document goes. Terms are written in order, so two documents
# of a project indexed at once lock their shared terms in the same order (no deadlock).
_TERMS_SQL = text(
    """
INSERT INTO kb_terms (project_id, term, workspace_id, chunks)
SELECT c.project_id, t.lexeme, c.workspace_id,
    sum(CASE WHEN c.version = :keep THEN 1 ELSE -1 END)
FROM kb_chunks AS c, unnest(c.tsv) AS t
WHERE c.workspace_id = :workspace_id AND c.document_id = :document_id
GROUP BY c.project_id, c.workspace_id, t.lexeme
ORDER BY t.lexeme
ON CONFLICT (project_id, term) DO UPDATE SET chunks = kb_terms.chunks + excluded.chunks
"""
)
CANDIDATE_BUDGET = 1000

_UUIDS = (bindparam("workspace_id", type_=Uuid()), bindparam("project_id", type_=Uuid()))
_SQLITE = _SQLITE_SQL.bindparams(*_UUIDS).columns(public_id=Uuid(), document_id=Uuid())
_POSTGRES = _POSTGRES_SQL.bindparams(*_UUIDS).columns(public_id=Uuid(), document_id=Uuid())
_TERMS = _TERMS_SQL.bindparams(
    bindparam("workspace_id", type_=Uuid()), bindparam("document_id", type_=Uuid())
)


async def count_terms(
    db: AsyncSession, workspace_id: uuid.UUID, document_id: uuid.UUID, keep: int | None
) -> None:
    """Before a document's chunks of every version but `keep` are deleted (all of them for
    None): its lexemes' chunk counts move by the difference (Postgres; SQLite's FTS5 keeps
    its own)."""
    if db.get_bind().dialect.name == "postgresql":
        params = {"workspace_id": workspace_id, "document_id": document_id, "keep": keep}
        await db.execute(_TERMS, params)


async def keyword(
    db: AsyncSession, workspace_id: uuid.UUID, project_id: uuid.UUID, question: str, limit: int
) -> list[Hit]:
    words = terms(question)
    if not words:
        return []
    params: dict[str, Any] = {"workspace_id": workspace_id, "project_id": project_id}
    if db.get_bind().dialect.name == "postgresql":
        statement, params["query"] = _POSTGRES, " ".join(words)
        params["budget"] = CANDIDATE_BUDGET
    else:
        statement, params["query"] = _SQLITE, fts5_query(words)
    rows = (await db.execute(statement, params | {"limit": limit})).mappings()
    return [Hit(**{**row, "score": float(row["score"])}) for row in rows]
