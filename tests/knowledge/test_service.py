"""The knowledge service called directly, in one session (as the routes call it): the rules
that answer 404, 409 and 422, without HTTP around them."""

from __future__ import annotations

import io
import uuid

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete
from starlette.datastructures import Headers, UploadFile

from app.core.errors import (
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    ValidationFailedError,
)
from app.jobs.worker import JobRun
from app.knowledge.indexing import STOPPED, index_job
from app.knowledge.schemas import DocumentText, DocumentUpdate, DocumentUrl
from app.knowledge.service import (
    INDEX_KIND,
    KnowledgeService,
    QuotaExceededError,
    UnsupportedFileError,
)
from app.models import DocumentStatus, Job
from tests import factories


async def _workspace(client: httpx.AsyncClient, owner: factories.Account) -> uuid.UUID:
    mine = (await client.get("/workspaces", headers=owner.headers)).json()["items"]
    return uuid.UUID(next(w for w in mine if w["is_personal"])["id"])


def _upload(name: str, content: bytes) -> UploadFile:
    return UploadFile(io.BytesIO(content), size=len(content), filename=name, headers=Headers({}))


async def test_the_service_s_rules(app: FastAPI, client: httpx.AsyncClient) -> None:
    owner = await factories.account(client)
    pid = uuid.UUID((await factories.create_project(client, owner))["id"])
    workspace = await _workspace(client, owner)
    settings = app.state.settings.model_copy(
        update={"KNOWLEDGE_MAX_DOCUMENTS_PER_PROJECT": 3, "KNOWLEDGE_MAX_FILE_BYTES": 4096}
    )
    async with app.state.sessionmaker() as db, db.begin():
        knowledge = KnowledgeService(db, workspace, settings)
        text = await knowledge.create_text(
            pid, DocumentText(title="Hours", text="Open at nine.", metadata={"lang": "en"}), None
        )
        assert (text.status, text.meta, text.size_bytes) == ("queued", {"lang": "en"}, 13)
        upload = await knowledge.create_upload(pid, _upload("a.md", b"# A\n\nbody"), None, None)
        assert (upload.title, upload.mime_type) == ("a.md", "text/markdown")
        url = await knowledge.create_url(pid, DocumentUrl(url="http://127.0.0.1:9/a.pdf"), None)
        assert (url.source, url.title) == ("url", "http://127.0.0.1:9/a.pdf")
        with pytest.raises(QuotaExceededError):  # the project's fourth document
            await knowledge.create_text(pid, DocumentText(title="x", text="y"), None)

        items, cursor = await knowledge.list_page(pid, _page(), DocumentStatus.QUEUED)
        assert {d.id for d in items} == {text.id, upload.id, url.id} and cursor is None
        updated = await knowledge.update(
            pid, text.id, DocumentUpdate(title="Opening hours", enabled=False)
        )
        assert (updated.title, updated.enabled) == ("Opening hours", False)
        with pytest.raises(ValidationFailedError):
            await knowledge.update(pid, text.id, DocumentUpdate(title=None))
        with pytest.raises(ConflictError):  # only failed documents are retried
            await knowledge.retry(pid, text.id)
        replaced = await knowledge.replace_file(pid, upload.id, _upload("b.txt", b"new words"))
        assert (replaced.mime_type, replaced.filename, replaced.size_bytes) == (
            "text/plain",
            "b.txt",
            9,
        )
        with pytest.raises(UnsupportedFileError):
            await knowledge.replace_file(pid, upload.id, _upload("x.png", b"\x89PNG\x00\x00"))
        with pytest.raises(PayloadTooLargeError):  # too large for this deployment
            await knowledge.replace_file(pid, upload.id, _upload("big.txt", b"w" * 5000))
        chunks, _ = await knowledge.chunks(pid, text.id, _page())
        assert chunks == []  # not indexed yet
        await knowledge.delete(pid, url.id)
        with pytest.raises(NotFoundError):
            await knowledge.get(pid, url.id)
        with pytest.raises(NotFoundError):
            await knowledge.get(uuid.uuid4(), text.id)
        assert await knowledge.retrieve(pid, "the of and", 5) == ("keyword", [])
        await db.rollback()


def _page() -> object:
    from app.core.pagination import PageParams

    return PageParams(limit=20, cursor=None)


async def test_a_job_claimed_again_after_its_last_attempt_fails_the_document(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """A worker killed during the last attempt leaves the job's lease to run out; claimed
    again, past its attempts, it fails the document instead of leaving it `indexing`."""
    owner = await factories.account(client)
    pid = uuid.UUID((await factories.create_project(client, owner))["id"])
    workspace = await _workspace(client, owner)
    settings = app.state.settings
    maker = app.state.sessionmaker
    async with maker() as db, db.begin():
        document = await KnowledgeService(db, workspace, settings).create_text(
            pid, DocumentText(title="Hours", text="Open at nine."), None
        )
        document.status = DocumentStatus.INDEXING  # as the dead worker left it
        await db.execute(delete(Job).where(Job.kind == INDEX_KIND))  # no worker here takes it
    handler = index_job(settings, maker, httpx.AsyncClient()).handler
    run = JobRun(uuid.uuid4(), INDEX_KIND, {"document_id": str(document.id)}, 4, 3, workspace)
    await handler(run)
    async with maker() as db:
        failed = await KnowledgeService(db, workspace, settings).get(pid, document.id)
    assert (failed.status, failed.error_code) == ("failed", "server_error")
    assert failed.error_message == STOPPED
