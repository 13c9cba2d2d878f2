"""Semantic and hybrid search, with an embedding model configured (EMBEDDINGS_*): the fake
upstream's `/v1/embeddings` speaks OpenAI's wire format and embeds by hashed character
trigrams, so a misspelt question that keyword search cannot match still finds its chunk."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests import factories
from tests.conftest import UPSTREAM_BASE_URL
from tests.fake_openai import Behaviour, FakeOpenAI
from tests.knowledge.helpers import chunks, settled, upload
from tests.waiting import until

EMBEDDINGS = {
    "EMBEDDINGS_BASE_URL": UPSTREAM_BASE_URL,
    "EMBEDDINGS_MODEL": "fake-embed",
    "EMBEDDINGS_DIMENSIONS": 128,
    "EMBEDDINGS_BATCH_SIZE": 2,  # several batches, even for small documents
    "JOBS_POLL_SECONDS": 0.05,
    "KNOWLEDGE_CHUNK_MIN_CHARS": 50,  # a chunk a section
    "KNOWLEDGE_CHUNK_MAX_CHARS": 160,
}
MANUAL = (
    "# Kettle\n\n## Descaling\n\nFill with vinegar and water, boil, and leave for thirty "
    "minutes. Repeat every fourteen days.\n\n## Warranty\n\nThe warranty covers two years "
    "from the date of purchase.\n\n## Cleaning\n\nWipe the outside with a damp cloth."
)
MISSPELT = "dscaling vinegr"  # no word of it is in the manual, even stemmed


async def embedded(
    client: httpx.AsyncClient, owner: factories.Account, pid: str, document_id: str
) -> dict[str, Any]:
    """The document once every chunk has a vector."""
    await settled(client, owner, pid, document_id)

    async def read() -> dict[str, Any]:
        response = await client.get(
            f"/projects/{pid}/knowledge/documents/{document_id}", headers=owner.headers
        )
        return dict(response.json())

    return await until(
        read,
        lambda d: d["status"] == "ready" and d["chunks_embedded"] == d["chunk_count"],
        polls=400,
        what="embedding",
    )


async def search(
    client: httpx.AsyncClient,
    owner: factories.Account,
    pid: str,
    query: str,
    method: str | None = None,
    **body: Any,
) -> dict[str, Any]:
    if method is not None:
        body["search_method"] = method
    response = await client.post(
        f"/projects/{pid}/knowledge/retrieve",
        json={"query": query, **body},
        headers=owner.headers,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _manual(
    client: httpx.AsyncClient, **project: Any
) -> tuple[factories.Account, str, dict[str, Any]]:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner, **project))["id"]
    made = await factories.document(client, owner, pid, "Kettle manual", MANUAL)
    return owner, pid, await embedded(client, owner, pid, made["id"])


async def test_meaning_finds_what_keywords_cannot_and_hybrid_fuses_both(
    make_client: Callable[..., Any], upstream: FakeOpenAI
) -> None:
    client = await make_client(**EMBEDDINGS)
    owner, pid, document = await _manual(client)
    assert document["chunks_embedded"] == document["chunk_count"] > 1
    # Sent as OpenAI's API has it, in batches of EMBEDDINGS_BATCH_SIZE.
    first = upstream.embedding_requests[0]
    assert first["model"] == "fake-embed" and first["dimensions"] == 128
    assert first["encoding_format"] == "float" and 1 <= len(first["input"]) <= 2
    assert not upstream.requests  # no chat completion for indexing

    assert (await search(client, owner, pid, MISSPELT, "keyword"))["records"] == []
    semantic = await search(client, owner, pid, MISSPELT, "semantic", top_k=1)
    [hit] = semantic["records"]
    assert semantic["search_method"] == "semantic"
    assert "Repeat every fourteen days" in hit["chunk"]["text"]
    assert hit["ranks"] == {"keyword": None, "semantic": 1}
    assert 0 < hit["score"] <= 1  # a cosine
    # The question went to the model too.
    assert upstream.embedding_requests[-1]["input"] == [MISSPELT]

    # By default, with an embedding model: hybrid. A chunk both rankings hold ranks first.
    hybrid = await search(client, owner, pid, "warranty purchase years")
    assert hybrid["search_method"] == "hybrid"
    best = hybrid["records"][0]
    assert "two years" in best["chunk"]["text"]
    assert best["ranks"] == {"keyword": 1, "semantic": 1}
    assert best["score"] == pytest.approx(2 / 61)
    scores = [r["score"] for r in hybrid["records"]]
    assert scores == sorted(scores, reverse=True)


async def test_a_new_version_embeds_only_the_chunks_whose_text_changed(
    make_client: Callable[..., Any], upstream: FakeOpenAI
) -> None:
    client = await make_client(**EMBEDDINGS)
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    sections = [
        f"## Part {n}\n\n" + f"Section {n} talks about topic{n} at length. " * 12 for n in range(6)
    ]
    made = (await upload(client, owner, pid, "guide.md", "\n\n".join(sections).encode())).json()
    before = await embedded(client, owner, pid, made["id"])
    old = {c["id"]: c["text"] for c in await chunks(client, owner, pid, made["id"])}
    upstream.embedding_requests.clear()

    sections[4] = "## Part 4\n\nThis part now says something else entirely: zebras. " * 3
    replaced = await client.put(
        f"/projects/{pid}/knowledge/documents/{made['id']}/file",
        files={"file": ("guide.md", "\n\n".join(sections).encode())},
        headers=owner.headers,
    )
    assert replaced.status_code == 202, replaced.text
    await until(
        lambda: client.get(
            f"/projects/{pid}/knowledge/documents/{made['id']}", headers=owner.headers
        ),
        lambda r: r.json()["status"] == "ready" and r.json()["indexed_at"] != before["indexed_at"],
        polls=400,
        what="re-indexing",
    )
    after = await embedded(client, owner, pid, made["id"])
    new = {c["id"]: c["text"] for c in await chunks(client, owner, pid, made["id"])}
    changed = [text for text in new.values() if text not in old.values()]
    sent = [text for request in upstream.embedding_requests for text in request["input"]]
    assert changed and sorted(sent) == sorted(changed)
    assert after["chunks_embedded"] == after["chunk_count"] == len(new)
    # Only the new version is found by meaning; the old chunks are gone with their vectors.
    found = await search(client, owner, pid, "zebras something else", "semantic", top_k=20)
    assert {r["chunk"]["id"] for r in found["records"]} <= set(new)
    assert "zebras" in found["records"][0]["chunk"]["text"]


async def test_deleted_disabled_and_filtered_documents_are_not_found_by_meaning(
    make_client: Callable[..., Any],
) -> None:
    client = await make_client(**EMBEDDINGS)
    owner, pid, manual = await _manual(client)
    other = await factories.document(client, owner, pid, "Second manual", MANUAL)
    await embedded(client, owner, pid, other["id"])

    def documents(result: dict[str, Any]) -> set[str]:
        return {r["document"]["id"] for r in result["records"]}

    both = await search(client, owner, pid, MISSPELT, "semantic", top_k=10)
    assert documents(both) == {manual["id"], other["id"]}
    only = await search(
        client, owner, pid, MISSPELT, "semantic", filters={"document_ids": [other["id"]]}
    )
    assert documents(only) == {other["id"]}
    none = await search(client, owner, pid, MISSPELT, "hybrid", filters={"metadata": {"x": 1}})
    assert none["records"] == []

    disabled = await client.patch(
        f"/projects/{pid}/knowledge/documents/{manual['id']}",
        json={"enabled": False},
        headers=owner.headers,
    )
    assert disabled.status_code == 200
    assert documents(await search(client, owner, pid, MISSPELT, "semantic", top_k=10)) == {
        other["id"]
    }
    deleted = await client.delete(
        f"/projects/{pid}/knowledge/documents/{other['id']}", headers=owner.headers
    )
    assert deleted.status_code == 204
    assert (await search(client, owner, pid, MISSPELT, "semantic"))["records"] == []


async def test_semantic_search_sees_only_the_asking_projects_chunks(
    make_client: Callable[..., Any],
) -> None:
    client = await make_client(**EMBEDDINGS)
    alice, alice_pid, alice_doc = await _manual(client)
    bob, bob_pid, bob_doc = await _manual(client)
    for owner, pid, own in ((alice, alice_pid, alice_doc), (bob, bob_pid, bob_doc)):
        for method in ("semantic", "hybrid"):
            found = await search(client, owner, pid, MISSPELT, method, top_k=20)
            assert {r["document"]["id"] for r in found["records"]} == {own["id"]}
    # Another tenant's project: 404, whatever the method.
    response = await client.post(
        f"/projects/{alice_pid}/knowledge/retrieve",
        json={"query": MISSPELT, "search_method": "semantic"},
        headers=bob.headers,
    )
    assert response.status_code == 404


async def test_a_failing_embedding_model_leaves_keyword_search_working(
    make_client: Callable[..., Any], upstream: FakeOpenAI
) -> None:
    client = await make_client(**EMBEDDINGS)
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    upstream.script_embeddings(Behaviour(kind="status", status=503))
    made = await factories.document(client, owner, pid, "Kettle manual", MANUAL)
    # Ready for keywords at once; the failed batch is retried by the job, and completes.
    document = await embedded(client, owner, pid, made["id"])
    assert document["chunks_embedded"] == document["chunk_count"]
    assert len(upstream.embedding_requests) > document["chunk_count"] // 2  # one more, failed

    # A question the model cannot embed is searched by keyword, and says so.
    upstream.script_embeddings(Behaviour(kind="status", status=500))
    result = await search(client, owner, pid, "warranty purchase")
    assert result["search_method"] == "keyword"
    assert "two years" in result["records"][0]["chunk"]["text"]
    assert result["records"][0]["ranks"] == {"keyword": 1, "semantic": None}


async def test_a_search_method_needs_an_embedding_model(client: httpx.AsyncClient) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    for method in ("semantic", "hybrid"):
        response = await client.post(
            f"/projects/{pid}/knowledge/retrieve",
            json={"query": "kettle", "search_method": method},
            headers=owner.headers,
        )
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "embeddings_not_configured"
        assert error["details"][0]["field"] == "search_method"
        created = await client.post(
            "/projects",
            json={"name": "x", "knowledge": {"enabled": True, "search_method": method}},
            headers=owner.headers,
        )
        assert created.status_code == 422, created.text
        assert created.json()["error"]["details"][0]["field"] == "knowledge.search_method"
    bad = await client.post(
        f"/projects/{pid}/knowledge/retrieve",
        json={"query": "kettle", "search_method": "fuzzy"},
        headers=owner.headers,
    )
    assert bad.status_code == 422
    keyword = await search(client, owner, pid, "kettle", "keyword")
    assert keyword == {"query": "kettle", "search_method": "keyword", "records": []}


async def test_a_grounded_turn_cites_what_only_meaning_found(
    make_client: Callable[..., Any], upstream: FakeOpenAI
) -> None:
    client = await make_client(**EMBEDDINGS)
    owner, pid, manual = await _manual(
        client, knowledge={"enabled": True, "top_k": 1, "search_method": "hybrid"}
    )
    for _ in range(2):  # the first turn reads the project; the second embeds before it
        turn = await factories.chat(client, owner, pid, MISSPELT)
        [citation] = turn["citations"]
        assert citation["document_id"] == manual["id"]
        assert "Fill with vinegar" in citation["snippet"]
        assert "Repeat every fourteen days." in upstream.last_request["messages"][1]["content"]
        assert upstream.embedding_requests[-1]["input"] == [MISSPELT]
