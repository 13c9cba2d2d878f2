"""Keyword retrieval over a project's chunks: SQLite FTS5 `bm25`, Postgres `tsvector` with
`ts_rank_cd`. Only the asking project's chunks of enabled documents, at the version each
document serves (`index_version`: a document being indexed again serves its previous version
until the new one is swapped in), can match: the workspace and project are in every statement.

A question in natural language becomes an OR of its words, each quoted (FTS5) or passed
through `websearch_to_tsquery` (Postgres), so no character of it is query syntax."""

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

_POSTGRES_SQL = text(
    """
SELECT c.public_id, c.document_id, d.title, c.text, c.position, c.page_start,
    c.page_end, c.char_start, c.char_end, c.heading, ts_rank_cd(c.tsv, q.query) AS score
FROM websearch_to_tsquery('english', :query) AS q(query), kb_chunks AS c
JOIN kb_documents AS d ON d.id = c.document_id
WHERE c.tsv @@ q.query AND c.workspace_id = :workspace_id AND c.project_id = :project_id
    AND d.workspace_id = :workspace_id AND d.enabled AND c.version = d.index_version
ORDER BY score DESC, c.id LIMIT :limit
"""
)


_UUIDS = (bindparam("workspace_id", type_=Uuid()), bindparam("project_id", type_=Uuid()))
_SQLITE = _SQLITE_SQL.bindparams(*_UUIDS).columns(public_id=Uuid(), document_id=Uuid())
_POSTGRES = _POSTGRES_SQL.bindparams(*_UUIDS).columns(public_id=Uuid(), document_id=Uuid())


async def keyword(
    db: AsyncSession, workspace_id: uuid.UUID, project_id: uuid.UUID, question: str, limit: int
) -> list[Hit]:
    words = terms(question)
    if not words:
        return []
    params: dict[str, Any] = {"workspace_id": workspace_id, "project_id": project_id}
    if db.get_bind().dialect.name == "postgresql":
        statement, params["query"] = _POSTGRES, " or ".join(words)
    else:
        statement, params["query"] = _SQLITE, fts5_query(words)
    rows = (await db.execute(statement, params | {"limit": limit})).mappings()
    return [Hit(**{**row, "score": float(row["score"])}) for row in rows]
