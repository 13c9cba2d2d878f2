"""Knowledge in chat turns: the best chunks go into the prompt as numbered sources, and every
reply shape carries them as `citations` down to the page. Over real HTTP: the API and the
fake LLM upstream are real servers, and the OpenAI SDK reads `/v1`."""

from __future__ import annotations

from typing import Any

import httpx
import openai
from fastapi import FastAPI

from tests import factories
from tests.channels.helpers import fake_whatsapp, messages, meta_channel, only_conversation, say
from tests.conftest import Live
from tests.fake_openai import Behaviour, FakeOpenAI
from tests.knowledge import files
from tests.knowledge.helpers import settled, upload
from tests.live import stream_request
from tests.waiting import until

FILLER = " Lorem ipsum dolor sit amet, consectetur adipiscing elit." * 24  # a page each
PAGES = [
    text + FILLER
    for text in (
        "Welcome to the Aurora kettle manual. Read all safety notes before first use.",
        "Cleaning: wipe the outside with a damp cloth. Never immerse the base in water.",
        "Descaling: fill with one part vinegar and two parts water, boil, and leave for "
        "thirty minutes. Repeat every fourteen days in hard water areas.",
        "Warranty: the kettle is covered for two years from the date of purchase.",
    )
]
QUESTION = "How often should I descale the kettle with vinegar?"
KNOWLEDGE = {"enabled": True, "top_k": 3, "max_context_tokens": 800}
KNOWLEDGE_ON = {"enabled": True}


def sources_in(request: dict[str, Any]) -> str:
    """The system message that holds the sources, as the upstream received it."""
    [message] = [m for m in request["messages"] if m["role"] == "system" and "[1]" in m["content"]]
    return str(message["content"])


async def _grounded(
    api: httpx.AsyncClient, owner: factories.Account, **fields: Any
) -> tuple[str, dict[str, Any]]:
    project = await factories.create_project(api, owner, knowledge=KNOWLEDGE, **fields)
    pid = project["id"]
    made = (await upload(api, owner, pid, "aurora.pdf", files.pdf(PAGES))).json()
    document = await settled(api, owner, pid, made["id"])
    assert document["status"] == "ready", document
    return pid, document


async def _kettle(
    client: httpx.AsyncClient, knowledge: dict[str, Any] | None = KNOWLEDGE_ON
) -> tuple[factories.Account, str, dict[str, Any]]:
    """An account, its project (grounded unless `knowledge` is None) and one indexed Markdown
    document saying how often to descale."""
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner, knowledge=knowledge))["id"]
    made = await factories.document(client, owner, pid, "Kettle", "Descale every fourteen days.")
    await settled(client, owner, pid, made["id"])
    return owner, pid, made


async def test_a_question_answered_on_page_3_is_cited_with_page_3(live: Live) -> None:
    api = await live.api()
    owner = await factories.account(api)
    pid, document = await _grounded(api, owner)
    assert (await api.get(f"/projects/{pid}", headers=owner.headers)).json()["knowledge"] == {
        **KNOWLEDGE,
        "min_score": None,
        "max_documents": None,
        "max_total_bytes": None,
        "max_file_bytes": None,
        "max_pages": None,
        "search_method": None,
    }
    live.upstream.script(Behaviour(content="Descale every fourteen days [1]."))

    turn = await factories.chat(api, owner, pid, QUESTION)

    prompt = sources_in(live.upstream.last_request)
    words = " ".join(prompt.split())  # the PDF's lines wrap
    assert "cite every source you use by its number in square brackets" in words
    assert "[1] aurora.pdf, page 3\n" in prompt
    assert "Repeat every fourteen days in hard water areas." in words
    assert live.upstream.last_request["messages"][-1] == {"role": "user", "content": QUESTION}
    first = turn["citations"][0]
    assert (first["n"], first["document_id"], first["title"]) == (1, document["id"], "aurora.pdf")
    assert (first["page_start"], first["page_end"]) == (3, 3)
    assert first["snippet"].startswith("Descaling: fill with one part vinegar")
    assert first["score"] > 0
    assert turn["reply"] == "Descale every fourteen days [1]."
    assert turn["assistant_message"]["citations"] == turn["citations"]
    # The chunk cited is the one `GET .../chunks` lists, at the offsets it gives.
    listed = await api.get(
        f"/projects/{pid}/knowledge/documents/{document['id']}/chunks", headers=owner.headers
    )
    [chunk] = [c for c in listed.json()["items"] if c["id"] == first["chunk_id"]]
    assert (chunk["char_start"], chunk["char_end"]) == (first["char_start"], first["char_end"])
    # Stored: the session's messages carry the same citations.
    stored = await api.get(f"/sessions/{turn['session_id']}/messages", headers=owner.headers)
    assert stored.json()["items"][-1]["citations"] == turn["citations"]


async def test_a_streamed_turn_has_its_citations_in_session_and_done(live: Live) -> None:
    api = await live.api()
    owner = await factories.account(api)
    pid, document = await _grounded(api, owner)
    response, stream = await stream_request(
        api,
        "POST",
        "/chat",
        json={"project_id": pid, "message": QUESTION, "stream": True},
        headers=owner.headers,
    )
    assert response.status_code == 200
    [session] = stream.of("session")
    [done] = stream.of("done")
    assert session.data["citations"][0]["page_start"] == 3
    assert session.data["citations"][0]["document_id"] == document["id"]
    assert done.data["citations"] == session.data["citations"]
    assert done.data["message"]["citations"] == session.data["citations"]
    # Following the reply again (a reconnect) gives the same `session` event.
    reply_id = session.data["assistant_message_id"]
    _, again = await stream_request(
        api,
        "GET",
        f"/sessions/{session.data['session_id']}/messages/{reply_id}/stream",
        headers=owner.headers,
    )
    assert again.of("session")[0].data["citations"] == session.data["citations"]


async def test_the_stateless_endpoints_carry_citations(live: Live) -> None:
    api = await live.api()
    owner = await factories.account(api)
    pid, document = await _grounded(api, owner)
    key = (await factories.api_key(api, owner, pid))["key"]

    simple = await api.post(
        "/api/v1/chat", json={"message": QUESTION}, headers=factories.key_headers(key)
    )
    assert simple.status_code == 200, simple.text
    assert simple.json()["citations"][0]["page_start"] == 3
    assert "vinegar and two parts water" in sources_in(live.upstream.last_request)
    stored = await api.post(
        "/api/v1/chat",
        json={"message": QUESTION, "persist": True},
        headers=factories.key_headers(key),
    )
    assert stored.json()["citations"] == simple.json()["citations"]

    sdk = openai.AsyncOpenAI(
        base_url=f"{str(api.base_url).rstrip('/')}/v1", api_key=key, max_retries=0
    )
    async with sdk:
        completion = await sdk.chat.completions.create(
            model=pid,
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": QUESTION},
            ],
        )
        extra = completion.model_extra or {}
        assert extra["citations"][0]["page_start"] == 3
        assert extra["citations"][0]["document_id"] == document["id"]
        system = [m["content"] for m in live.upstream.last_request["messages"][:-1]]
        assert system[1] == "Be brief." and "[1] aurora.pdf, page 3" in system[2]
        stream = await sdk.chat.completions.create(
            model=pid, messages=[{"role": "user", "content": QUESTION}], stream=True
        )
        chunks = [chunk async for chunk in stream]
    assert (chunks[0].model_extra or {})["citations"] == extra["citations"]
    assert all("citations" not in (c.model_extra or {}) for c in chunks[1:])


async def test_with_knowledge_off_a_turn_sends_no_sources(
    app: FastAPI, client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    owner, pid, _ = await _kettle(client, knowledge=None)

    turn = await factories.chat(client, owner, pid, "How often should I descale?")

    assert turn["citations"] == [] and turn["assistant_message"]["citations"] == []
    assert [m["role"] for m in upstream.last_request["messages"]] == ["system", "user"]
    # Turned on, the same question is grounded; turned off again (`enabled: false`), it is not.
    url = f"/projects/{pid}"
    on = await client.patch(url, json={"knowledge": {"enabled": True}}, headers=owner.headers)
    assert on.status_code == 200 and on.json()["knowledge"]["top_k"] == 4
    grounded = await factories.chat(client, owner, pid, "How often should I descale?")
    assert grounded["citations"][0]["title"] == "Kettle"
    assert grounded["citations"][0]["page_start"] is None  # Markdown has no pages
    off = await client.patch(url, json={"knowledge": {"enabled": False}}, headers=owner.headers)
    assert off.status_code == 200
    assert (await factories.chat(client, owner, pid, "How often should I descale?"))[
        "citations"
    ] == []


async def test_an_intent_answers_before_any_retrieval(
    app: FastAPI, client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner, knowledge={"enabled": True}))["id"]
    made = await factories.document(client, owner, pid, "Greetings", "hello means a greeting")
    await settled(client, owner, pid, made["id"])
    await factories.create_intent(client, owner, pid)

    turn = await factories.chat(client, owner, pid, "hello")

    assert (turn["intent"], turn["reply"], turn["citations"]) == ("greeting", "Hi there!", [])
    assert upstream.requests == []


async def test_a_question_nothing_matches_gets_no_sources(
    app: FastAPI, client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    owner, pid, _ = await _kettle(client)

    turn = await factories.chat(client, owner, pid, "What is the capital of Peru?")

    assert turn["citations"] == []
    assert all("[1]" not in m["content"] for m in upstream.last_request["messages"])


async def test_turns_cite_only_their_own_tenants_documents(
    app: FastAPI, client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    """Two workspaces with the same document: each turn cites its own copy, and a project
    without the document cites nothing even in the same workspace."""
    cited = {}
    for name in ("alice", "bob"):
        owner = await factories.account(client)
        pid = (await factories.create_project(client, owner, knowledge={"enabled": True}))["id"]
        made = await factories.document(client, owner, pid, "Kettle", "Descale every 14 days.")
        await settled(client, owner, pid, made["id"])
        turn = await factories.chat(client, owner, pid, "descale")
        cited[name] = ([c["document_id"] for c in turn["citations"]], made["id"])
        other = await factories.create_project(client, owner, knowledge={"enabled": True})
        assert (await factories.chat(client, owner, other["id"], "descale"))["citations"] == []
    assert cited["alice"][0] == [cited["alice"][1]]
    assert cited["bob"][0] == [cited["bob"][1]]


async def test_knowledge_settings_are_checked(
    app: FastAPI, client: httpx.AsyncClient, settings: Any
) -> None:
    owner = await factories.account(client)
    for knowledge, field in (
        ({"top_k": 0}, "knowledge.top_k"),
        ({"max_context_tokens": 10}, "knowledge.max_context_tokens"),
        ({"min_score": -1}, "knowledge.min_score"),
        ({"enabled": True, "colour": "red"}, "knowledge.colour"),
        ({"max_file_bytes": settings.KNOWLEDGE_MAX_FILE_BYTES + 1}, "knowledge.max_file_bytes"),
        ({"max_documents": 10**9}, "knowledge.max_documents"),
    ):
        response = await client.post(
            "/projects", json={"name": "Bot", "knowledge": knowledge}, headers=owner.headers
        )
        assert response.status_code == 422, (knowledge, response.text)
        fields = [d["field"] for d in response.json()["error"]["details"]]
        assert field in fields, (knowledge, fields)
    pid = (await factories.create_project(client, owner))["id"]
    raised = await client.patch(
        f"/projects/{pid}", json={"knowledge": {"max_pages": 10**9}}, headers=owner.headers
    )
    assert raised.status_code == 422, raised.text
    assert "KNOWLEDGE_MAX_PAGES" in raised.json()["error"]["details"][0]["message"]


async def test_a_projects_own_limits_apply_to_its_documents(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await factories.account(client)
    limits = {"max_documents": 1, "max_file_bytes": 2048, "max_pages": 2}
    pid = (await factories.create_project(client, owner, knowledge=limits))["id"]
    url = f"/projects/{pid}/knowledge/documents"

    too_big = await client.post(
        url, json={"title": "Big", "text": "x" * 3000}, headers=owner.headers
    )
    assert too_big.status_code == 413, too_big.text
    assert "2048 bytes" in too_big.json()["error"]["message"]
    pages = files.pdf(["one", "two", "three"])
    assert len(pages) <= 2048  # within the byte limit: the page limit is what fails it
    made = (await upload(client, owner, pid, "three.pdf", pages)).json()
    failed = await settled(client, owner, pid, made["id"])
    assert failed["error"]["code"] == "too_many_pages", failed
    assert (await client.delete(f"{url}/{made['id']}", headers=owner.headers)).is_success
    await factories.document(client, owner, pid, "One", "The first document.")
    second = await client.post(url, json={"title": "Two", "text": "two"}, headers=owner.headers)
    assert second.status_code == 422 and second.json()["error"]["code"] == "quota_exceeded"
    # Limits alone do not ground the project's turns (`enabled` is false unless sent).
    assert (await factories.chat(client, owner, pid, "first"))["citations"] == []


async def test_a_whatsapp_bot_reply_is_grounded_and_its_citations_kept(
    app: FastAPI, client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    owner, pid, made = await _kettle(client)
    upstream.script(Behaviour(content="Every fourteen days [1]."))
    async with fake_whatsapp() as (fake, url):
        line = await meta_channel(client, owner, pid, url)
        await say(client, line, "16505551234", "How often do I descale?")
        await until(lambda: fake.sends, lambda sends: len(sends) == 1, what="the reply's send")
    assert fake.sends[0].text == "Every fourteen days [1]."
    assert "[1] Kettle\nDescale every fourteen days." in sources_in(upstream.last_request)
    conversation = await only_conversation(client, owner)
    stored = await messages(client, owner, conversation["id"])
    assert stored[0]["citations"] == []
    assert [c["document_id"] for c in stored[1]["citations"]] == [made["id"]]


async def test_a_regenerated_reply_is_grounded_again(
    app: FastAPI, client: httpx.AsyncClient, upstream: FakeOpenAI
) -> None:
    owner, pid, _ = await _kettle(client)
    turn = await factories.chat(client, owner, pid, "How often do I descale?")

    again = await client.post(
        f"/sessions/{turn['session_id']}/regenerate", json={}, headers=owner.headers
    )

    assert again.status_code == 200, again.text
    assert again.json()["citations"] == turn["citations"] != []
    assert "[1] Kettle" in sources_in(upstream.last_request)
