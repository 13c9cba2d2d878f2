"""Knowledge-base routes, nested under a project: documents (upload a file, or send text) and
keyword retrieval (the hit-testing endpoint)."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from app.auth.dependencies import CurrentPrincipal, Principal, RequireAdmin, require_scope
from app.core.db import SessionDep
from app.core.dependencies import LLMRegistryDep, SettingsDep
from app.core.errors import (
    AppError,
    check_project_reach,
    error_responses,
    field_error,
)
from app.core.pagination import Page, PageParamsDep
from app.knowledge.indexing import read_parts
from app.knowledge.retrieval import check_method
from app.knowledge.schemas import (
    ChunkRead,
    DocumentRead,
    DocumentText,
    DocumentUpdate,
    DocumentUrl,
    RetrieveRecord,
    RetrieveRequest,
    RetrieveResponse,
)
from app.knowledge.service import KnowledgeService
from app.models import DocumentStatus

router = APIRouter(
    prefix="/projects/{project_id}/knowledge",
    tags=["Knowledge"],
    responses=error_responses(401, 403, 404, 422),
)
# The upload route's path, for its own body limit (app/main.py).
UPLOAD_PATH = r"/projects/[^/]+/knowledge/documents(/[^/]+/file)?"


async def get_knowledge_service(
    session: SessionDep, principal: CurrentPrincipal, settings: SettingsDep
) -> KnowledgeService:
    return KnowledgeService(session, principal.workspace_id, settings)


KnowledgeServiceDep = Annotated[KnowledgeService, Depends(get_knowledge_service)]


class UnsupportedMediaTypeError(AppError):
    status_code = 415
    code = "unsupported_media_type"
    message = "Send multipart/form-data (a file) or application/json ({title, text} or {url})."


_DOCUMENT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "PDF, HTML, Markdown, plain text or DOCX.",
                        },
                        "title": {"type": "string", "maxLength": 255},
                    },
                }
            },
            "application/json": {
                "schema": {
                    "oneOf": [DocumentText.model_json_schema(), DocumentUrl.model_json_schema()]
                },
                "example": DocumentText.model_config["json_schema_extra"]["examples"][0],  # type: ignore[index]
            },
        },
    }
}


@router.post(
    "/documents",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DocumentRead,
    dependencies=[RequireAdmin],
    openapi_extra=_DOCUMENT_BODY,
    responses=error_responses(409, 413, 415),
)
async def create_document(
    project_id: uuid.UUID,
    request: Request,
    knowledge: KnowledgeServiceDep,
    principal: CurrentPrincipal,
) -> object:
    """Add a document: a file (`multipart/form-data`, field `file`, optional `title`), text
    (JSON `{title, text, metadata?}`) or a URL (JSON `{url, title?, metadata?}`: fetched by the
    indexing job, public addresses only). Answers 202 once the bytes, the document and its
    indexing job are committed together: an accepted document is never lost. It is then
    `queued`, `indexing`, and `ready` (or `failed`, with `error.code`).

    Files up to `KNOWLEDGE_MAX_FILE_BYTES` (413 `too_large` beyond); the type is read from the
    file's first bytes (415 `unsupported_file` if it is none of the five)."""
    await knowledge.project(project_id)  # 404 for another tenant's, before the body
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=4)
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise field_error("file", "a file is required (multipart field `file`)")
            title = form.get("title")
            if isinstance(title, str) and ("\x00" in title or len(title) > 255):
                raise field_error("title", "at most 255 characters, and no NUL character")
            document = await knowledge.create_upload(
                project_id,
                upload,
                title if isinstance(title, str) else None,
                principal.user_id,
            )
        finally:
            await form.close()
    elif content_type in ("application/json", ""):
        raw = await request.body()
        try:
            by_url = _has_url(raw)
            if by_url:
                document = await knowledge.create_url(
                    project_id, DocumentUrl.model_validate_json(raw), principal.user_id
                )
            else:
                document = await knowledge.create_text(
                    project_id, DocumentText.model_validate_json(raw), principal.user_id
                )
        except ValidationError as exc:
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
            ) from exc
    else:
        raise UnsupportedMediaTypeError()
    return DocumentRead.of(document)


def _has_url(raw: bytes) -> bool:
    """Whether a JSON body is the `{url}` kind (anything unparsable goes to the text kind,
    whose validation then says what is wrong)."""
    try:
        value = json.loads(raw)
    except ValueError:
        return False
    return isinstance(value, dict) and "url" in value


@router.get("/documents", response_model=Page[DocumentRead])
async def list_documents(
    project_id: uuid.UUID,
    knowledge: KnowledgeServiceDep,
    page: PageParamsDep,
    status_filter: Annotated[DocumentStatus | None, Query(alias="status")] = None,
) -> object:
    """The project's documents, newest first; `status` filters."""
    items, next_cursor = await knowledge.list_page(project_id, page, status_filter)
    return Page[DocumentRead](items=[DocumentRead.of(d) for d in items], next_cursor=next_cursor)


@router.get("/documents/{document_id}", response_model=DocumentRead)
async def get_document(
    project_id: uuid.UUID, document_id: uuid.UUID, knowledge: KnowledgeServiceDep
) -> object:
    """One document, with its indexing status."""
    return DocumentRead.of(await knowledge.get(project_id, document_id))


@router.get("/documents/{document_id}/chunks", response_model=Page[ChunkRead])
async def list_chunks(
    project_id: uuid.UUID,
    document_id: uuid.UUID,
    knowledge: KnowledgeServiceDep,
    page: PageParamsDep,
) -> object:
    """The indexed chunks of the document, in order, with their pages and offsets."""
    items, next_cursor = await knowledge.chunks(project_id, document_id, page)
    return Page[ChunkRead](items=[ChunkRead.of(c) for c in items], next_cursor=next_cursor)


@router.patch(
    "/documents/{document_id}",
    response_model=DocumentRead,
    dependencies=[RequireAdmin],
)
async def update_document(
    project_id: uuid.UUID,
    document_id: uuid.UUID,
    body: DocumentUpdate,
    knowledge: KnowledgeServiceDep,
) -> object:
    """Change the title, metadata or `enabled` (only the fields sent); nothing is
    re-indexed. A disabled document is kept but not retrieved."""
    return DocumentRead.of(await knowledge.update(project_id, document_id, body))


@router.get(
    "/documents/{document_id}/file",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The file."}},
)
async def download_document(
    project_id: uuid.UUID,
    document_id: uuid.UUID,
    knowledge: KnowledgeServiceDep,
    request: Request,
) -> StreamingResponse:
    """The original file (for a text document, its text), streamed as stored."""
    document = await knowledge.get(project_id, document_id)
    name = document.filename or f"{document.title}.md"
    return StreamingResponse(
        read_parts(request.app.state.sessionmaker, document.workspace_id, document.id),
        media_type=document.mime_type,
        headers={
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}",
            "Content-Length": str(document.size_bytes),
        },
    )


@router.put(
    "/documents/{document_id}/file",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DocumentRead,
    dependencies=[RequireAdmin],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": _DOCUMENT_BODY["requestBody"]["content"][
                    "multipart/form-data"
                ]
            },
        }
    },
    responses=error_responses(413, 415),
)
async def replace_document_file(
    project_id: uuid.UUID,
    document_id: uuid.UUID,
    request: Request,
    knowledge: KnowledgeServiceDep,
) -> object:
    """A new file for the document (multipart field `file`). It is indexed as the
    document's next version and swapped in at once when ready; until then retrieval keeps
    serving the current version."""
    await knowledge.get(project_id, document_id)  # 404 before the body
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        raise UnsupportedMediaTypeError("Send the file as multipart/form-data (field `file`).")
    form = await request.form(max_files=1, max_fields=4)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise field_error("file", "a file is required (multipart field `file`)")
        document = await knowledge.replace_file(project_id, document_id, upload)
    finally:
        await form.close()
    return DocumentRead.of(document)


@router.post(
    "/documents/{document_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DocumentRead,
    dependencies=[RequireAdmin],
    responses=error_responses(409),
)
async def retry_document(
    project_id: uuid.UUID, document_id: uuid.UUID, knowledge: KnowledgeServiceDep
) -> object:
    """Index a `failed` document again (409 `document_not_failed` otherwise)."""
    return DocumentRead.of(await knowledge.retry(project_id, document_id))


@router.delete(
    "/documents/{document_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[RequireAdmin],
)
async def delete_document(
    project_id: uuid.UUID, document_id: uuid.UUID, knowledge: KnowledgeServiceDep
) -> Response:
    """Delete the document, its file and its chunks: from this response on, no retrieval
    returns them."""
    await knowledge.delete(project_id, document_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


RetrieveCaller = Annotated[Principal, Depends(require_scope("knowledge:read"))]


@router.post("/retrieve", response_model=RetrieveResponse)
async def retrieve(
    project_id: uuid.UUID,
    body: RetrieveRequest,
    caller: RetrieveCaller,
    session: SessionDep,
    settings: SettingsDep,
    registry: LLMRegistryDep,
) -> object:
    """Hit testing: the project's chunks that best match `query`, best first, with their
    document, pages and offsets, exactly as a grounded chat turn finds them. `search_method`:
    `keyword` (SQLite FTS5 bm25, or Postgres full text weighted by IDF), `semantic` (by
    meaning, with the deployment's embedding model) or `hybrid` (both, fused by reciprocal
    rank); by default the project's, else `hybrid` with an embedding model and `keyword`
    without. `filters` keeps to some documents, or to those whose metadata has given values.
    Any member, or the project's own API key with the `knowledge:read` scope."""
    check_project_reach(caller.project_id, project_id)
    check_method(body.search_method, registry.embedder is not None, "search_method")
    knowledge = KnowledgeService(session, caller.workspace_id, settings)
    method, found = await knowledge.retrieve(
        project_id,
        body.query,
        body.top_k,
        body.filters.search(),
        method=body.search_method,
        embedder=registry.embedder,
    )
    return RetrieveResponse(
        query=body.query, search_method=method, records=[RetrieveRecord.of(r) for r in found]
    )
