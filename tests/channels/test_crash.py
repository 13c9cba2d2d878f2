"""A worker killed (SIGKILL) while the bot's reply is being generated: the contact's message is
stored, the reply job's lease runs out, and the next worker answers it. The reply is stored and
sent exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from app.models import Author, ChatMessage
from tests import factories
from tests.channels.helpers import fake_whatsapp, meta_channel, say
from tests.fake_openai import Behaviour, FakeOpenAI
from tests.live import serve, worker_process
from tests.waiting import until


def worker(database_url: str, llm_url: str) -> Any:
    return worker_process(
        database_url,
        LLM_PROVIDER="openai",
        OPENAI_API_KEY="sk-test-key",
        LLM_BASE_URL=f"{llm_url}/v1",
        LLM_MAX_ATTEMPTS="1",
    )


async def test_a_worker_killed_mid_reply_leaves_one_reply_sent_once(
    make_client: Callable[..., Any], database_url: str
) -> None:
    upstream = FakeOpenAI()
    upstream.script(Behaviour(content="never finished", delay=30))
    async with fake_whatsapp() as (fake, url), serve(upstream.asgi()) as llm:
        client = await make_client(WORKERS_IN_API=False)  # only the worker processes answer
        app = client._transport.app  # type: ignore[attr-defined]
        owner = await factories.account(client)
        pid = (await factories.create_project(client, owner))["id"]
        line = await meta_channel(client, owner, pid, url)
        await say(client, line, "6281500001", "Halo, masih buka?")

        async with worker(database_url, llm) as doomed:
            await until(lambda: upstream.requests, bool, polls=300, what="the LLM call")
            doomed.kill()  # SIGKILL while the reply is being generated
            await doomed.wait()
        assert fake.sends == []
        async with worker(database_url, llm) as survivor:
            await until(lambda: fake.sends, bool, polls=300, every=0.1, what="the reply, sent")
            await asyncio.sleep(2.5)  # a lease's worth: a second send would be here by now
            assert survivor.returncode is None

    assert [s.text for s in fake.sends] == ["Fake reply to: Halo, masih buka?"]
    assert len(upstream.requests) == 2  # the killed attempt, and the one that answered
    async with app.state.sessionmaker() as db:
        replies = (
            await db.scalars(select(ChatMessage).where(ChatMessage.author_type == Author.BOT))
        ).all()
    assert [(r.content, r.status) for r in replies] == [(fake.sends[0].text, "complete")]
