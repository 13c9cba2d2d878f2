"""The `knowledge.index` job: a document's bytes are parsed (in a child process), chunked,
and swapped in as the document's next version in one transaction.

Nothing is lost or doubled: the job is durable (a worker that dies mid-way leaves it to be
claimed again once its lease is over), and the chunks of a version appear all at once, with
the old version's deleted in the same transaction, so retrieval never sees half a document or
two versions of it. A document deleted meanwhile is simply not indexed. Errors of the file
itself (`invalid_file`, `no_text`, ...) fail the document at once; anything else is retried,
and the last attempt fails it with `server_error`, so no document stays `indexing`."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.driver import transaction
from app.core.types import utcnow
from app.events.recorder import record
from app.jobs.worker import JobKind, JobRun
from app.knowledge.chunking import Chunk, chunk
from app.knowledge.parsing import Parsed, ParseError
from app.knowledge.runner import parse_in_child
from app.models import DocumentStatus, KnowledgeChunk, KnowledgeDocument, KnowledgeFilePart

logger = logging.getLogger("app.knowledge")


def index_job(settings: Settings, maker: async_sessionmaker[AsyncSession]) -> JobKind:
    async def index(job: JobRun) -> None:
        document_id = uuid.UUID(job.payload["document_id"])
        assert job.workspace_id is not None  # noqa: S101 - enqueued with the document's
        try:
            await _index(settings, maker, job.workspace_id, document_id)
        except ParseError as exc:
            await _fail(maker, job.workspace_id, document_id, exc.code, exc.message)
        except Exception:
            if job.attempt >= job.max_attempts:
                await _fail(
                    maker,
                    job.workspace_id,
                    document_id,
                    "server_error",
                    "The document could not be indexed; retry it.",
                )
            raise

    return JobKind(index)


async def _index(
    settings: Settings,
    maker: async_sessionmaker[AsyncSession],
    workspace_id: uuid.UUID,
    document_id: uuid.UUID,
) -> None:
    async with transaction(maker) as db:
        document = await _document(db, workspace_id, document_id)
        if document is None or document.status not in (
            DocumentStatus.QUEUED,
            DocumentStatus.INDEXING,
        ):
            return  # deleted, or indexed already
        document.status = DocumentStatus.INDEXING
        mime_type = document.mime_type
    with tempfile.TemporaryDirectory(prefix="kb-") as directory:
        path = Path(directory) / "document"
        await _write_file(maker, workspace_id, document_id, path)
        parsed = await parse_in_child(
            path,
            mime_type,
            max_pages=settings.KNOWLEDGE_MAX_PAGES,
            memory_mb=settings.KNOWLEDGE_PARSE_MEMORY_MB,
            timeout_seconds=settings.KNOWLEDGE_PARSE_TIMEOUT_SECONDS,
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
    async with transaction(maker) as db:
        await _swap(db, workspace_id, document_id, chunks, len(text), parsed)


async def _swap(
    db: AsyncSession,
    workspace_id: uuid.UUID,
    document_id: uuid.UUID,
    chunks: list[Chunk],
    characters: int,
    parsed: Parsed,
) -> None:
    document = await _document(db, workspace_id, document_id, lock=True)
    if document is None or document.status != DocumentStatus.INDEXING:
        return  # deleted (or retried) while it was being parsed
    version = document.index_version + 1
    condition = (KnowledgeChunk.workspace_id == workspace_id) & (
        KnowledgeChunk.document_id == document_id
    )
    await db.execute(delete(KnowledgeChunk).where(condition))  # the old version (and any other)
    if chunks:
        await db.execute(
            insert(KnowledgeChunk),
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


async def _write_file(
    maker: async_sessionmaker[AsyncSession],
    workspace_id: uuid.UUID,
    document_id: uuid.UUID,
    path: Path,
) -> None:
    """The document's bytes into `path`, a part (at most 1 MiB) at a time."""
    with path.open("wb") as out:
        async for content in read_parts(maker, workspace_id, document_id):
            out.write(content)


async def read_parts(
    maker: async_sessionmaker[AsyncSession], workspace_id: uuid.UUID, document_id: uuid.UUID
) -> AsyncIterator[bytes]:
    """The document's stored bytes, part by part (at most 1 MiB each in memory)."""
    async with maker() as db:
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
