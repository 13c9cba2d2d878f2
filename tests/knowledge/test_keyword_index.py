"""What indexing leaves behind for keyword search: a file of several stored parts read whole,
and (Postgres) `kb_terms` equal to the lexemes of the chunks retrieval serves after documents
are indexed at once, re-indexed and deleted."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.knowledge.service import PART_BYTES
from tests import factories
from tests.knowledge import files
from tests.knowledge.helpers import retrieve, settled, stored_versions, upload


async def test_a_file_of_several_parts_is_indexed_whole(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    filler = "<!-- " + "x" * (2 * PART_BYTES + 1000) + " -->"  # three parts, no text
    content = (
        "<html><body><h1>Pumps</h1><p>The intake valve opens first.</p>"
        f"{filler}<p>The outlet gasket closes last.</p></body></html>"
    ).encode()
    made = (await upload(client, owner, pid, "pumps.html", content)).json()
    document = await settled(client, owner, pid, made["id"])
    assert document["status"] == "ready", document
    assert document["size_bytes"] == len(content)
    assert document["char_count"] < 200  # the comment is no text
    [first] = await retrieve(client, owner, pid, "intake valve", top_k=1)
    [last] = await retrieve(client, owner, pid, "outlet gasket", top_k=1)
    assert "intake valve" in first["chunk"]["text"]
    assert "outlet gasket" in last["chunk"]["text"]  # from the file's last part


async def _terms(app: FastAPI, pid: str) -> tuple[Counter[str], Counter[str]]:
    """(kb_terms' counts above zero, the lexemes of the chunks each document serves)."""
    project = uuid.UUID(pid)
    async with app.state.sessionmaker() as db:
        stored = await db.execute(
            text("SELECT term, chunks FROM kb_terms WHERE project_id = :p AND chunks <> 0"),
            {"p": project},
        )
        served = await db.execute(
            text(
                "SELECT u.term, count(*) FROM kb_chunks AS c"
                " JOIN kb_documents AS d ON d.id = c.document_id"
                " AND d.index_version = c.version,"
                " unnest(tsvector_to_array(c.tsv)) AS u(term)"
                " WHERE c.project_id = :p GROUP BY u.term"
            ),
            {"p": project},
        )
        return Counter({t: n for t, n in stored}), Counter({t: n for t, n in served})


async def test_term_counts_follow_documents_indexed_at_once_replaced_and_deleted(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    if app.state.engine.dialect.name != "postgresql":
        pytest.skip("kb_terms is Postgres's (SQLite's FTS5 keeps its own statistics)")
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    words = ["pump", "valve", "gasket", "filter", "motor", "seal", "hose", "clamp"]
    pages = [
        [f"The {words[n]} and the {words[(n + k) % 8]} of model {n}{k} wear out." * 30]
        for n in range(6)
        for k in (1, 2)
    ]
    # Twelve documents sharing most of their words, indexed four at a time by the worker.
    made = await asyncio.gather(
        *(upload(client, owner, pid, f"m{n}.pdf", files.pdf(p)) for n, p in enumerate(pages))
    )
    ids = [response.json()["id"] for response in made]
    for document_id in ids:
        assert (await settled(client, owner, pid, document_id))["status"] == "ready"
    stored, served = await _terms(app, pid)
    assert served["pump"] > 0 and stored == served

    replaced = await client.put(
        f"/projects/{pid}/knowledge/documents/{ids[0]}/file",
        files={"file": ("m0.md", b"# Notes\n\nThe impeller of the pump is bronze.")},
        headers=owner.headers,
    )
    assert replaced.status_code == 202, replaced.text
    assert (await settled(client, owner, pid, ids[0]))["status"] == "ready"
    deleted = await client.delete(
        f"/projects/{pid}/knowledge/documents/{ids[1]}", headers=owner.headers
    )
    assert deleted.status_code == 204
    stored, served = await _terms(app, pid)
    assert served["impel"] == 1 and stored == served
    assert await stored_versions(app, ids[1]) == {}  # the old rows are gone, not just unserved
    assert list(await stored_versions(app, ids[0])) == [2]
    [hit] = await retrieve(client, owner, pid, "impeller bronze", top_k=1)
    assert hit["document"]["id"] == ids[0]
