"""Knowledge documents end to end, on SQLite and Postgres: real files written by the tests,
indexed by the in-process worker (parsing in a child process), retrieved with their pages."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from tests import factories
from tests.knowledge import files
from tests.knowledge.helpers import chunks, retrieve, settled, upload

PAGES = [
    "Welcome to the Acme kettle manual. This page is an introduction.",
    "Filling: open the lid and pour cold water up to the marked line.",
    "Descaling: mix one part vinegar with two parts water, boil, and rinse twice. "
    "Descale the kettle every month in hard water areas.",
    "Warranty: the kettle is covered for two years from the date of purchase.",
]


async def test_a_pdf_answer_on_page_3_is_retrieved_with_page_3(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    response = await upload(client, owner, pid, "manual.pdf", files.pdf(PAGES))
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "queued"
    assert (accepted["mime_type"], accepted["source"]) == ("application/pdf", "upload")
    assert accepted["title"] == "manual.pdf" and accepted["size_bytes"] > 0

    document = await settled(client, owner, pid, accepted["id"])
    assert document["status"] == "ready", document
    assert document["page_count"] == 4 and document["chunk_count"] >= 1
    records = await retrieve(client, owner, pid, "How do I descale the kettle with vinegar?")
    best = records[0]
    assert best["chunk"]["page_start"] <= 3 <= best["chunk"]["page_end"]
    assert "vinegar" in best["chunk"]["text"]
    assert best["document"] == {"id": accepted["id"], "title": "manual.pdf"}
    stored = await chunks(client, owner, pid, accepted["id"])
    assert [c["position"] for c in stored] == list(range(len(stored)))
    for chunk in stored:  # the offsets point into the document's text, page by page
        assert chunk["char_end"] - chunk["char_start"] == len(chunk["text"])
        assert 1 <= chunk["page_start"] <= chunk["page_end"] <= 4


async def test_small_chunks_of_a_pdf_each_keep_their_own_page(
    make_client: object, app: FastAPI
) -> None:
    client: httpx.AsyncClient = await make_client(  # type: ignore[operator]
        KNOWLEDGE_CHUNK_MIN_CHARS=50, KNOWLEDGE_CHUNK_MAX_CHARS=100
    )
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    accepted = (await upload(client, owner, pid, "manual.pdf", files.pdf(PAGES))).json()
    assert (await settled(client, owner, pid, accepted["id"]))["status"] == "ready"
    stored = await chunks(client, owner, pid, accepted["id"])
    assert len(stored) >= 4
    warranty = next(c for c in stored if "Warranty" in c["text"])
    assert (warranty["page_start"], warranty["page_end"]) == (4, 4)
    [best] = await retrieve(client, owner, pid, "warranty purchase", top_k=1)
    assert best["chunk"]["page_start"] == 4


async def test_html_docx_markdown_and_text_are_indexed_with_their_headings(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    sections = [("Shipping", "Orders ship within two business days."), ("Returns", "")]
    made = {
        "guide.html": files.html([("Shipping", "Parcels leave the warehouse by courier.")]),
        "policy.docx": files.docx_file([("Refunds", "Refunds reach your card in five days.")]),
        "faq.md": b"# FAQ\n\n## Payment\n\nWe accept bank transfer and QRIS.\n",
        "notes.txt": "Store hours: nine to five, Monday to Saturday. Caf\u00e9 inside.".encode(),
    }
    ids = {}
    for name, content in made.items():
        response = await upload(client, owner, pid, name, content, title=name.upper())
        assert response.status_code == 202, (name, response.text)
        ids[name] = response.json()["id"]
    assert sections  # the HTML helper takes the same shape
    kinds = {}
    for name, document_id in ids.items():
        document = await settled(client, owner, pid, document_id)
        assert document["status"] == "ready", (name, document)
        assert document["page_count"] is None and document["title"] == name.upper()
        kinds[name] = document["mime_type"]
    assert kinds == {
        "guide.html": "text/html",
        "policy.docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "faq.md": "text/markdown",
        "notes.txt": "text/plain",
    }
    [courier] = await retrieve(client, owner, pid, "courier warehouse", top_k=1)
    assert courier["document"]["id"] == ids["guide.html"]
    assert courier["chunk"]["heading"] == "Guide > Shipping"
    assert "never indexed" not in courier["chunk"]["text"]  # scripts are not text
    [refund] = await retrieve(client, owner, pid, "card refunds", top_k=1)
    assert refund["document"]["id"] == ids["policy.docx"]
    assert refund["chunk"]["heading"] == "Refunds"
    [qris] = await retrieve(client, owner, pid, "Do you take QRIS?", top_k=1)
    assert qris["chunk"]["heading"] == "FAQ > Payment"
    [hours] = await retrieve(client, owner, pid, "cafe hours", top_k=1)
    assert hours["document"]["id"] == ids["notes.txt"]


async def test_a_text_document_is_indexed_and_a_deleted_one_is_never_retrieved_again(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    made = await factories.document(
        client, owner, pid, "Returns", "# Returns\n\nItems can be returned within 30 days."
    )
    assert made["source"] == "text" and made["mime_type"] == "text/markdown"
    assert (await settled(client, owner, pid, made["id"]))["status"] == "ready"
    assert len(await retrieve(client, owner, pid, "return items")) == 1

    url = f"/projects/{pid}/knowledge/documents/{made['id']}"
    assert (await client.delete(url, headers=owner.headers)).status_code == 204
    assert await retrieve(client, owner, pid, "return items") == []
    assert (await client.get(url, headers=owner.headers)).status_code == 404
    assert (await client.get(f"{url}/chunks", headers=owner.headers)).status_code == 404
    listed = await client.get(f"/projects/{pid}/knowledge/documents", headers=owner.headers)
    assert listed.json()["items"] == []


async def test_a_corrupt_pdf_fails_as_invalid_file_and_the_api_stays_healthy(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    corrupt = b"%PDF-1.7\n" + bytes(range(256)) * 40
    accepted = (await upload(client, owner, pid, "broken.pdf", corrupt)).json()
    document = await settled(client, owner, pid, accepted["id"])
    assert document["status"] == "failed"
    assert document["error"]["code"] == "invalid_file", document
    assert (await client.get("/health")).status_code == 200

    scanned = (await upload(client, owner, pid, "scan.pdf", files.scanned_pdf())).json()
    document = await settled(client, owner, pid, scanned["id"])
    assert (document["status"], document["error"]["code"]) == ("failed", "no_text")
    assert "OCR" in document["error"]["message"]

    listed = await client.get(
        f"/projects/{pid}/knowledge/documents?status=failed", headers=owner.headers
    )
    assert {d["id"] for d in listed.json()["items"]} == {accepted["id"], scanned["id"]}
    retried = await client.post(
        f"/projects/{pid}/knowledge/documents/{accepted['id']}/retry", headers=owner.headers
    )
    assert retried.status_code == 202 and retried.json()["status"] == "queued"
    assert retried.json()["error"] is None
    again = await settled(client, owner, pid, accepted["id"])
    assert again["error"]["code"] == "invalid_file"


async def test_uploads_that_are_not_documents_or_too_large_are_refused_up_front(
    make_client: object, app: FastAPI
) -> None:
    client: httpx.AsyncClient = await make_client(  # type: ignore[operator]
        KNOWLEDGE_MAX_FILE_BYTES=50_000
    )
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    binary = await upload(client, owner, pid, "photo.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    assert binary.status_code == 415
    assert binary.json()["error"]["code"] == "unsupported_file"
    big = await upload(client, owner, pid, "big.txt", b"word " * 20_000)
    assert big.status_code == 413
    assert big.json()["error"]["code"] in ("too_large", "payload_too_large")
    no_file = await client.post(
        f"/projects/{pid}/knowledge/documents",
        data={"title": "nothing"},
        files={"other": ("x.txt", b"x", "text/plain")},
        headers=owner.headers,
    )
    assert no_file.status_code == 422
    xml = await client.post(
        f"/projects/{pid}/knowledge/documents",
        content=b"<doc/>",
        headers={**owner.headers, "content-type": "application/xml"},
    )
    assert xml.status_code == 415
    bad_json = await client.post(
        f"/projects/{pid}/knowledge/documents", json={"title": ""}, headers=owner.headers
    )
    assert bad_json.status_code == 422
    nul = await upload(client, owner, pid, "a.txt", b"hello", title="bad\x00title")
    assert nul.status_code == 422
    # Multipart bodies skip the NUL guard only on the upload routes.
    elsewhere = await client.post(
        "/auth/login", files={"username": (None, "a\x00@example.com"), "password": (None, "pw")}
    )
    assert elsewhere.status_code == 422
    assert "NUL" in elsewhere.json()["error"]["message"]
    listed = await client.get(f"/projects/{pid}/knowledge/documents", headers=owner.headers)
    assert listed.json()["items"] == []  # nothing refused was stored


async def test_two_tenants_with_identical_documents_each_retrieve_only_their_own(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    found = {}
    tenants = []
    for _ in range(2):
        owner = await factories.account(client)
        pid = (await factories.create_project(client, owner))["id"]
        made = await factories.document(client, owner, pid, "Same", "Identical secret recipe.")
        assert (await settled(client, owner, pid, made["id"]))["status"] == "ready"
        tenants.append((owner, pid, made["id"]))
    for owner, pid, document_id in tenants:
        records = await retrieve(client, owner, pid, "identical secret recipe", top_k=20)
        found[pid] = {r["document"]["id"] for r in records}
        assert found[pid] == {document_id}
    (first, first_pid, _), (_, second_pid, second_doc) = tenants
    other = await client.post(
        f"/projects/{second_pid}/knowledge/retrieve",
        json={"query": "identical"},
        headers=first.headers,
    )
    assert other.status_code == 404
    assert second_doc not in found[first_pid]


async def test_a_project_key_with_knowledge_read_retrieves_from_its_own_project_only(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    other = (await factories.create_project(client, owner, name="Other"))["id"]
    made = await factories.document(client, owner, pid, "Hours", "Open at nine.")
    await settled(client, owner, pid, made["id"])
    reader = await factories.api_key(client, owner, pid, scopes=["knowledge:read"])
    chat_only = await factories.api_key(client, owner, pid, scopes=["chat"])
    body = {"query": "open nine"}

    def url(project: str) -> str:
        return f"/projects/{project}/knowledge/retrieve"

    found = await client.post(url(pid), json=body, headers=factories.key_headers(reader["key"]))
    assert found.status_code == 200 and len(found.json()["records"]) == 1
    elsewhere = await client.post(
        url(other), json=body, headers=factories.key_headers(reader["key"])
    )
    assert elsewhere.status_code == 404
    refused = await client.post(
        url(pid), json=body, headers=factories.key_headers(chat_only["key"])
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_scope"
    listing = await client.get(
        f"/projects/{pid}/knowledge/documents", headers=factories.key_headers(reader["key"])
    )
    assert listing.status_code == 403  # keys retrieve; they do not manage documents
