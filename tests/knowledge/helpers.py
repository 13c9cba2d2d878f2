"""Upload, wait for indexing, retrieve; what the database holds of a document's chunks."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from app.models import KnowledgeChunk
from tests import factories
from tests.waiting import until


async def upload(
    client: httpx.AsyncClient,
    owner: factories.Account,
    pid: str,
    filename: str,
    content: bytes,
    content_type: str = "application/octet-stream",
    **form: str,
) -> httpx.Response:
    return await client.post(
        f"/projects/{pid}/knowledge/documents",
        files={"file": (filename, content, content_type)},
        data=form,
        headers=owner.headers,
    )


async def settled(
    client: httpx.AsyncClient, owner: factories.Account, pid: str, document_id: str
) -> dict[str, Any]:
    """The document once it is ready or failed."""

    async def read() -> dict[str, Any]:
        response = await client.get(
            f"/projects/{pid}/knowledge/documents/{document_id}", headers=owner.headers
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    return await until(
        read, lambda d: d["status"] in ("ready", "failed"), polls=400, what="indexing"
    )


async def retrieve(
    client: httpx.AsyncClient, owner: factories.Account, pid: str, query: str, top_k: int = 5
) -> list[dict[str, Any]]:
    response = await client.post(
        f"/projects/{pid}/knowledge/retrieve",
        json={"query": query, "top_k": top_k},
        headers=owner.headers,
    )
    assert response.status_code == 200, response.text
    return list(response.json()["records"])


async def chunks(
    client: httpx.AsyncClient, owner: factories.Account, pid: str, document_id: str
) -> list[dict[str, Any]]:
    response = await client.get(
        f"/projects/{pid}/knowledge/documents/{document_id}/chunks?limit=100",
        headers=owner.headers,
    )
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def stored_versions(app: FastAPI, document_id: str) -> Counter[int]:
    """How many chunk rows the database holds of each of the document's versions, whatever
    retrieval would serve (it reads the current version only)."""
    async with app.state.sessionmaker() as db:
        rows = await db.execute(
            select(KnowledgeChunk.version, func.count())
            .where(KnowledgeChunk.document_id == uuid.UUID(document_id))
            .group_by(KnowledgeChunk.version)
        )
        return Counter({version: count for version, count in rows})
