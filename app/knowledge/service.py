"""Documents within a project: accepted (bytes, row and indexing job in one transaction),
listed, read, deleted, retried, and searched."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import UploadFile

from app.audit.recorder import json_value, new_entry
from app.core.config import Settings
from app.core.errors import (
    AppError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    field_error,
)
from app.core.outbound import check_url
from app.core.pagination import Keyset, PageParams
from app.core.repository import WorkspaceRepository
from app.events.recorder import record
from app.jobs.queue import enqueue
from app.knowledge import parsing, retrieval, search
from app.knowledge.limits import limits_of
from app.knowledge.retrieval import Ranked, SearchMethod
from app.knowledge.schemas import DocumentText, DocumentUpdate, DocumentUrl
from app.llm.embeddings import Embedder
from app.models import (
    DocumentSource,
    DocumentStatus,
    KnowledgeChunk,
    KnowledgeDocument,
    KnowledgeFilePart,
)
from app.projects.service import ProjectService

INDEX_KIND = "knowledge.index"
PART_BYTES = 1024 * 1024
SNIFF_BYTES = 8192
DOCUMENT_KEYSET = Keyset((KnowledgeDocument.created_at, KnowledgeDocument.id), descending=True)
CHUNK_KEYSET = Keyset((KnowledgeChunk.position, KnowledgeChunk.id))


class UnsupportedFileError(AppError):
    status_code = 415
    code = "unsupported_file"
    message = "This file type is not supported: upload PDF, HTML, Markdown, plain text or DOCX."


class QuotaExceededError(AppError):
    status_code = 422
    code = "quota_exceeded"


class DocumentRepository(WorkspaceRepository[KnowledgeDocument]):
    model = KnowledgeDocument

    async def in_project(
        self, project_id: uuid.UUID, document_id: uuid.UUID
    ) -> KnowledgeDocument | None:
        result = await self.session.execute(
            self.scoped().where(
                KnowledgeDocument.project_id == project_id, KnowledgeDocument.id == document_id
            )
        )
        document: KnowledgeDocument | None = result.scalar_one_or_none()
        return document


class KnowledgeService:
    def __init__(self, session: AsyncSession, workspace_id: uuid.UUID, settings: Settings) -> None:
        self.session = session
        self.workspace_id = workspace_id
        self.settings = settings
        self.documents = DocumentRepository(session, workspace_id)
        self.projects = ProjectService(session, workspace_id)
        self.limits = limits_of(settings, None)  # the project's, once `project` read it
        self._project_id: uuid.UUID | None = None  # the project `limits` are of

    async def project(self, project_id: uuid.UUID) -> None:
        """404 unless the project is in the workspace; its limits apply from now on (read
        once per request: the router checks it before the body, the service again)."""
        if self._project_id == project_id:
            return
        project = await self.projects.get(project_id)
        self.limits = limits_of(self.settings, project.knowledge)
        self._project_id = project_id

    async def create_text(
        self, project_id: uuid.UUID, body: DocumentText, user_id: uuid.UUID | None
    ) -> KnowledgeDocument:
        await self.project(project_id)
        data = body.text.encode()
        if len(data) > self.limits.max_file_bytes:
            raise self._too_large()
        await self._check_quota(project_id, len(data))
        document = self._document(
            project_id, body.title, DocumentSource.TEXT, None, parsing.MARKDOWN, user_id
        )
        document.meta = dict(body.metadata)
        await self.session.flush()
        for index in range(0, max(len(data), 1), PART_BYTES):
            await self._add_part(document.id, index // PART_BYTES, data[index : index + PART_BYTES])
        document.size_bytes, document.sha256 = len(data), hashlib.sha256(data).hexdigest()
        self._audit(document, "document.created", {"title": document.title})
        await self._queue(document)
        return document

    async def create_url(
        self, project_id: uuid.UUID, body: DocumentUrl, user_id: uuid.UUID | None
    ) -> KnowledgeDocument:
        """A document whose bytes its indexing job fetches; the URL is checked now (422
        `url_not_allowed`) and again at every connection."""
        await self.project(project_id)
        await check_url(body.url, allow_private=self.settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS)
        await self._check_quota(project_id, 0)
        document = self._document(
            project_id, body.title or body.url[:255], DocumentSource.URL, None, "", user_id
        )
        document.source_url, document.meta = body.url, dict(body.metadata)
        await self.session.flush()
        self._audit(document, "document.created", {"title": document.title})
        await self._queue(document)
        return document

    async def create_upload(
        self,
        project_id: uuid.UUID,
        upload: UploadFile,
        title: str | None,
        user_id: uuid.UUID | None,
    ) -> KnowledgeDocument:
        """Stream the upload into the database in parts of PART_BYTES (never whole in memory);
        the type is sniffed from its first bytes."""
        await self.project(project_id)
        head, mime_type = await self._sniff(upload)
        used = await self._check_quota(project_id, upload.size or 0)
        filename = _filename(upload)
        name = (title or filename or "Untitled").strip()[:255] or "Untitled"
        document = self._document(
            project_id, name, DocumentSource.UPLOAD, filename, mime_type, user_id
        )
        await self.session.flush()
        await self._store_upload(document, upload, head, used)
        self._audit(document, "document.created", {"title": document.title})
        await self._queue(document)
        return document

    async def replace_file(
        self, project_id: uuid.UUID, document_id: uuid.UUID, upload: UploadFile
    ) -> KnowledgeDocument:
        """A new file for the document: indexed as its next version, which is swapped in
        when ready; until then retrieval keeps serving the current one."""
        await self.project(project_id)
        document = await self.get(project_id, document_id)
        head, mime_type = await self._sniff(upload)
        used = await self._check_quota(project_id, upload.size or 0, replacing=document)
        await self.session.execute(
            delete(KnowledgeFilePart).where(
                KnowledgeFilePart.workspace_id == self.workspace_id,
                KnowledgeFilePart.document_id == document.id,
            )
        )
        before = document.sha256
        document.source, document.mime_type = DocumentSource.UPLOAD, mime_type
        document.source_url = None  # an uploaded file now: not fetched again
        document.filename = _filename(upload)
        await self._store_upload(document, upload, head, used)
        document.status = DocumentStatus.QUEUED
        document.error_code = document.error_message = None
        self._audit(
            document,
            "document.file_replaced",
            {"sha256": {"before": before, "after": document.sha256}},
        )
        await self._queue(document)
        return document

    async def update(
        self, project_id: uuid.UUID, document_id: uuid.UUID, body: DocumentUpdate
    ) -> KnowledgeDocument:
        """Title, metadata, enabled: no re-indexing (a disabled document is not retrieved)."""
        document = await self.get(project_id, document_id)
        changes: dict[str, Any] = {}
        for field, attribute in (("title", "title"), ("metadata", "meta"), ("enabled", "enabled")):
            if field not in body.model_fields_set:
                continue
            value = getattr(body, field)
            if value is None:
                raise field_error(field, "may not be null")
            if getattr(document, attribute) != value:
                changes[field] = {"before": getattr(document, attribute), "after": value}
                setattr(document, attribute, value)
        if changes:
            self._audit(document, "document.updated", changes)
        await self.session.flush()
        return document

    async def list_page(
        self, project_id: uuid.UUID, params: PageParams, status: DocumentStatus | None
    ) -> tuple[list[KnowledgeDocument], str | None]:
        await self.projects.get(project_id)
        statement = self.documents.scoped().where(KnowledgeDocument.project_id == project_id)
        if status is not None:
            statement = statement.where(KnowledgeDocument.status == status)
        return await self.documents.page(statement, DOCUMENT_KEYSET, params)

    async def get(self, project_id: uuid.UUID, document_id: uuid.UUID) -> KnowledgeDocument:
        document = await self.documents.in_project(project_id, document_id)
        if document is None:
            await self.projects.get(project_id)  # says which one is missing
            raise NotFoundError("Document not found.", code="document_not_found")
        return document

    async def chunks(
        self, project_id: uuid.UUID, document_id: uuid.UUID, params: PageParams
    ) -> tuple[list[KnowledgeChunk], str | None]:
        """The chunks of the version the document serves."""
        document = await self.get(project_id, document_id)
        statement = select(KnowledgeChunk).where(
            KnowledgeChunk.workspace_id == self.workspace_id,
            KnowledgeChunk.document_id == document.id,
            KnowledgeChunk.version == document.index_version,
        )
        result = await self.session.execute(CHUNK_KEYSET.paginate(statement, params))
        return CHUNK_KEYSET.page(result.scalars().all(), params)

    async def delete(self, project_id: uuid.UUID, document_id: uuid.UUID) -> None:
        """Gone at once: its chunks (and their keyword index rows) go in this transaction."""
        document = await self.get(project_id, document_id)
        await search.swap_out(
            self.session, self.workspace_id, document.project_id, document.id, keep=None
        )
        record(
            self.session,
            self.workspace_id,
            "document.deleted",
            {"id": str(document.id), "project_id": str(project_id), "title": document.title},
            project_id=project_id,
            subject=str(document.id),
        )
        self._audit(document, "document.deleted", {"title": document.title})
        await self.documents.delete(document)
        await self.session.flush()

    async def retry(self, project_id: uuid.UUID, document_id: uuid.UUID) -> KnowledgeDocument:
        document = await self.get(project_id, document_id)
        if document.status != DocumentStatus.FAILED:
            raise ConflictError(
                f"Only a failed document can be retried; this one is {document.status}.",
                code="document_not_failed",
            )
        document.status = DocumentStatus.QUEUED
        self._audit(document, "document.retried", {"error_code": document.error_code})
        document.error_code = document.error_message = None
        await self._queue(document)
        return document

    async def retrieve(
        self,
        project_id: uuid.UUID,
        query: str,
        top_k: int,
        filters: search.Filters = search.NO_FILTERS,
        *,
        method: SearchMethod | None = None,
        embedder: Embedder | None = None,
    ) -> tuple[SearchMethod, list[Ranked]]:
        """The method used (the one asked for, else the project's, else the deployment's
        default; `keyword` if the question could not be embedded) and the chunks found."""
        project = await self.projects.get(project_id)
        chosen = retrieval.method_of(
            method or (project.knowledge or {}).get("search_method"), embedder
        )
        vector = await retrieval.embed_question(embedder, chosen, query)
        if vector is None:
            chosen = "keyword"
        found = await retrieval.find(
            self.session,
            embedder,
            self.workspace_id,
            project_id,
            query,
            top_k,
            method=chosen,
            vector=vector,
            filters=filters,
        )
        return chosen, found

    async def _sniff(self, upload: UploadFile) -> tuple[bytes, str]:
        head = await upload.read(SNIFF_BYTES)
        mime_type = parsing.sniff(head, upload.filename)
        if mime_type is None:
            raise UnsupportedFileError()
        if upload.size is not None and upload.size > self.limits.max_file_bytes:
            raise self._too_large()
        return head, mime_type

    async def _store_upload(
        self, document: KnowledgeDocument, upload: UploadFile, head: bytes, used: int
    ) -> None:
        """The upload's bytes (`head` already read) as the document's parts, with its size
        and SHA-256; 413 past the file limit, 422 past the project's byte quota."""
        digest, size, part, pending = hashlib.sha256(), 0, 0, head
        while True:
            piece = await upload.read(PART_BYTES - len(pending))
            pending += piece
            if len(pending) >= PART_BYTES or (not piece and pending):
                digest.update(pending)
                size += len(pending)
                if size > self.limits.max_file_bytes:
                    raise self._too_large()
                await self._add_part(document.id, part, pending)
                part, pending = part + 1, b""
            if not piece:
                break
        if size == 0:
            raise UnsupportedFileError("The file is empty.", code="invalid_file")
        self._check_bytes(used, size)
        document.size_bytes, document.sha256 = size, digest.hexdigest()

    def _audit(self, document: KnowledgeDocument, action: str, changes: dict[str, Any]) -> None:
        self.session.add(
            new_entry(self.workspace_id, action, "document", str(document.id), json_value(changes))
        )

    def _document(
        self,
        project_id: uuid.UUID,
        title: str,
        source: DocumentSource,
        filename: str | None,
        mime_type: str,
        user_id: uuid.UUID | None,
    ) -> KnowledgeDocument:
        return self.documents.add(
            KnowledgeDocument(
                id=uuid.uuid4(),
                project_id=project_id,
                title=title,
                source=source,
                filename=filename,
                mime_type=mime_type,
                size_bytes=0,
                sha256="",
                meta={},
                enabled=True,
                status=DocumentStatus.QUEUED,
                chunk_count=0,
                index_version=0,
                created_by=user_id,
            )
        )

    async def _add_part(self, document_id: uuid.UUID, part: int, content: bytes) -> None:
        # A Core INSERT: the bytes do not stay in the session's identity map.
        await self.session.execute(
            insert(KnowledgeFilePart).values(
                document_id=document_id, part=part, workspace_id=self.workspace_id, content=content
            )
        )

    async def _queue(self, document: KnowledgeDocument) -> None:
        await enqueue(
            self.session,
            INDEX_KIND,
            {"document_id": str(document.id)},
            workspace_id=self.workspace_id,
            # In order per document: a file replaced while its previous one is being indexed
            # gets its own run after that one (which then leaves the document alone).
            ordering_key=f"document:{document.id}",
            max_attempts=3,
        )
        await self.session.flush()

    async def _check_quota(
        self, project_id: uuid.UUID, adding: int, *, replacing: KnowledgeDocument | None = None
    ) -> int:
        """Before a document is added (or `replacing`'s file): 422 if the project has its most
        documents, or `adding` bytes would pass its byte quota; the bytes the others use."""
        count, used = (
            await self.session.execute(
                select(func.count(), func.coalesce(func.sum(KnowledgeDocument.size_bytes), 0))
                .select_from(KnowledgeDocument)
                .where(
                    KnowledgeDocument.workspace_id == self.workspace_id,
                    KnowledgeDocument.project_id == project_id,
                )
            )
        ).one()
        if replacing is not None:
            used -= replacing.size_bytes
        elif count >= self.limits.max_documents:
            raise QuotaExceededError(f"The project has {count} documents, the most it may have.")
        self._check_bytes(int(used), adding)
        return int(used)

    def _check_bytes(self, used: int, adding: int) -> None:
        limit = self.limits.max_total_bytes
        if used + adding > limit:
            raise QuotaExceededError(
                f"The project's documents would take more than its {limit} bytes."
            )

    def _too_large(self) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"The file is larger than {self.limits.max_file_bytes} bytes.",
            code="too_large",
        )


def _filename(upload: UploadFile) -> str | None:
    """The upload's file name as stored: no NUL (no database stores one), at most 255."""
    name = (upload.filename or "").replace("\x00", "").strip()
    return name[:255] or None
