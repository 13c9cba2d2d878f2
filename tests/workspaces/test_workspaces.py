"""Workspaces, members and roles through the API: several workspaces per user, the
`X-Workspace-ID` header, role changes with the last-owner rule, invitations, and deletion."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select, update

from app.core.types import utcnow
from app.models import Invitation, Project
from tests import factories
from tests.factories import in_workspace


async def test_a_new_user_has_a_personal_workspace_and_can_create_teams(
    client: httpx.AsyncClient,
) -> None:
    owner = await factories.account(client)
    listed = (await client.get("/workspaces", headers=owner.headers)).json()
    assert [(w["is_personal"], w["role"]) for w in listed["items"]] == [(True, "owner")]
    team = await factories.create_workspace(client, owner, "Support")
    assert team["role"] == "owner" and team["is_personal"] is False
    listed = (await client.get("/workspaces", headers=owner.headers)).json()
    assert [w["name"] for w in listed["items"]][1:] == ["Support"]
    renamed = await client.patch(
        f"/workspaces/{team['id']}", json={"name": "Help desk"}, headers=owner.headers
    )
    assert renamed.status_code == 200 and renamed.json()["name"] == "Help desk"
    paged = (await client.get("/workspaces?limit=1", headers=owner.headers)).json()
    assert len(paged["items"]) == 1 and paged["next_cursor"]
    rest = await client.get(
        f"/workspaces?limit=1&cursor={paged['next_cursor']}", headers=owner.headers
    )
    assert [w["id"] for w in rest.json()["items"]] == [team["id"]]


async def test_the_header_picks_the_workspace_and_no_header_is_the_personal_one(
    client: httpx.AsyncClient,
) -> None:
    owner = await factories.account(client)
    team = await factories.create_workspace(client, owner)
    in_team = in_workspace(owner, team["id"])
    project = await factories.create_project(client, in_team, name="Team bot")
    personal = (await client.get("/projects", headers=owner.headers)).json()["items"]
    assert personal == []
    assert (
        await client.get(f"/projects/{project['id']}", headers=owner.headers)
    ).status_code == 404
    shared = (await client.get("/projects", headers=in_team.headers)).json()["items"]
    assert [p["id"] for p in shared] == [project["id"]]
    reply = await factories.chat(client, in_team, project["id"], "hello")
    assert reply["assistant_message"]["content"]

    stranger = await factories.account(client)
    foreign = await client.get("/projects", headers=in_workspace(stranger, team["id"]).headers)
    assert foreign.status_code == 404
    assert foreign.json()["error"]["code"] == "workspace_not_found"
    assert (
        await client.get(f"/workspaces/{team['id']}", headers=stranger.headers)
    ).status_code == 404
    malformed = await client.get("/projects", headers={**owner.headers, "X-Workspace-ID": "x"})
    assert malformed.status_code == 422


async def test_roles_decide_what_a_member_may_do(client: httpx.AsyncClient) -> None:
    owner = await factories.account(client)
    team = (await factories.create_workspace(client, owner))["id"]
    pid = (await factories.create_project(client, in_workspace(owner, team)))["id"]
    viewer = await factories.member(client, owner, team, "viewer")
    agent = await factories.member(client, owner, team, "agent")
    admin = await factories.member(client, owner, team, "admin")

    assert (await client.get(f"/projects/{pid}", headers=viewer.headers)).status_code == 200
    denied = await client.post("/projects", json={"name": "x"}, headers=viewer.headers)
    assert denied.status_code == 403
    error = denied.json()["error"]
    assert error["code"] == "insufficient_role"
    assert error["details"] == [{"required_role": "admin", "role": "viewer"}]
    chat = {"project_id": pid, "message": "hi"}
    assert (await client.post("/chat", json=chat, headers=viewer.headers)).status_code == 403
    turn = await factories.chat(client, agent, pid, "hi")
    sid = turn["session_id"]
    assert (
        await client.get(f"/sessions/{sid}/messages", headers=viewer.headers)
    ).status_code == 200
    rename = {"title": "renamed"}
    assert (
        await client.patch(f"/sessions/{sid}", json=rename, headers=agent.headers)
    ).status_code == 200
    assert (await client.delete(f"/sessions/{sid}", headers=agent.headers)).status_code == 403
    assert (
        await client.post(
            f"/projects/{pid}/prompts", json={"content": "Be brief."}, headers=agent.headers
        )
    ).status_code == 403
    assert (
        await client.post(
            f"/projects/{pid}/prompts", json={"content": "Be brief."}, headers=admin.headers
        )
    ).status_code == 201
    assert (await client.delete(f"/sessions/{sid}", headers=admin.headers)).status_code == 204


async def test_a_role_change_applies_at_once_and_owners_are_protected(
    client: httpx.AsyncClient,
) -> None:
    owner = await factories.account(client)
    team = (await factories.create_workspace(client, owner))["id"]
    admin = await factories.member(client, owner, team, "admin")
    agent = await factories.member(client, owner, team, "agent")
    members = f"/workspaces/{team}/members"

    listed = (await client.get(members, headers=agent.headers)).json()["items"]
    assert [m["role"] for m in listed] == ["owner", "admin", "agent"]
    assert (
        await client.post("/projects", json={"name": "x"}, headers=admin.headers)
    ).status_code == 201
    demoted = await client.patch(
        f"{members}/{admin.user_id}", json={"role": "viewer"}, headers=owner.headers
    )
    assert demoted.status_code == 200 and demoted.json()["role"] == "viewer"
    # The cached caller was forgotten: the next request already has the new role.
    assert (
        await client.post("/projects", json={"name": "y"}, headers=admin.headers)
    ).status_code == 403

    await client.patch(f"{members}/{admin.user_id}", json={"role": "admin"}, headers=owner.headers)
    to_owner = await client.patch(
        f"{members}/{agent.user_id}", json={"role": "owner"}, headers=admin.headers
    )
    assert to_owner.status_code == 403
    assert to_owner.json()["error"]["details"][0]["required_role"] == "owner"
    touch_owner = await client.delete(f"{members}/{owner.user_id}", headers=admin.headers)
    assert touch_owner.status_code == 403
    last = await client.patch(
        f"{members}/{owner.user_id}", json={"role": "admin"}, headers=owner.headers
    )
    assert last.status_code == 409 and last.json()["error"]["code"] == "last_owner"
    leave = await client.delete(f"{members}/{owner.user_id}", headers=owner.headers)
    assert leave.status_code == 409

    # Transfer: make the admin an owner, then step down.
    assert (
        await client.patch(
            f"{members}/{admin.user_id}", json={"role": "owner"}, headers=owner.headers
        )
    ).status_code == 200
    assert (
        await client.patch(
            f"{members}/{owner.user_id}", json={"role": "viewer"}, headers=owner.headers
        )
    ).status_code == 200
    assert (
        await client.delete(f"{members}/{agent.user_id}", headers=agent.headers)
    ).status_code == 204
    assert (await client.get(f"/workspaces/{team}", headers=agent.headers)).status_code == 404
    assert (
        await client.delete(f"{members}/{agent.user_id}", headers=admin.headers)
    ).status_code == 404


async def test_deleting_a_workspace_removes_what_it_owns(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await factories.account(client)
    team = (await factories.create_workspace(client, owner))["id"]
    in_team = in_workspace(owner, team)
    pid = (await factories.create_project(client, in_team))["id"]
    await factories.chat(client, in_team, pid, "hi")
    admin = await factories.member(client, owner, team, "admin")
    assert (await client.delete(f"/workspaces/{team}", headers=admin.headers)).status_code == 403
    assert (await client.delete(f"/workspaces/{team}", headers=owner.headers)).status_code == 204
    assert (await client.get(f"/workspaces/{team}", headers=owner.headers)).status_code == 404
    assert (await client.get("/projects", headers=in_team.headers)).status_code == 404
    async with app.state.sessionmaker() as db:
        left = await db.scalar(
            select(func.count()).select_from(Project).where(Project.id == uuid.UUID(pid))
        )
    assert left == 0
    personal = (await client.get("/workspaces", headers=owner.headers)).json()["items"][0]
    refused = await client.delete(f"/workspaces/{personal['id']}", headers=owner.headers)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "personal_workspace"


async def test_an_invitation_works_once_for_the_invited_address(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await factories.account(client)
    team = (await factories.create_workspace(client, owner))["id"]
    invitee = await factories.account(client)
    other = await factories.account(client)
    invitation = await factories.invite(client, owner, team, invitee.email.upper(), "viewer")
    assert invitation["status"] == "pending" and invitation["email"] == invitee.email
    assert invitation["accept_url"].endswith(f"/accept-invitation?token={invitation['token']}")
    body = {"token": invitation["token"]}

    wrong = await client.post("/invitations/accept", json=body, headers=other.headers)
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "invitation_email_mismatch"
    accepted = await client.post("/invitations/accept", json=body, headers=invitee.headers)
    assert accepted.status_code == 200 and accepted.json()["status"] == "accepted"
    again = await client.post("/invitations/accept", json=body, headers=invitee.headers)
    assert again.status_code == 410 and again.json()["error"]["code"] == "invitation_used"
    unknown = await client.post(
        "/invitations/accept", json={"token": "nope"}, headers=invitee.headers
    )
    assert unknown.status_code == 404
    member = await client.get(f"/workspaces/{team}", headers=invitee.headers)
    assert member.json()["role"] == "viewer"
    dup = await client.post(
        f"/workspaces/{team}/invitations", json={"email": invitee.email}, headers=owner.headers
    )
    assert dup.status_code == 409 and dup.json()["error"]["code"] == "already_member"

    revoked = await factories.invite(client, owner, team, other.email, "agent")
    assert (
        await client.delete(
            f"/workspaces/{team}/invitations/{revoked['id']}", headers=owner.headers
        )
    ).status_code == 204
    gone = await client.post(
        "/invitations/accept", json={"token": revoked["token"]}, headers=other.headers
    )
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "invitation_revoked"

    expired = await factories.invite(client, owner, team, other.email, "agent")
    async with app.state.sessionmaker() as db:
        await db.execute(
            update(Invitation)
            .where(Invitation.email == other.email, Invitation.revoked_at.is_(None))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        await db.commit()
    late = await client.post(
        "/invitations/accept", json={"token": expired["token"]}, headers=other.headers
    )
    assert late.status_code == 410 and late.json()["error"]["code"] == "invitation_expired"
    statuses = (await client.get(f"/workspaces/{team}/invitations", headers=owner.headers)).json()
    assert [i["status"] for i in statuses["items"]] == ["expired", "revoked", "accepted"]
    assert all("token" not in i for i in statuses["items"])


async def test_only_owners_invite_owners_and_agents_cannot_invite(
    client: httpx.AsyncClient,
) -> None:
    owner = await factories.account(client)
    team = (await factories.create_workspace(client, owner))["id"]
    admin = await factories.member(client, owner, team, "admin")
    agent = await factories.member(client, owner, team, "agent")
    url = f"/workspaces/{team}/invitations"
    as_owner = await client.post(
        url, json={"email": "a@example.com", "role": "owner"}, headers=admin.headers
    )
    assert as_owner.status_code == 403
    by_agent = await client.post(url, json={"email": "b@example.com"}, headers=agent.headers)
    assert by_agent.status_code == 403
    assert (await client.get(url, headers=agent.headers)).status_code == 403
    assert (
        await client.post(url, json={"email": "c@example.com"}, headers=admin.headers)
    ).status_code == 201


async def test_an_api_key_stays_bound_to_its_projects_workspace(client: httpx.AsyncClient) -> None:
    owner = await factories.account(client)
    team = (await factories.create_workspace(client, owner))["id"]
    in_team = in_workspace(owner, team)
    pid = (await factories.create_project(client, in_team))["id"]
    key = (await factories.api_key(client, in_team, pid, scopes=["chat"]))["key"]
    personal = (await client.get("/workspaces", headers=owner.headers)).json()["items"][0]["id"]
    headers = {**factories.key_headers(key, "end-user-1"), "X-Workspace-ID": personal}
    reply = await client.post("/chat", json={"project_id": pid, "message": "hi"}, headers=headers)
    assert reply.status_code == 200, reply.text
