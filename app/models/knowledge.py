"""Knowledge bases: a project's documents, their original bytes and their indexed chunks.

Keyword search needs one structure per database that the ORM does not map (migration 0012):
on SQLite the FTS5 table `kb_chunks_fts` (external content: `kb_chunks`, kept in step by
triggers, so a chunk and its index row are written and deleted in one transaction); on
Postgres the generated column `kb_chunks.tsv` with its GIN index, and `kb_terms` (migration
0013: per project, how many chunks hold each lexeme; app/knowledge/search.py keeps it).
`include_name` keeps them out of the models-versus-migrations comparison.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, Timestamps, UUIDPrimaryKey, WorkspaceScoped

FTS_TABLE = "kb_chunks_fts"
TERMS_TABLE = "kb_terms"
TSV_COLUMN = "tsv"


class DocumentStatus(enum.StrEnum):
    QUEUED = "queued"
    INDEXING = "indexing"
    READY = "ready"
    FAILED = "failed"


class DocumentSource(enum.StrEnum):
    UPLOAD = "upload"
    TEXT = "text"
    URL = "url"


class KnowledgeDocument(UUIDPrimaryKey, WorkspaceScoped, Timestamps, Base):
    __tablename__ = "kb_documents"

    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(10))
    filename: Mapped[str | None] = mapped_column(String(255))
    # A `url` document's address: fetched (through the outbound guard) by its indexing job.
    source_url: Mapped[str | None] = mapped_column(String(2000))
    mime_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    # `metadata` is the declarative base's own attribute.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    enabled: Mapped[bool] = mapped_column(default=True)
    status: Mapped[str] = mapped_column(String(10), default=DocumentStatus.QUEUED)
    error_code: Mapped[str | None] = mapped_column(String(40))
    error_message: Mapped[str | None] = mapped_column(Text)
    page_count: Mapped[int | None]
    char_count: Mapped[int | None]
    chunk_count: Mapped[int] = mapped_column(default=0)
    # Chunks of the served version with a vector of the deployment's EMBEDDINGS_MODEL (0 when
    # semantic search is off): embedding runs after the document is `ready` for keywords.
    chunks_embedded: Mapped[int] = mapped_column(default=0)
    # The chunks' version retrieval reads (0: none yet). Indexing writes version + 1, then
    # swaps it in and deletes the old one, in one transaction.
    index_version: Mapped[int] = mapped_column(default=0)
    indexed_at: Mapped[datetime | None]
    created_by: Mapped[uuid.UUID | None]

    __table_args__ = (Index("ix_kb_documents_project", "project_id", "created_at"),)


class KnowledgeFilePart(WorkspaceScoped, Base):
    """The original bytes, in parts of at most 1 MiB: an upload streams in and out of the
    database without being held whole in memory, and commits with its document."""

    __tablename__ = "kb_file_parts"

    document_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("kb_documents.id", ondelete="CASCADE"), primary_key=True
    )
    part: Mapped[int] = mapped_column(primary_key=True)
    content: Mapped[bytes] = mapped_column(LargeBinary)


class KnowledgeChunk(WorkspaceScoped, Base):
    __tablename__ = "kb_chunks"

    # An INTEGER PRIMARY KEY on SQLite: the FTS5 table maps chunks by rowid, which only an
    # aliased rowid keeps stable (VACUUM may renumber the others).
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    public_id: Mapped[uuid.UUID] = mapped_column(unique=True, default=uuid.uuid4)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    document_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("kb_documents.id", ondelete="CASCADE")
    )
    version: Mapped[int]
    position: Mapped[int]
    text: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    char_start: Mapped[int]
    char_end: Mapped[int]
    page_start: Mapped[int | None]
    page_end: Mapped[int | None]
    heading: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_kb_chunks_document", "document_id", "version", "position"),
        Index("ix_kb_chunks_project", "project_id"),
        # A new version's chunks find the old version's vectors by text (app/knowledge/vectors.py).
        Index("ix_kb_chunks_hash", "document_id", "content_hash"),
    )


class KnowledgeEmbedding(WorkspaceScoped, Base):
    """A chunk's vector from one embedding model: float32, little-endian, unit length (a dot
    product is the cosine). Keyed by model, so another model's vectors never mix in; they go
    with their chunk (ON DELETE CASCADE), in the transaction that deletes it."""

    __tablename__ = "kb_embeddings"

    chunk_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("kb_chunks.id", ondelete="CASCADE"),
        primary_key=True,
    )
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    document_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("kb_documents.id", ondelete="CASCADE")
    )
    dims: Mapped[int]
    vector: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (Index("ix_kb_embeddings_document", "document_id", "model"),)


def include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
    """For Alembic's comparisons: leave out the search structures the models do not map."""
    if type_ == "table" and name is not None and name.startswith((FTS_TABLE, TERMS_TABLE)):
        return False
    if type_ == "column" and name == TSV_COLUMN and parent_names.get("table_name") == "kb_chunks":
        return False
    return not (type_ == "index" and name == "ix_kb_chunks_tsv")
