"""The `knowledge.index` job: a document's bytes are parsed (in a child process), chunked,
and swapped in as the document's next version in one transaction.

Nothing is lost or doubled: the job is durable (a worker that dies mid-way leaves it to be
claimed again once its lease is over), and the chunks of a version appear all at once, with
the old version's deleted in the same transaction, so retrieval never sees half a document or
two versions of it. A document deleted meanwhile is simply not indexed. Errors of the file
itself (`invalid_file`, `no_text`, ...) fail the document at once; anything else is retried,
and the last attempt fails it with `server_error`, so no document stays `indexing`.

With an embedding model (EMBEDDINGS_*), the swap also gives the new version the vectors of its
unchanged chunks, and enqueues `knowledge.embed` (in the same transaction) for the rest: the
document is `ready` for keyword search at once, and found by meaning as its chunks are
embedded (`chunks_embedded`)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import httpx
from sqlalchemy import Table, delete, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.driver import transaction
from app.core.outbound import OutboundAddressRefused
from app.core.types import utcnow
from app.events.recorder import record
from app.jobs.queue import enqueue
from app.jobs.worker import JobKind, JobRun
from app.knowledge import search, vectors
from app.knowledge.chunking import Chunk, chunk
from app.knowledge.limits import limits_of
from app.knowledge.parsing import Parsed, ParseError, known_name, sniff
from app.knowledge.runner import parse_in_child
from app.knowledge.service import PART_BYTES, SNIFF_BYTES
from app.llm.embeddings import Embedder
from app.models import (
    DocumentStatus,
    KnowledgeChunk,
    KnowledgeDocument,
    KnowledgeEmbedding,
    KnowledgeFilePart,
    Project,
)

logger = logging.getLogger("app.knowledge")
EMBED_KIND = "knowledge.embed"
FAILED = "The document could not be indexed; retry it."
STOPPED = "Indexing stopped unexpectedly on every attempt; retry it."
CHUNKS = cast(Table, KnowledgeChunk.__table__)


def index_job(
    settings: Settings, maker: async_sessionmaker[AsyncSession], client: httpx.AsyncClient
) -> JobKind:
    """`client`: the outbound-guarded one, for `url` documents."""

    async def index(job: JobRun) -> None:
        document_id = uuid.UUID(job.payload["document_id"])
        assert job.workspace_id is not None  # noqa: S101 - enqueued with the document's
        if job.attempt > job.max_attempts:
            # Claimed again after its last attempt's worker died mid-way (killed, out of
            # memory): the document fails instead of staying `indexing`, or looping.
            await _fail(maker, job.workspace_id, document_id, "server_error", STOPPED)
            return
        try:
            await _index(settings, maker, client, job.workspace_id, document_id)
        except ParseError as exc:
            await _fail(maker, job.workspace_id, document_id, exc.code, exc.message)
        except Exception:
            if job.attempt >= job.max_attempts:
                await _fail(maker, job.workspace_id, document_id, "server_error", FAILED)
            raise

    return JobKind(index)


async def _index(
    settings: Settings,
    maker: async_sessionmaker[AsyncSession],
    client: httpx.AsyncClient,
    workspace_id: uuid.UUID,
    document_id: uuid.UUID,
) -> None:
    with tempfile.TemporaryDirectory(prefix="kb-") as directory:
        path = Path(directory) / "document"
        async with transaction(maker) as db:
            document = await _document(db, workspace_id, document_id)
            if document is None or document.status not in (
                DocumentStatus.QUEUED,
                DocumentStatus.INDEXING,
            ):
                return  # deleted, or indexed already
            document.status = DocumentStatus.INDEXING
            mime_type, source_url = document.mime_type, document.source_url
            knowledge = await db.scalar(
                select(Project.knowledge).where(
                    Project.workspace_id == workspace_id, Project.id == document.project_id
                )
            )
            limits = limits_of(settings, knowledge)
            if source_url is None:  # the stored bytes, in the same transaction
                await _write_file(db, workspace_id, document_id, path)
        if source_url is not None:  # fetched now, and kept like an upload
            mime_type = await _download(client, source_url, path, limits.max_file_bytes)
            await _store_file(maker, workspace_id, document_id, path, mime_type)
        parsed = await parse_in_child(
            path,
            mime_type,
            max_pages=limits.max_pages,
            memory_mb=settings.KNOWLEDGE_PARSE_MEMORY_MB,
            timeout_seconds=settings.KNOWLEDGE_PARSE_TIMEOUT_SECONDS,
            workspace=workspace_id,
            files_per_process=settings.KNOWLEDGE_PARSE_FILES_PER_PROCESS,
        )
    text, chunks = await asyncio.to_thread(
        chunk, parsed, settings.KNOWLEDGE_CHUNK_MIN_CHARS, settings.KNOWLEDGE_CHUNK_MAX_CHARS
    )
    if not text.strip():
        raise ParseError(
            "no_text",
            "The document has no text layer (a scanned PDF?): OCR is not supported.",
        )
    if len(text) > settings.KNOWLEDGE_MAX_CHARS:
        raise ParseError(
            "too_large",
            f"The document has {len(text)} characters of text; at most "
            f"{settings.KNOWLEDGE_MAX_CHARS}.",
        )
    model = settings.EMBEDDINGS_MODEL if settings.EMBEDDINGS_BASE_URL else None
    async with transaction(maker) as db:
        await _swap(db, workspace_id, document_id, chunks, len(text), parsed, model)


async def _swap(
    db: AsyncSession,
    workspace_id: uuid.UUID,
    document_id: uuid.UUID,
    chunks: list[Chunk],
    characters: int,
    parsed: Parsed,
    model: str | None = None,
) -> None:
    """`model`: the embedding model whose vectors the new version gets (None: none)."""
    document = await _document(db, workspace_id, document_id, lock=True)
    if document is None or document.status != DocumentStatus.INDEXING:
        return  # deleted (or retried) while it was being parsed
    version = document.index_version + 1
    condition = (KnowledgeChunk.workspace_id == workspace_id) & (
        KnowledgeChunk.document_id == document_id
    )
    if chunks:  # Core's executemany: the ORM's bulk insert costs more than the database does
        await db.execute(
            insert(CHUNKS),
            [
                {
                    "public_id": uuid.uuid4(),
                    "workspace_id": workspace_id,
                    "project_id": document.project_id,
                    "document_id": document_id,
                    "version": version,
                    "position": piece.position,
                    "text": piece.text,
                    "content_hash": piece.content_hash,
                    "char_start": piece.char_start,
                    "char_end": piece.char_end,
                    "page_start": piece.page_start,
                    "page_end": piece.page_end,
                    "heading": piece.heading,
                }
                for piece in chunks
            ],
        )
    await search.count_terms(db, workspace_id, document_id, keep=version)
    document.chunks_embedded = 0
    if model is not None and chunks:
        document.chunks_embedded = await vectors.reuse(
            db, workspace_id, document_id, version, model
        )
        if document.chunks_embedded < len(chunks):
            await enqueue(
                db,
                EMBED_KIND,
                {"document_id": str(document_id), "version": version},
                workspace_id=workspace_id,
                ordering_key=f"document:{document_id}",
                max_attempts=5,
            )
    # The old version (and any other) goes in the same transaction: retrieval sees one or the
    # other, never both.
    await db.execute(delete(KnowledgeChunk).where(condition, KnowledgeChunk.version != version))
    document.index_version = version
    document.status = DocumentStatus.READY
    document.error_code = document.error_message = None
    document.chunk_count = len(chunks)
    document.char_count = characters
    document.page_count = len(parsed.pages) if parsed.paged else None
    document.indexed_at = utcnow()
    record(
        db,
        workspace_id,
        "document.indexed",
        {
            "id": str(document_id),
            "project_id": str(document.project_id),
            "title": document.title,
            "chunk_count": len(chunks),
            "page_count": document.page_count,
        },
        project_id=document.project_id,
        subject=str(document_id),
    )
    logger.info("document indexed document_id=%s chunks=%d", document_id, len(chunks))


def embed_job(
    settings: Settings, maker: async_sessionmaker[AsyncSession], embedder: Embedder
) -> JobKind:
    """`knowledge.embed`: the chunks of a document's version that have no vector of the
    embedding model get one, a batch at a time, each batch committed with the document's
    `chunks_embedded`. A version swapped out meanwhile is left alone (its successor has its
    own job); a provider failure is retried with the job's backoff, and the batches already
    stored stay."""

    async def embed(job: JobRun) -> None:
        assert job.workspace_id is not None  # noqa: S101 - enqueued with the document's
        document_id = uuid.UUID(job.payload["document_id"])
        version = int(job.payload["version"])
        if job.attempt > job.max_attempts:  # its last attempt's worker died: give up
            logger.warning("embedding given up document_id=%s", document_id)
            return
        for _ in range(settings.KNOWLEDGE_MAX_CHARS // embedder.batch_size + 2):  # bounded
            async with maker() as db:
                document = await _document(db, job.workspace_id, document_id)
                if document is None or document.index_version != version:
                    return
                pending = await vectors.missing(
                    db, job.workspace_id, document_id, version, embedder.model, embedder.batch_size
                )
            if not pending:
                return
            found = await embedder.documents([text for _, text in pending])
            async with transaction(maker) as db:
                document = await _document(db, job.workspace_id, document_id, lock=True)
                if document is None or document.index_version != version:
                    return
                rows = [
                    {
                        "chunk_id": chunk_id,
                        "model": embedder.model,
                        "document_id": document_id,
                        "dims": int(vector.shape[0]),
                        "vector": vectors.encode(vector),
                        "workspace_id": job.workspace_id,
                    }
                    for (chunk_id, _), vector in zip(pending, found, strict=True)
                ]
                dialect = postgresql if db.get_bind().dialect.name == "postgresql" else sqlite
                await db.execute(dialect.insert(KnowledgeEmbedding).on_conflict_do_nothing(), rows)
                done = await vectors.embedded(
                    db, job.workspace_id, document_id, version, embedder.model
                )
                document.chunks_embedded, total = done, document.chunk_count
            logger.info(
                "chunks embedded document_id=%s embedded=%d of %d", document_id, done, total
            )

    return JobKind(embed)


async def _fail(
    maker: async_sessionmaker[AsyncSession],
    workspace_id: uuid.UUID,
    document_id: uuid.UUID,
    code: str,
    message: str,
) -> None:
    async with transaction(maker) as db:
        document = await _document(db, workspace_id, document_id, lock=True)
        if document is None or document.status == DocumentStatus.READY:
            return
        document.status = DocumentStatus.FAILED
        document.error_code, document.error_message = code, message
        record(
            db,
            workspace_id,
            "document.failed",
            {
                "id": str(document_id),
                "project_id": str(document.project_id),
                "title": document.title,
                "error": {"code": code, "message": message},
            },
            project_id=document.project_id,
            subject=str(document_id),
        )
    logger.info("document failed document_id=%s code=%s", document_id, code)


async def _document(
    db: AsyncSession, workspace_id: uuid.UUID, document_id: uuid.UUID, *, lock: bool = False
) -> KnowledgeDocument | None:
    statement = select(KnowledgeDocument).where(
        KnowledgeDocument.workspace_id == workspace_id, KnowledgeDocument.id == document_id
    )
    if lock and db.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update()
    result = await db.execute(statement)
    document: KnowledgeDocument | None = result.scalar_one_or_none()
    return document


async def _download(client: httpx.AsyncClient, url: str, path: Path, limit: int) -> str:
    """The URL's body into `path` (following redirects; every connection passes the outbound
    guard); its type, sniffed. ParseError for what retrying cannot mend; other errors (the
    network, a 5xx) are retried by the job."""
    try:
        async with client.stream("GET", url, follow_redirects=True) as response:
            if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                raise ParseError("fetch_failed", f"The URL answered HTTP {response.status_code}.")
            response.raise_for_status()
            size = 0
            with path.open("wb") as out:
                async for piece in response.aiter_bytes():
                    size += len(piece)
                    if size > limit:
                        raise ParseError(
                            "too_large", f"The URL's file is larger than {limit} bytes."
                        )
                    out.write(piece)
    except OutboundAddressRefused as exc:
        raise ParseError("fetch_failed", str(exc)) from exc
    with path.open("rb") as source:
        head = source.read(SNIFF_BYTES)
    mime_type = sniff(head, known_name(httpx.URL(url).path.rsplit("/", 1)[-1]))
    if mime_type is None or not head:
        raise ParseError("unsupported_file", "The URL's content is not a supported document type.")
    return mime_type


async def _store_file(
    maker: async_sessionmaker[AsyncSession],
    workspace_id: uuid.UUID,
    document_id: uuid.UUID,
    path: Path,
    mime_type: str,
) -> None:
    """A fetched file as the document's parts (replacing any earlier fetch's), in one short
    transaction after the download: no transaction waits on the network."""
    digest, size = hashlib.sha256(), 0
    async with transaction(maker) as db:
        document = await _document(db, workspace_id, document_id, lock=True)
        if document is None:
            return
        await db.execute(
            delete(KnowledgeFilePart).where(
                KnowledgeFilePart.workspace_id == workspace_id,
                KnowledgeFilePart.document_id == document_id,
            )
        )
        with path.open("rb") as source:
            for part, content in enumerate(iter(lambda: source.read(PART_BYTES), b"")):
                digest.update(content)
                size += len(content)
                await db.execute(
                    insert(KnowledgeFilePart).values(
                        document_id=document_id,
                        part=part,
                        workspace_id=workspace_id,
                        content=content,
                    )
                )
        document.mime_type, document.size_bytes = mime_type, size
        document.sha256 = digest.hexdigest()


async def _write_file(
    db: AsyncSession, workspace_id: uuid.UUID, document_id: uuid.UUID, path: Path
) -> None:
    """The document's bytes into `path`, a part (at most 1 MiB) at a time."""
    with path.open("wb") as out:
        async for content in _parts(db, workspace_id, document_id):
            out.write(content)


async def _parts(
    db: AsyncSession, workspace_id: uuid.UUID, document_id: uuid.UUID
) -> AsyncIterator[bytes]:
    result = await db.stream(
        select(KnowledgeFilePart.content)
        .where(
            KnowledgeFilePart.workspace_id == workspace_id,
            KnowledgeFilePart.document_id == document_id,
        )
        .order_by(KnowledgeFilePart.part)
        .execution_options(yield_per=1)
    )
    async for (content,) in result:
        yield content


async def read_parts(
    maker: async_sessionmaker[AsyncSession], workspace_id: uuid.UUID, document_id: uuid.UUID
) -> AsyncIterator[bytes]:
    """The document's stored bytes, part by part (at most 1 MiB each in memory)."""
    async with maker() as db:
        async for content in _parts(db, workspace_id, document_id):
            yield content
