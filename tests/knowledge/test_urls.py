"""`{url}` documents: fetched by the indexing job through the outbound guard (redirects
followed, each connection checked), then indexed like an upload; errors say what happened."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from tests import factories
from tests.knowledge import files
from tests.knowledge.helpers import retrieve, settled
from tests.live import serve

MANUAL = files.pdf(["Cover page.", "Page two.", "Descale with vinegar every month."])


def _site() -> Starlette:
    async def manual(_: Request) -> Response:
        return Response(MANUAL, media_type="application/pdf")

    async def moved(_: Request) -> Response:
        return RedirectResponse("/files/manual.pdf", status_code=302)

    async def missing(_: Request) -> Response:
        return Response("no such page", status_code=404)

    async def image(_: Request) -> Response:
        return Response(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, media_type="image/png")

    return Starlette(
        routes=[
            Route("/files/manual.pdf", manual),
            Route("/latest", moved),
            Route("/gone", missing),
            Route("/logo.png", image),
        ]
    )


async def _add(
    client: httpx.AsyncClient, owner: factories.Account, pid: str, url: str
) -> httpx.Response:
    return await client.post(
        f"/projects/{pid}/knowledge/documents", json={"url": url}, headers=owner.headers
    )


async def test_a_url_is_fetched_through_its_redirect_and_indexed_with_pages(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    async with serve(_site()) as site:
        response = await _add(client, owner, pid, f"{site}/latest")
        assert response.status_code == 202, response.text
        accepted = response.json()
        assert (accepted["source"], accepted["source_url"]) == ("url", f"{site}/latest")
        assert accepted["title"] == f"{site}/latest"
        document = await settled(client, owner, pid, accepted["id"])
    assert document["status"] == "ready", document
    assert (document["mime_type"], document["page_count"]) == ("application/pdf", 3)
    assert document["size_bytes"] == len(MANUAL)
    [hit] = await retrieve(client, owner, pid, "vinegar", top_k=1)
    assert hit["chunk"]["page_start"] <= 3 <= hit["chunk"]["page_end"]
    kept = await client.get(
        f"/projects/{pid}/knowledge/documents/{accepted['id']}/file", headers=owner.headers
    )
    assert kept.content == MANUAL  # kept like an upload: retries need no new fetch to read it

    replaced = await client.put(
        f"/projects/{pid}/knowledge/documents/{accepted['id']}/file",
        files={"file": ("notes.md", b"# Notes\n\nNow an uploaded file about teapots.")},
        headers=owner.headers,
    )
    assert replaced.status_code == 202 and replaced.json()["source_url"] is None
    assert (await settled(client, owner, pid, accepted["id"]))["status"] == "ready"
    [teapot] = await retrieve(client, owner, pid, "teapots", top_k=1)
    assert teapot["document"]["id"] == accepted["id"]
    assert await retrieve(client, owner, pid, "vinegar") == []


async def test_a_url_that_fails_says_why(app: FastAPI, client: httpx.AsyncClient) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    async with serve(_site()) as site:
        gone = (await _add(client, owner, pid, f"{site}/gone")).json()
        image = (await _add(client, owner, pid, f"{site}/logo.png")).json()
        missing = await settled(client, owner, pid, gone["id"])
        picture = await settled(client, owner, pid, image["id"])
    assert (missing["status"], missing["error"]["code"]) == ("failed", "fetch_failed")
    assert "404" in missing["error"]["message"]
    assert picture["error"]["code"] == "unsupported_file"
    bad = await _add(client, owner, pid, "ftp://example.com/file.pdf")
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "url_not_allowed"


async def test_a_private_address_is_refused_when_private_networks_are_not_allowed(
    make_client: Callable[..., Any], app: FastAPI
) -> None:
    client = await make_client(OUTBOUND_ALLOW_PRIVATE_NETWORKS=False)
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    refused = await _add(client, owner, pid, "http://127.0.0.1:9/secret.pdf")
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "url_not_allowed"
    listed = await client.get(f"/projects/{pid}/knowledge/documents", headers=owner.headers)
    assert listed.json()["items"] == []
