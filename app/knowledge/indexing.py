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
embedded (`chunks_embedded`).

On Postgres, for a file of one stored part (most) and without an embedding model, a job costs
two statements besides its claim and the parse: one claims the document and reads its file
(`_BEGIN`), and one swaps the version in (`_SWAP_SQL`): the chunks, the old version's deletion,
the `kb_terms` counts, the `document.indexed` event and the job's own `done`, all one
statement and so one transaction. A file of more parts is read in a transaction of its own;
with a model, the swap and the vectors' reuse share one transaction. SQLite takes the same
steps through the ORM, a transaction each for the claim and the swap; the worker then records
the job done."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
from sqlalchemy import Table, delete, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.db import engine_of
from app.core.driver import Prebuilt, run, transaction
from app.core.outbound import OutboundAddressRefused
from app.core.types import utcnow
from app.events.recorder import record, wake_relay
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
            await _index(settings, maker, client, job, document_id)
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
    job: JobRun,
    document_id: uuid.UUID,
) -> None:
    assert job.workspace_id is not None  # noqa: S101 - enqueued with the document's
    workspace_id = job.workspace_id
    postgres = engine_of(maker).dialect.name == "postgresql"
    with tempfile.TemporaryDirectory(prefix="kb-") as directory:
        path = Path(directory) / "document"
        begun = await (_begin_postgres if postgres else _begin)(
            maker, workspace_id, document_id, path
        )
        if begun is None:
            return  # deleted, or indexed already
        mime_type, source_url, knowledge = begun
        limits = limits_of(settings, knowledge)
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
    if postgres:
        await _swap_postgres(maker, job, document_id, chunks, len(text), parsed, model)
        return
    async with transaction(maker) as db:
        await _swap(db, workspace_id, document_id, chunks, len(text), parsed, model)


Begun = tuple[str, str | None, dict[str, Any] | None]  # the type, the URL, project settings


async def _begin(
    maker: async_sessionmaker[AsyncSession],
    workspace_id: uuid.UUID,
    document_id: uuid.UUID,
    path: Path,
) -> Begun | None:
    """The document becomes `indexing`, and its stored bytes (if it has no URL) are written to
    `path`, in one transaction; None if it is gone or no longer to be indexed."""
    async with transaction(maker) as db:
        document = await _document(db, workspace_id, document_id)
        if document is None or document.status not in (
            DocumentStatus.QUEUED,
            DocumentStatus.INDEXING,
        ):
            return None
        document.status = DocumentStatus.INDEXING
        knowledge = await db.scalar(
            select(Project.knowledge).where(
                Project.workspace_id == workspace_id, Project.id == document.project_id
            )
        )
        if document.source_url is None:
            await _write_file(db, workspace_id, document_id, path)
        return document.mime_type, document.source_url, knowledge


# Postgres: `_begin` in one statement, which also returns the file's first part (a file of
# one part, as most are, needs nothing more).
_BEGIN = Prebuilt(
    text(
        """
WITH doc AS (
    UPDATE kb_documents SET status = 'indexing', updated_at = :now
    WHERE workspace_id = :workspace_id AND id = :document_id
        AND status IN ('queued', 'indexing')
    RETURNING project_id, mime_type, source_url
)
SELECT doc.mime_type, doc.source_url, CAST(p.knowledge AS text) AS knowledge,
    (SELECT count(*) FROM kb_file_parts AS f
        WHERE f.workspace_id = :workspace_id AND f.document_id = :document_id) AS parts,
    (SELECT f.content FROM kb_file_parts AS f
        WHERE f.workspace_id = :workspace_id AND f.document_id = :document_id AND f.part = 0
            AND doc.source_url IS NULL) AS first_part
FROM doc JOIN projects AS p ON p.id = doc.project_id AND p.workspace_id = :workspace_id
"""
    )
)


async def _begin_postgres(
    maker: async_sessionmaker[AsyncSession],
    workspace_id: uuid.UUID,
    document_id: uuid.UUID,
    path: Path,
) -> Begun | None:
    params = {"workspace_id": workspace_id, "document_id": document_id, "now": utcnow()}
    async with engine_of(maker).connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        rows = await run(connection, _BEGIN, params)
    if not rows:
        return None
    row = rows[0]
    knowledge = None if row["knowledge"] is None else json.loads(row["knowledge"])
    if row["source_url"] is None:
        if row["parts"] <= 1:
            path.write_bytes(row["first_part"] or b"")  # noqa: ASYNC240 - 1 MiB at most
        else:  # every part in one statement, so all of one version of the file
            async with transaction(maker) as db:
                await _write_file(db, workspace_id, document_id, path)
    return row["mime_type"], row["source_url"], knowledge


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
    document.chunks_embedded = 0
    if model is not None:
        document.chunks_embedded = await _embed_from(
            db, workspace_id, document_id, version, model, len(chunks)
        )
    # The old version (and any other) goes in the same transaction: retrieval sees one or the
    # other, never both.
    await search.swap_out(db, workspace_id, document.project_id, document_id, keep=version)
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


# Postgres: the swap in one statement. The document (if still `indexing`) takes its next
# version and is `ready`; that version's chunks are inserted (from arrays: one row each),
# every older chunk is deleted, `kb_terms` moves by both, the event is written, and the job is
# recorded done (JobRun.done_sql): one round trip, its own transaction. With an embedding model
# the old chunks must outlive the new ones' insert (their vectors are reused by content hash):
# the statement then leaves them, and their terms, to `search.swap_out` in its transaction.
_SWAP_SQL = """
WITH doc AS (
    UPDATE kb_documents SET index_version = index_version + 1, status = 'ready',
        error_code = NULL, error_message = NULL, chunk_count = :chunk_count,
        char_count = :char_count, page_count = :page_count, chunks_embedded = 0,
        indexed_at = :now, updated_at = :now
    WHERE workspace_id = :workspace_id AND id = :document_id AND status = 'indexing'
    RETURNING id, project_id, index_version, title
), new AS (
    INSERT INTO kb_chunks (public_id, workspace_id, project_id, document_id, version,
        position, text, content_hash, char_start, char_end, page_start, page_end, heading)
    SELECT gen_random_uuid(), :workspace_id, doc.project_id, doc.id, doc.index_version, c.*
    FROM doc, unnest(CAST(:positions AS integer[]), CAST(:texts AS text[]),
        CAST(:hashes AS text[]), CAST(:starts AS integer[]), CAST(:ends AS integer[]),
        CAST(:page_starts AS integer[]), CAST(:page_ends AS integer[]),
        CAST(:headings AS text[])) AS c
    RETURNING tsv
), {terms}
event AS (
    INSERT INTO events (id, workspace_id, project_id, type, subject, data, created_at)
    SELECT :event_id, :workspace_id, doc.project_id, 'document.indexed', CAST(:subject AS text),
        json_build_object('id', CAST(:subject AS text), 'project_id', doc.project_id,
            'title', doc.title, 'chunk_count', CAST(:chunk_count AS integer),
            'page_count', CAST(:page_count AS integer)),
        :now
    FROM doc
), finished AS ({done})
SELECT index_version, project_id FROM doc
"""
_SWAP_TERMS = """gone AS (
    DELETE FROM kb_chunks AS c USING doc
    WHERE c.workspace_id = :workspace_id AND c.document_id = doc.id
    RETURNING c.tsv
), changes AS (
    SELECT tsv, 1 AS delta FROM new UNION ALL SELECT tsv, -1 FROM gone
), {move_terms},
""".replace("{move_terms}", search.MOVE_TERMS.strip())
_SWAPS = {
    whole: Prebuilt(
        text(
            _SWAP_SQL.replace("{terms}", _SWAP_TERMS if whole else "")
            .replace("{changes}", "changes")
            .replace("{project_id}", "(SELECT project_id FROM doc)")
            .replace("{done}", JobRun.done_sql())
        )
    )
    for whole in (True, False)
}


async def _swap_postgres(
    maker: async_sessionmaker[AsyncSession],
    job: JobRun,
    document_id: uuid.UUID,
    chunks: list[Chunk],
    characters: int,
    parsed: Parsed,
    model: str | None,
) -> None:
    assert job.workspace_id is not None  # noqa: S101 - enqueued with the document's
    workspace_id = job.workspace_id
    params: dict[str, Any] = {
        "workspace_id": workspace_id,
        "document_id": document_id,
        "chunk_count": len(chunks),
        "char_count": characters,
        "page_count": len(parsed.pages) if parsed.paged else None,
        "now": utcnow(),
        "positions": [piece.position for piece in chunks],
        "texts": [piece.text for piece in chunks],
        "hashes": [piece.content_hash for piece in chunks],
        "starts": [piece.char_start for piece in chunks],
        "ends": [piece.char_end for piece in chunks],
        "page_starts": [piece.page_start for piece in chunks],
        "page_ends": [piece.page_end for piece in chunks],
        "headings": [piece.heading for piece in chunks],
        "event_id": uuid.uuid4(),
        "subject": str(document_id),
    } | job.done_params()
    if model is None:
        async with engine_of(maker).connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            rows = await run(connection, _SWAPS[True], params)
    else:
        async with transaction(maker) as db:
            rows = await run(await db.connection(), _SWAPS[False], params)
            if rows:
                version, project_id = rows[0]["index_version"], rows[0]["project_id"]
                embedded = await _embed_from(
                    db, workspace_id, document_id, version, model, len(chunks)
                )
                if embedded:
                    await db.execute(
                        update(KnowledgeDocument)
                        .where(
                            KnowledgeDocument.workspace_id == workspace_id,
                            KnowledgeDocument.id == document_id,
                        )
                        .values(chunks_embedded=embedded)
                    )
                await search.swap_out(db, workspace_id, project_id, document_id, keep=version)
    job.recorded()
    if rows:
        wake_relay(maker)
        logger.info("document indexed document_id=%s chunks=%d", document_id, len(chunks))


async def _embed_from(
    db: AsyncSession,
    workspace_id: uuid.UUID,
    document_id: uuid.UUID,
    version: int,
    model: str,
    chunks: int,
) -> int:
    """A new version's chunks take the vectors of the old version's unchanged ones, and the
    rest are left to `knowledge.embed` (enqueued in the same transaction); how many have one."""
    if not chunks:
        return 0
    embedded = await vectors.reuse(db, workspace_id, document_id, version, model)
    if embedded < chunks:
        await enqueue(
            db,
            EMBED_KIND,
            {"document_id": str(document_id), "version": version},
            workspace_id=workspace_id,
            ordering_key=f"document:{document_id}",
            max_attempts=5,
        )
    return embedded


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
