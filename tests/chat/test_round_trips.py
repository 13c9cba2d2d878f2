"""Database round trips per chat turn, as `db_round_trips_total` counts them (statements, BEGIN,
COMMIT, ROLLBACK), in the steady state (user or key, and project settings, cached).

On Postgres a turn costs at most six: BEGIN, the session claim, the history, one INSERT of both
messages and the turn's events, COMMIT; then the reply is stored, its event recorded and the
session released in one statement. SQLite has no data-modifying CTEs: storing the reply there is
a transaction of its own (three more), and each of the two event INSERTs is a statement of its
own (two more, in process: SQLite has no network round trip).
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.core.config import Settings
from tests import factories
from tests.conftest import make_settings
from tests.waiting import until

POSTGRES = os.environ.get("TEST_DATABASE_URL", "").startswith("postgresql")
MAX_ROUND_TRIPS_PER_TURN = 6 if POSTGRES else 11


@pytest.fixture
def settings(database_url: str, clean_database: None) -> Settings:
    """No in-process job worker: its polls would be counted among a turn's round trips."""
    return make_settings(database_url, WORKERS_IN_API=False)


def round_trips(app: FastAPI) -> float:
    counter = app.state.metrics.db_round_trips
    return sum(
        sample.value
        for metric in counter.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


async def measured_turns(
    app: FastAPI, client: httpx.AsyncClient, send: dict[str, object], headers: dict[str, str]
) -> list[float]:
    """Round trips of each of 5 turns (after 2 warm-up turns), each sent once its reply is
    stored (the reply is stored before the response is sent)."""
    counts = []
    for index in range(7):
        before = round_trips(app)
        response = await client.post("/chat", json=send, headers=headers)
        assert response.status_code == 200, response.text
        if index >= 2:
            counts.append(round_trips(app) - before)
    return counts


async def started_session(
    client: httpx.AsyncClient, caller: str, *, with_prompts: bool = False
) -> tuple[dict[str, object], dict[str, str]]:
    """A project, a session of it started by `caller` (a user or an API key), and the body
    and headers of its next turn (a key's first use also notes that it was used)."""
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    if with_prompts:
        await factories.create_prompt(client, owner, pid)
        await factories.create_prompt(client, owner, pid, content="Be brief.")
        await factories.create_intent(client, owner, pid)
    headers = owner.headers
    if caller == "api_key":
        headers = factories.key_headers((await factories.api_key(client, owner, pid))["key"])
    first = await client.post("/chat", json={"project_id": pid, "message": "hi"}, headers=headers)
    assert first.status_code == 200, first.text
    send = {"project_id": pid, "session_id": first.json()["session_id"], "message": "and now?"}
    return send, headers


@pytest.mark.parametrize("caller", ["user", "api_key"])
async def test_a_turn_in_an_existing_session_costs_at_most_six_round_trips(
    app: FastAPI, client: httpx.AsyncClient, caller: str
) -> None:
    send, headers = await started_session(client, caller, with_prompts=True)

    counts = await measured_turns(app, client, send, headers)

    assert max(counts) <= MAX_ROUND_TRIPS_PER_TURN, counts


async def test_a_turn_that_starts_a_session_costs_at_most_six_round_trips(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner))["id"]
    await factories.create_prompt(client, owner, pid)

    counts = await measured_turns(app, client, {"project_id": pid, "message": "hi"}, owner.headers)

    assert max(counts) <= MAX_ROUND_TRIPS_PER_TURN, counts


@pytest.mark.parametrize("caller", ["user", "api_key"])
async def test_looking_up_an_uncached_caller_costs_one_round_trip(
    app: FastAPI, client: httpx.AsyncClient, caller: str
) -> None:
    send, headers = await started_session(client, caller)
    principals = app.state.principals
    principals.ttl = 0  # every request looks its caller up
    principals.forget(lambda _: True)

    counts = await measured_turns(app, client, send, headers)

    assert max(counts) <= MAX_ROUND_TRIPS_PER_TURN + 1, counts


@pytest.mark.parametrize("caller", ["user", "api_key"])
async def test_a_turn_grounded_in_the_knowledge_base_costs_one_more_round_trip(
    app: FastAPI, client: httpx.AsyncClient, make_client: Any, caller: str
) -> None:
    """The retrieval is one statement inside the turn's transaction. The document is indexed
    by another app's worker (this one has none, so no poll of it is counted)."""
    owner = await factories.account(client)
    pid = (await factories.create_project(client, owner, knowledge={"enabled": True}))["id"]
    await factories.create_prompt(client, owner, pid)
    await factories.create_intent(client, owner, pid)
    indexer = await make_client()
    made = await factories.document(indexer, owner, pid, "Notes", "And now the weather: sun.")
    await until(
        lambda: indexer.get(
            f"/projects/{pid}/knowledge/documents/{made['id']}", headers=owner.headers
        ),
        lambda response: response.json()["status"] == "ready",
        what="indexing",
    )
    headers = owner.headers
    if caller == "api_key":
        headers = factories.key_headers((await factories.api_key(client, owner, pid))["key"])
    first = await client.post("/chat", json={"project_id": pid, "message": "hi"}, headers=headers)
    session_id = first.json()["session_id"]
    send = {"project_id": pid, "session_id": session_id, "message": "and the weather?"}

    counts = await measured_turns(app, client, send, headers)

    assert max(counts) <= MAX_ROUND_TRIPS_PER_TURN + 1, counts
    last = await client.post("/chat", json=send, headers=headers)
    assert [c["document_id"] for c in last.json()["citations"]] == [made["id"]]
