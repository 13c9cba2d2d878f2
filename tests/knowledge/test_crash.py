"""A worker killed (SIGKILL) while it indexes a document: the upload was committed before the
202, the job's lease runs out, and the next worker indexes it. The document ends `ready`, with
each chunk once."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select

from app.core.db import create_engine
from app.models import KnowledgeChunk
from tests import factories
from tests.conftest import make_settings
from tests.knowledge import files
from tests.knowledge.helpers import chunks, retrieve, settled, upload
from tests.live import worker_process
from tests.waiting import until


async def test_a_worker_killed_while_indexing_leaves_one_ready_copy(
    make_client: Callable[..., Any], database_url: str
) -> None:
    client = await make_client(WORKERS_IN_API=False)  # only the worker processes index
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    pages = [f"Page {n}: the pump model P{n} has a flow of {n * 10} litres." for n in range(1, 300)]
    made = (await upload(client, owner, pid, "catalogue.pdf", files.pdf(pages))).json()
    url = f"/projects/{pid}/knowledge/documents/{made['id']}"

    async def status() -> str:
        return str((await client.get(url, headers=owner.headers)).json()["status"])

    async with worker_process(database_url) as doomed:
        await until(status, lambda s: s == "indexing", polls=600, every=0.02, what="indexing")
        doomed.kill()
        await doomed.wait()
    assert await status() == "indexing"  # the job's lease is still running
    async with worker_process(database_url):
        document = await settled(client, owner, pid, made["id"])
    assert document["status"] == "ready", document
    assert document["page_count"] == 299

    stored = await chunks(client, owner, pid, made["id"])
    engine = create_engine(make_settings(database_url))
    try:
        async with engine.connect() as db:
            rows = (
                await db.execute(
                    select(KnowledgeChunk.version, KnowledgeChunk.position, func.count())
                    .where(KnowledgeChunk.document_id == uuid.UUID(made["id"]))
                    .group_by(KnowledgeChunk.version, KnowledgeChunk.position)
                )
            ).all()
    finally:
        await engine.dispose()
    assert rows and all(count == 1 for _, _, count in rows)
    assert {version for version, _, _ in rows} == {1}
    assert len(rows) == document["chunk_count"] >= len(stored)
    [hit] = await retrieve(client, owner, pid, "P123", top_k=1)
    assert hit["chunk"]["page_start"] <= 123 <= hit["chunk"]["page_end"]
