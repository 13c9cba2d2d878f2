"""Email end to end against a real SMTP server (aiosmtpd on 127.0.0.1): invitations and
password resets are delivered by the in-process worker, their links work once and never again,
and a mail server that is down neither blocks nor fails the request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import select, update

from app.core.types import utcnow
from app.models import Job
from tests import factories
from tests.smtp import SMTPServer, token_in
from tests.waiting import until

MakeClient = Callable[..., Any]


async def test_an_invitation_is_emailed_and_its_link_works_once(
    make_client: MakeClient, smtp: SMTPServer
) -> None:
    client: httpx.AsyncClient = await make_client(
        **smtp.settings(), PUBLIC_BASE_URL="https://chat.example.com"
    )
    owner = await factories.account(client)
    team = (await factories.create_workspace(client, owner, "Support"))["id"]
    invitee = await factories.account(client)
    created = await factories.invite(client, owner, team, invitee.email, "agent")
    (message,) = await smtp.inbox.wait_for(1)
    assert message["To"] == invitee.email and "invited" in message["Subject"]
    body = message.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert "https://chat.example.com/accept-invitation?token=" in body and owner.email in body
    token = token_in(message, "accept-invitation")
    assert token == created["token"]
    accepted = await client.post(
        "/invitations/accept", json={"token": token}, headers=invitee.headers
    )
    assert accepted.status_code == 200
    again = await client.post("/invitations/accept", json={"token": token}, headers=invitee.headers)
    assert again.status_code == 410


async def test_a_password_reset_works_once_and_signs_out_every_session(
    make_client: MakeClient, smtp: SMTPServer
) -> None:
    client: httpx.AsyncClient = await make_client(**smtp.settings())
    owner = await factories.account(client)
    unknown = await client.post("/auth/password-reset", json={"email": "nobody@example.com"})
    asked = await client.post("/auth/password-reset", json={"email": owner.email.upper()})
    assert unknown.status_code == asked.status_code == 202
    assert unknown.json() == asked.json()  # nothing tells the two apart
    (message,) = await smtp.inbox.wait_for(1)
    assert message["To"] == owner.email
    token = token_in(message, "reset-password")

    short = await client.post(
        "/auth/password-reset/confirm", json={"token": token, "new_password": "abc"}
    )
    assert short.status_code == 422
    body = {"token": token, "new_password": "a-brand-new-password"}
    assert (await client.post("/auth/password-reset/confirm", json=body)).status_code == 204
    reused = await client.post("/auth/password-reset/confirm", json=body)
    assert reused.status_code == 410 and reused.json()["error"]["code"] == "reset_token_invalid"
    refreshed = await client.post("/auth/refresh", json={"refresh_token": owner.refresh_token})
    assert refreshed.status_code == 401  # the old login's refresh token was revoked
    await factories.login(client, owner.email, "a-brand-new-password")
    old = await client.post(
        "/auth/login", data={"username": owner.email, "password": "password123"}
    )
    assert old.status_code == 401
    personal = await client.get("/workspaces", headers=(await factories.account(client)).headers)
    assert personal.status_code == 200
    log = await client.get(
        f"/workspaces/{await _personal_workspace(client, owner.email)}/audit-log",
        params={"action": "auth."},
        headers=await _headers(client, owner.email, "a-brand-new-password"),
    )
    actions = [entry["action"] for entry in log.json()["items"]]
    assert "auth.password_reset" in actions and "auth.password_reset_requested" in actions


async def _headers(client: httpx.AsyncClient, email: str, password: str) -> dict[str, str]:
    tokens = await factories.login(client, email, password)
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def _personal_workspace(client: httpx.AsyncClient, email: str) -> str:
    headers = await _headers(client, email, "a-brand-new-password")
    items = (await client.get("/workspaces", headers=headers)).json()["items"]
    return str(items[0]["id"])


async def test_password_resets_are_throttled_per_address(
    make_client: MakeClient, smtp: SMTPServer
) -> None:
    client: httpx.AsyncClient = await make_client(
        **smtp.settings(), PASSWORD_RESETS_PER_ACCOUNT_PER_HOUR=1
    )
    body = {"email": "someone@example.com"}
    assert (await client.post("/auth/password-reset", json=body)).status_code == 202
    limited = await client.post("/auth/password-reset", json=body)
    assert limited.status_code == 429 and limited.headers["retry-after"]


async def test_a_mail_server_that_is_down_is_retried_and_never_blocks_the_request(
    make_client: MakeClient, smtp: SMTPServer
) -> None:
    smtp.inbox.refuse = True  # 451: a temporary failure
    client: httpx.AsyncClient = await make_client(**smtp.settings())
    owner = await factories.account(client)
    asked = await client.post("/auth/password-reset", json={"email": owner.email})
    assert asked.status_code == 202
    app_jobs = await _wait_for_attempt(client)
    assert app_jobs.status == "queued" and app_jobs.last_error  # retried later, not lost
    smtp.inbox.refuse = False
    # The next attempt comes after its backoff; pull it forward instead of waiting for it.
    await _make_due(client)
    (message,) = await smtp.inbox.wait_for(1)
    assert message["To"] == owner.email
    await _wait_for_status(client, "done")  # the message arrives before the job is marked
    registry = client._transport.app.state.metrics.registry  # type: ignore[attr-defined]
    for outcome in ("retry", "done"):
        labels = {"kind": "email.send", "outcome": outcome}
        assert registry.get_sample_value("jobs_finished_total", labels) >= 1


async def _email_job(client: httpx.AsyncClient) -> Job | None:
    maker = client._transport.app.state.sessionmaker  # type: ignore[attr-defined]
    async with maker() as db:
        job: Job | None = (
            await db.execute(select(Job).where(Job.kind == "email.send"))
        ).scalar_one_or_none()
        return job


async def _wait_for_attempt(client: httpx.AsyncClient) -> Job:
    job = await until(
        lambda: _email_job(client),
        lambda job: job is not None and job.attempts >= 1 and job.status == "queued",
        what="a first attempt at the email",
    )
    assert job is not None
    return job


async def _wait_for_status(client: httpx.AsyncClient, status: str) -> None:
    await until(
        lambda: _email_job(client),
        lambda job: job is not None and job.status == status,
        what=f"the email job becoming {status}",
    )


async def _make_due(client: httpx.AsyncClient) -> None:
    app = client._transport.app  # type: ignore[attr-defined]
    async with app.state.sessionmaker() as db:
        await db.execute(update(Job).where(Job.kind == "email.send").values(run_at=utcnow()))
        await db.commit()
    app.state.worker.wake()
