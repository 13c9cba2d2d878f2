"""Knowledge-base request and response bodies."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.knowledge.grounding import DEFAULT_CONTEXT_TOKENS, DEFAULT_TOP_K
from app.knowledge.retrieval import Ranked, SearchMethod
from app.knowledge.search import Filters, Hit
from app.models import DocumentStatus, KnowledgeChunk, KnowledgeDocument

MAX_QUERY_CHARS = 1000
SEARCH_METHOD = (
    "`keyword`, `semantic` (by meaning: needs the deployment's embedding model, "
    "EMBEDDINGS_BASE_URL) or `hybrid` (both, fused by reciprocal rank). Null: `hybrid` when the "
    "deployment has an embedding model, `keyword` otherwise."
)
MAX_TOP_K = 20


class DocumentText(BaseModel):
    """A document given as text (JSON), instead of a file upload."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"title": "Returns policy", "text": "# Returns\n\nItems can be returned..."}
            ]
        },
    )
    title: str = Field(min_length=1, max_length=255)
    text: str = Field(min_length=1, description="Markdown or plain text.")
    metadata: dict[str, str | int | float | bool] = Field(default_factory=dict, max_length=16)


class DocumentUrl(BaseModel):
    """A document fetched from a URL by its indexing job (through the outbound guard: public
    addresses only)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"url": "https://example.com/returns.html"}]},
    )
    url: str = Field(min_length=1, max_length=2000, description="http(s); redirects followed.")
    title: str | None = Field(default=None, min_length=1, max_length=255)
    metadata: dict[str, str | int | float | bool] = Field(default_factory=dict, max_length=16)


class DocumentUpdate(BaseModel):
    """Only the fields sent change; none of them re-indexes the document."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"title": "Returns (2027)"}]}
    )
    title: str | None = Field(default=None, min_length=1, max_length=255)
    metadata: dict[str, str | int | float | bool] | None = Field(default=None, max_length=16)
    enabled: bool | None = Field(
        default=None, description="A disabled document is kept but not retrieved."
    )


class DocumentError(BaseModel):
    code: str = Field(
        description="`unsupported_file`, `invalid_file`, `too_large`, `too_many_pages`, "
        "`no_text` (e.g. a scanned PDF without a text layer: OCR is not supported), "
        "`fetch_failed` (a `url` document's address answered with an error) or `server_error`."
    )
    message: str


class DocumentRead(BaseModel):
    id: uuid.UUID
    project_id: uuid.UUID
    title: str
    source: str = Field(description="`upload`, `text` or `url`.")
    filename: str | None
    source_url: str | None
    mime_type: str = Field(description="Read from the bytes; empty until a `url` is fetched.")
    size_bytes: int
    sha256: str
    metadata: dict[str, Any]
    enabled: bool
    status: DocumentStatus = Field(description="`queued` → `indexing` → `ready` | `failed`.")
    error: DocumentError | None
    page_count: int | None
    char_count: int | None
    chunk_count: int
    chunks_embedded: int = Field(
        description="Chunks with a vector of the deployment's embedding model, for semantic "
        "search (0 without one). Embedding runs after the document is `ready`: until it ends, "
        "the rest are found by keyword only."
    )
    indexed_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, document: KnowledgeDocument) -> DocumentRead:
        error = None
        if document.error_code is not None:
            error = DocumentError(code=document.error_code, message=document.error_message or "")
        return cls(
            id=document.id,
            project_id=document.project_id,
            title=document.title,
            source=document.source,
            filename=document.filename,
            source_url=document.source_url,
            mime_type=document.mime_type,
            size_bytes=document.size_bytes,
            sha256=document.sha256,
            metadata=document.meta,
            enabled=document.enabled,
            status=DocumentStatus(document.status),
            error=error,
            page_count=document.page_count,
            char_count=document.char_count,
            chunk_count=document.chunk_count,
            chunks_embedded=document.chunks_embedded,
            indexed_at=document.indexed_at,
            created_at=document.created_at,
            updated_at=document.updated_at,
        )


class ChunkRead(BaseModel):
    id: uuid.UUID
    position: int
    text: str
    page_start: int | None = Field(description="1-based; null for formats without pages.")
    page_end: int | None
    char_start: int = Field(description="Offset in the document's extracted text.")
    char_end: int
    heading: str | None = Field(description='The heading path, e.g. "Install > Linux".')

    @classmethod
    def of(cls, chunk: KnowledgeChunk | Hit) -> ChunkRead:
        return cls(
            id=chunk.public_id,
            position=chunk.position,
            text=chunk.text,
            page_start=chunk.page_start,
            page_end=chunk.page_end,
            char_start=chunk.char_start,
            char_end=chunk.char_end,
            heading=chunk.heading,
        )


class KnowledgeSettings(BaseModel):
    """A project's use of its knowledge base in chat turns, and its own limits. Limits left null
    are the deployment's `KNOWLEDGE_*`; a project's may be lower, not higher."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"enabled": True, "top_k": 4, "max_context_tokens": 1500}]},
    )
    enabled: bool = Field(
        default=False,
        description="Ground chat turns in the knowledge base (off unless sent): after the "
        "intent check, the "
        "best chunks for the message are given to the model as numbered sources to cite as "
        "`[n]`, and the reply carries them as `citations`.",
    )
    top_k: int = Field(default=DEFAULT_TOP_K, ge=1, le=MAX_TOP_K, description="Chunks retrieved.")
    max_context_tokens: int = Field(
        default=DEFAULT_CONTEXT_TOKENS,
        ge=100,
        le=32000,
        description="The sources' budget in the prompt (about 4 characters a token); chunks "
        "that do not fit are left out.",
    )
    min_score: float | None = Field(
        default=None,
        ge=0,
        description="Leave out chunks scoring below this (the score `retrieve` reports for "
        "the same `search_method`).",
    )
    search_method: SearchMethod | None = Field(
        default=None,
        description=SEARCH_METHOD,
    )
    max_documents: int | None = Field(default=None, ge=1, description="Documents kept.")
    max_total_bytes: int | None = Field(default=None, ge=1024, description="Bytes of all files.")
    max_file_bytes: int | None = Field(default=None, ge=1024, description="Bytes of one file.")
    max_pages: int | None = Field(default=None, ge=1, description="Pages of one PDF.")


class CitationRead(BaseModel):
    """A numbered source the reply was given; `[n]` in its text cites it."""

    n: int
    document_id: uuid.UUID
    chunk_id: uuid.UUID
    title: str
    page_start: int | None = Field(description="1-based; null for formats without pages.")
    page_end: int | None
    char_start: int = Field(description="Offset in the document's extracted text.")
    char_end: int
    heading: str | None
    snippet: str = Field(description="The chunk's beginning.")
    score: float


MetadataKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
Scalar = str | int | float | bool


class RetrieveFilters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    document_ids: list[uuid.UUID] | None = Field(
        default=None, max_length=100, description="Only these documents (another project's: none)."
    )
    metadata: dict[MetadataKey, Scalar] | None = Field(
        default=None,
        max_length=16,
        description="Only documents whose `metadata` has each of these keys with this value.",
    )

    def search(self) -> Filters:
        documents = None if self.document_ids is None else tuple(self.document_ids)
        return Filters(documents=documents, metadata=self.metadata)


class RetrieveRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"query": "How long do I have to return?", "top_k": 5},
                {"query": "warranty", "filters": {"metadata": {"lang": "en"}}},
            ]
        },
    )
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    top_k: int = Field(default=5, ge=1, le=MAX_TOP_K)
    search_method: SearchMethod | None = Field(default=None, description=SEARCH_METHOD)
    filters: RetrieveFilters = Field(default_factory=RetrieveFilters)


class RetrievedDocument(BaseModel):
    id: uuid.UUID
    title: str


class RetrieveRanks(BaseModel):
    keyword: int | None = Field(description="1-based rank by keyword; null: not among them.")
    semantic: int | None = Field(description="1-based rank by meaning; null: not among them.")


class RetrieveRecord(BaseModel):
    chunk: ChunkRead
    document: RetrievedDocument
    score: float = Field(
        description="Higher is better. `keyword`: BM25-style relevance (not normalised); "
        "`semantic`: the cosine similarity; `hybrid`: the reciprocal-rank-fusion score."
    )
    ranks: RetrieveRanks

    @classmethod
    def of(cls, ranked: Ranked) -> RetrieveRecord:
        hit = ranked.hit
        return cls(
            chunk=ChunkRead.of(hit),
            document=RetrievedDocument(id=hit.document_id, title=hit.title),
            score=hit.score,
            ranks=RetrieveRanks(keyword=ranked.keyword_rank, semantic=ranked.semantic_rank),
        )


class RetrieveResponse(BaseModel):
    query: str
    search_method: SearchMethod = Field(
        description="The method used: the one asked for, or the project's, or the "
        "deployment's default; `keyword` when the question could not be embedded."
    )
    records: list[RetrieveRecord]
