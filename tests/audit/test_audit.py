"""The audit log: each configuration change and its entry commit together (and roll back
together), secrets never reach `changes`, security events are recorded, the log is filtered,
paged and exported, and on Postgres its rows cannot be updated or deleted."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from app.audit.recorder import new_entry
from app.audit.service import purge_expired
from app.core.logging import request_actor_var
from app.core.types import utcnow
from app.models import (
    ApiKey,
    AuditEntry,
    Intent,
    Invitation,
    Project,
    Prompt,
    Workspace,
    WorkspaceMember,
)
from app.retention.sweep import run_sweep
from tests import factories
from tests.core.test_recovery import postgres_only
from tests.factories import in_workspace


async def _log(
    client: httpx.AsyncClient, admin: factories.Account, wid: str, **query: Any
) -> list[dict[str, Any]]:
    response = await client.get(f"/workspaces/{wid}/audit-log", params=query, headers=admin.headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def _team(client: httpx.AsyncClient) -> tuple[factories.Account, str]:
    owner = await factories.account(client)
    team = (await factories.create_workspace(client, owner))["id"]
    return in_workspace(owner, team), team


async def test_a_project_change_is_recorded_with_its_actor_and_request(
    client: httpx.AsyncClient,
) -> None:
    owner, team = await _team(client)
    created = await client.post(
        "/projects",
        json={"name": "Bot"},
        headers={**owner.headers, "User-Agent": "audit-test/1.0", "X-Request-ID": "req-audit-1"},
    )
    pid = created.json()["id"]
    await client.patch(f"/projects/{pid}", json={"name": "Better bot"}, headers=owner.headers)
    await client.delete(f"/projects/{pid}", headers=owner.headers)
    entries = await _log(client, owner, team, target_id=pid)
    assert [e["action"] for e in entries] == [
        "project.deleted",
        "project.updated",
        "project.created",
    ]
    deleted, updated, first = entries
    assert updated["changes"]["name"] == {"before": "Bot", "after": "Better bot"}
    assert set(updated["changes"]) == {"name"}  # only what changed
    assert first["changes"]["name"] == {"before": None, "after": "Bot"}
    assert deleted["changes"]["name"] == {"before": "Better bot", "after": None}
    assert first["actor"] == {"type": "user", "id": owner.user_id, "label": owner.email}
    assert first["request_id"] == "req-audit-1" and first["user_agent"] == "audit-test/1.0"
    assert first["ip"] and first["target_type"] == "project"


async def test_an_entry_commits_and_rolls_back_with_its_change(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner, team = await _team(client)
    wid = uuid.UUID(team)
    maker = app.state.sessionmaker
    kept, dropped = uuid.uuid4(), uuid.uuid4()
    # In-process requests share the test's context; a real server runs each in its own.
    request_actor_var.set(None)
    async with maker() as db:
        db.add(Project(id=dropped, workspace_id=wid, name="rolled back", slug="rolled-back"))
        await db.flush()
        await db.rollback()
    async with maker() as db:
        db.add(Project(id=kept, workspace_id=wid, name="kept", slug="kept"))
        await db.commit()
    async with maker() as db:
        targets = set((await db.execute(select(AuditEntry.target_id))).scalars())
    assert str(kept) in targets and str(dropped) not in targets
    entry = (await _log(client, owner, team, target_id=str(kept)))[0]
    assert entry["actor"]["type"] == "system"  # not made by a request
    # A request that fails after its change was flushed leaves neither.
    taken = await client.patch(f"/projects/{kept}", json={"slug": "kept"}, headers=owner.headers)
    assert taken.status_code == 200
    second = (await factories.create_project(client, owner, name="two", slug="two"))["id"]
    clash = await client.patch(f"/projects/{second}", json={"slug": "kept"}, headers=owner.headers)
    assert clash.status_code == 409
    assert [e["action"] for e in await _log(client, owner, team, target_id=second)] == [
        "project.created"
    ]


async def test_every_resource_kind_is_recorded_and_secrets_never_are(
    client: httpx.AsyncClient,
) -> None:
    owner, team = await _team(client)
    pid = (await factories.create_project(client, owner))["id"]
    prompt = await factories.create_prompt(client, owner, pid)
    await client.patch(
        f"/projects/{pid}/prompts/{prompt['id']}", json={"content": "Short."}, headers=owner.headers
    )
    intent = await factories.create_intent(client, owner, pid)
    await client.delete(f"/projects/{pid}/intents/{intent['id']}", headers=owner.headers)
    key = await factories.api_key(client, owner, pid, scopes=["chat"])
    await client.delete(f"/projects/{pid}/api-keys/{key['id']}", headers=owner.headers)
    agent = await factories.member(client, owner, team, "agent")
    members = f"/workspaces/{team}/members/{agent.user_id}"
    await client.patch(members, json={"role": "viewer"}, headers=owner.headers)
    await client.delete(members, headers=owner.headers)
    pending = await factories.invite(client, owner, team, "later@example.com", "viewer")
    await client.delete(f"/workspaces/{team}/invitations/{pending['id']}", headers=owner.headers)
    await client.patch(f"/workspaces/{team}", json={"name": "Renamed"}, headers=owner.headers)

    actions = [e["action"] for e in await _log(client, owner, team, limit=100)]
    for action in (
        "workspace.created",
        "workspace.updated",
        "project.created",
        "prompt.created",
        "prompt.updated",
        "intent.created",
        "intent.deleted",
        "api_key.created",
        "api_key.revoked",
        "invitation.created",
        "invitation.accepted",
        "invitation.revoked",
        "member.added",
        "member.role_changed",
        "member.removed",
    ):
        assert action in actions, (action, actions)
    role_change = (await _log(client, owner, team, action="member.role_changed"))[0]
    assert role_change["changes"] == {"role": {"before": "agent", "after": "viewer"}}
    assert role_change["target_id"] == agent.user_id

    export = await client.get(f"/workspaces/{team}/audit-log/export", headers=owner.headers)
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in export.text.splitlines()]
    assert len(lines) == len(actions)
    assert key["key"] not in export.text and pending["token"] not in export.text
    key_entry = next(line for line in lines if line["action"] == "api_key.created")
    assert key_entry["changes"]["key_hash"] == {"before": None, "after": "[redacted]"}
    invitation_entry = next(line for line in lines if line["action"] == "invitation.created")
    assert invitation_entry["changes"]["token_hash"]["after"] == "[redacted]"


async def test_security_events_are_recorded(client: httpx.AsyncClient) -> None:
    owner, team = await _team(client)
    wrong = await client.post(
        "/auth/login", data={"username": owner.email, "password": "wrong-pass"}
    )
    assert wrong.status_code == 401
    failures = await _log(client, owner, team, action="auth.login_failed")
    assert len(failures) == 1 and failures[0]["target_id"] == owner.user_id
    assert failures[0]["actor"]["type"] == "anonymous"

    pid = (await factories.create_project(client, owner))["id"]
    key = await factories.api_key(client, owner, pid, scopes=["chat"])
    await client.delete(f"/projects/{pid}/api-keys/{key['id']}", headers=owner.headers)
    used = await client.post(
        "/chat",
        json={"project_id": pid, "message": "hi"},
        headers=factories.key_headers(key["key"], "u"),
    )
    assert used.status_code == 401
    late = await _log(client, owner, team, action="api_key.used_after_revocation")
    assert [e["target_id"] for e in late] == [key["id"]]


async def test_the_log_filters_and_pages(client: httpx.AsyncClient) -> None:
    owner, team = await _team(client)
    admin = await factories.member(client, owner, team, "admin")
    for n in range(3):
        await factories.create_project(client, admin, name=f"p{n}")
    by_admin = await _log(client, owner, team, actor_id=admin.user_id)
    # The admin joined (accepting their invitation), then created three projects.
    actions = [e["action"] for e in by_admin]
    assert actions[:3] == ["project.created"] * 3
    assert sorted(actions[3:]) == ["invitation.accepted", "member.added"]
    assert len(await _log(client, owner, team, action="project.")) == 3
    assert await _log(client, owner, team, since=(utcnow() + timedelta(hours=1)).isoformat()) == []
    first = await client.get(
        f"/workspaces/{team}/audit-log", params={"limit": 2}, headers=owner.headers
    )
    body = first.json()
    rest = await _log(client, owner, team, limit=100, cursor=body["next_cursor"])
    everything = await _log(client, owner, team, limit=100)
    assert [e["id"] for e in body["items"] + rest] == [e["id"] for e in everything]
    agent = await factories.member(client, owner, team, "agent")
    denied = await client.get(f"/workspaces/{team}/audit-log", headers=agent.headers)
    assert denied.status_code == 403


@postgres_only
async def test_the_log_is_append_only_on_postgres(app: FastAPI, client: httpx.AsyncClient) -> None:
    await _team(client)  # some entries to refuse changing
    maker = app.state.sessionmaker
    for statement in (
        "UPDATE audit_log SET action = 'x'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ):
        async with maker() as db:
            with pytest.raises(DBAPIError, match="append-only"):
                await db.execute(text(statement))
            await db.rollback()


async def test_the_retention_purge_removes_only_old_entries(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    _, team = await _team(client)
    maker = app.state.sessionmaker
    # On Postgres the only DELETE the trigger lets through.
    old = new_entry(uuid.UUID(team), "project.created", "project", "old")
    old.occurred_at = utcnow() - timedelta(days=400)
    async with maker() as db:
        db.add(old)
        await db.commit()
    async with maker() as db:
        assert await purge_expired(db, 365) == 1
        await db.commit()
    left = await _targets(maker)
    assert "old" not in left and len(left) >= 1


async def test_the_retention_sweep_purges_in_the_background(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    _, team = await _team(client)
    maker = app.state.sessionmaker
    old = new_entry(uuid.UUID(team), "project.created", "project", "very-old")
    old.occurred_at = utcnow() - timedelta(days=30)
    async with maker() as db:
        db.add(old)
        await db.commit()
    settings = app.state.settings.model_copy(update={"AUDIT_RETENTION_DAYS": 7})
    # The in-process worker enqueues this period's sweep when it starts; run it here.
    counts = await run_sweep(settings, maker)
    assert counts["audit_entries"] == 1
    left = await _targets(maker)
    assert "very-old" not in left and left  # the recent entries stay


async def _targets(maker: Any) -> set[str | None]:
    async with maker() as db:
        return set((await db.execute(select(AuditEntry.target_id))).scalars())


def _new_rows(workspace_id: uuid.UUID, project_id: uuid.UUID, user_id: uuid.UUID) -> dict[str, Any]:
    """One new row of each audited kind, and the target id its entry names."""
    now = utcnow()
    key = ApiKey(
        id=uuid.uuid4(),
        workspace_id=workspace_id,
        project_id=project_id,
        name="k",
        prefix="cbp_x",
        key_hash=uuid.uuid4().hex,
        scopes="chat",
    )
    invitation = Invitation(
        id=uuid.uuid4(),
        workspace_id=workspace_id,
        email="i@example.com",
        role="viewer",
        token_hash=uuid.uuid4().hex,
        created_at=now,
        expires_at=now + timedelta(days=1),
    )
    return {
        "workspace": Workspace(id=uuid.uuid4(), name="w", is_personal=False),
        "project": Project(id=uuid.uuid4(), workspace_id=workspace_id, name="p", slug="p-x"),
        "prompt": Prompt(
            id=uuid.uuid4(), workspace_id=workspace_id, project_id=project_id, content="c"
        ),
        "intent": Intent(
            id=uuid.uuid4(),
            workspace_id=workspace_id,
            project_id=project_id,
            name="i",
            patterns=[{"type": "keyword", "value": "x"}],
            reply="r",
        ),
        "api_key": key,
        "invitation": invitation,
        "member": WorkspaceMember(workspace_id=workspace_id, user_id=user_id, role="viewer"),
    }


@pytest.mark.parametrize(
    "kind", ["workspace", "project", "prompt", "intent", "api_key", "invitation", "member"]
)
async def test_each_kind_and_its_entry_commit_or_roll_back_together(
    app: FastAPI, client: httpx.AsyncClient, kind: str
) -> None:
    owner, team = await _team(client)
    pid = uuid.UUID((await factories.create_project(client, owner))["id"])
    joiner = uuid.UUID((await factories.account(client)).user_id)
    maker = app.state.sessionmaker
    request_actor_var.set(None)
    for commit in (False, True):
        row = _new_rows(uuid.UUID(team), pid, joiner)[kind]
        async with maker() as db:
            db.add(row)
            await db.flush()
            await (db.commit() if commit else db.rollback())
        target = str(row.user_id if kind == "member" else row.id)
        # The joiner's registration recorded them joining their own personal workspace.
        workspace = row.id if kind == "workspace" else uuid.UUID(team)
        where = (AuditEntry.target_id == target, AuditEntry.workspace_id == workspace)
        async with maker() as db:
            entries = (await db.execute(select(AuditEntry).where(*where))).scalars().all()
        if commit:
            assert [e.action for e in entries] == [
                "member.added" if kind == "member" else f"{kind}.created"
            ]
            text_of_changes = json.dumps(entries[0].changes)
            for secret_column in ("key_hash", "token_hash"):
                if hasattr(row, secret_column):
                    assert getattr(row, secret_column) not in text_of_changes
        else:
            assert entries == []
