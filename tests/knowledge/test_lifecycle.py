"""A document's life after it is indexed: renamed, disabled, downloaded, its file replaced
(the old version serves until the new one is swapped in), and every change audited."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from tests import factories
from tests.knowledge import files
from tests.knowledge.helpers import chunks, retrieve, settled, stored_versions, upload


async def test_a_disabled_document_is_kept_but_not_retrieved(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    made = await factories.document(client, owner, pid, "Hours", "We open at nine o'clock.")
    await settled(client, owner, pid, made["id"])
    url = f"/projects/{pid}/knowledge/documents/{made['id']}"

    changed = await client.patch(
        url,
        json={"title": "Opening hours", "enabled": False, "metadata": {"lang": "en"}},
        headers=owner.headers,
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["title"], body["enabled"], body["metadata"]) == (
        "Opening hours",
        False,
        {"lang": "en"},
    )
    assert body["status"] == "ready"  # nothing re-indexed
    assert await retrieve(client, owner, pid, "open nine") == []
    assert (await client.patch(url, json={"enabled": True}, headers=owner.headers)).is_success
    [hit] = await retrieve(client, owner, pid, "open nine")
    assert hit["document"]["title"] == "Opening hours"
    refused = await client.patch(url, json={"title": None}, headers=owner.headers)
    assert refused.status_code == 422
    assert (
        await client.patch(url, json={"size_bytes": 1}, headers=owner.headers)
    ).status_code == 422


async def test_the_original_file_downloads_as_uploaded(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    content = files.pdf(["page one " * 200, "page two " * 200])
    made = (await upload(client, owner, pid, "kettle manual.pdf", content)).json()
    response = await client.get(
        f"/projects/{pid}/knowledge/documents/{made['id']}/file", headers=owner.headers
    )
    assert response.status_code == 200
    assert response.content == content
    assert response.headers["content-type"] == "application/pdf"
    assert "kettle%20manual.pdf" in response.headers["content-disposition"]
    text = await factories.document(client, owner, pid, "Note", "Just text.")
    response = await client.get(
        f"/projects/{pid}/knowledge/documents/{text['id']}/file", headers=owner.headers
    )
    assert response.content == b"Just text."


async def test_a_replaced_file_is_swapped_in_whole_and_the_old_chunks_are_gone(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    first = (
        await upload(
            client, owner, pid, "prices.md", b"# Prices\n\nThe basic plan costs ten euros."
        )
    ).json()
    await settled(client, owner, pid, first["id"])
    old = {c["id"] for c in await chunks(client, owner, pid, first["id"])}
    assert await retrieve(client, owner, pid, "basic plan euros")

    replaced = await client.put(
        f"/projects/{pid}/knowledge/documents/{first['id']}/file",
        files={"file": ("prices.md", b"# Prices\n\nThe premium plan costs forty dollars.")},
        headers=owner.headers,
    )
    assert replaced.status_code == 202, replaced.text
    assert replaced.json()["status"] == "queued" and replaced.json()["id"] == first["id"]
    # Until the new version is in, the old one serves; afterwards only the new one.
    document = await settled(client, owner, pid, first["id"])
    assert document["status"] == "ready" and document["sha256"] != first["sha256"]
    new = await chunks(client, owner, pid, first["id"])
    assert {c["id"] for c in new}.isdisjoint(old)
    # Deleted, not merely unserved: the database keeps the new version's rows alone.
    assert await stored_versions(app, first["id"]) == {2: len(new)}
    assert await retrieve(client, owner, pid, "basic euros") == []
    [hit] = await retrieve(client, owner, pid, "premium dollars")
    assert hit["chunk"]["id"] in {c["id"] for c in new}

    mine = (await client.get("/workspaces", headers=owner.headers)).json()["items"]
    workspace = next(w for w in mine if w["is_personal"])["id"]
    audit = await client.get(
        f"/workspaces/{workspace}/audit-log?target_type=document", headers=owner.headers
    )
    entries = audit.json()["items"]
    assert [e["action"] for e in entries] == ["document.file_replaced", "document.created"]
    assert entries[0]["target_id"] == first["id"]
    assert entries[0]["actor"]["id"] == owner.user_id


async def test_retrieval_filters_keep_to_documents_and_metadata(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    made = []
    for title, lang, year in (
        ("Kettle EN", "en", 2026),
        ("Kettle ID", "id", 2026),
        ("Old", "en", 2020),
    ):
        response = await client.post(
            f"/projects/{pid}/knowledge/documents",
            json={
                "title": title,
                "text": "Descale the kettle every fourteen days.",
                "metadata": {"lang": lang, "year": year, "public": True},
            },
            headers=owner.headers,
        )
        assert response.status_code == 202, response.text
        made.append(response.json())
        await settled(client, owner, pid, made[-1]["id"])
    url = f"/projects/{pid}/knowledge/retrieve"

    async def titles(filters: dict[str, object]) -> list[str]:
        body = {"query": "descale kettle", "filters": filters}
        response = await client.post(url, json=body, headers=owner.headers)
        assert response.status_code == 200, response.text
        return sorted(r["document"]["title"] for r in response.json()["records"])

    assert await titles({}) == ["Kettle EN", "Kettle ID", "Old"]
    assert await titles({"metadata": {"lang": "en"}}) == ["Kettle EN", "Old"]
    assert await titles({"metadata": {"lang": "en", "year": 2026}}) == ["Kettle EN"]
    assert await titles({"metadata": {"public": True}}) == ["Kettle EN", "Kettle ID", "Old"]
    assert await titles({"metadata": {"lang": "fr"}}) == []
    assert await titles({"document_ids": [made[1]["id"], made[2]["id"]]}) == ["Kettle ID", "Old"]
    assert await titles({"document_ids": [made[0]["id"]], "metadata": {"lang": "id"}}) == []
    assert await titles({"document_ids": []}) == []
    for bad in ({"metadata": {"bad key": 1}}, {"colour": "red"}, {"metadata": {"k": [1]}}):
        body = {"query": "kettle", "filters": bad}
        response = await client.post(url, json=body, headers=owner.headers)
        assert response.status_code == 422, (bad, response.text)
