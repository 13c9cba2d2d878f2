"""Plain factory functions that build data through the API, as a user would."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any

import httpx

PASSWORD = "password123"


@dataclass
class Account:
    email: str
    user_id: str
    headers: dict[str, str]
    refresh_token: str


async def register(client: httpx.AsyncClient, email: str | None = None) -> dict[str, Any]:
    email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
    response = await client.post("/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return response.json()


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    response = await client.post("/auth/login", data={"username": email, "password": password})
    assert response.status_code == 200, response.text
    return response.json()


async def account(client: httpx.AsyncClient, email: str | None = None) -> Account:
    user = await register(client, email)
    tokens = await login(client, user["email"])
    return Account(
        email=user["email"],
        user_id=user["id"],
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
        refresh_token=tokens["refresh_token"],
    )


async def create_project(
    client: httpx.AsyncClient, owner: Account, **fields: Any
) -> dict[str, Any]:
    body = {"name": "My Chatbot", "description": "A helpful assistant", **fields}
    response = await client.post("/projects", json=body, headers=owner.headers)
    assert response.status_code == 201, response.text
    return response.json()


async def create_prompt(
    client: httpx.AsyncClient, owner: Account, project_id: str, **fields: Any
) -> dict[str, Any]:
    body = {"content": "You are a helpful assistant.", **fields}
    response = await client.post(
        f"/projects/{project_id}/prompts", json=body, headers=owner.headers
    )
    assert response.status_code == 201, response.text
    return response.json()


async def chat(
    client: httpx.AsyncClient, owner: Account, project_id: str, message: str, **fields: Any
) -> dict[str, Any]:
    response = await client.post(
        "/chat",
        json={"project_id": project_id, "message": message, **fields},
        headers=owner.headers,
    )
    assert response.status_code == 200, response.text
    return response.json()


def intent_body(**fields: Any) -> dict[str, Any]:
    return {
        "name": "greeting",
        "patterns": [{"type": "keyword", "value": "hello"}],
        "reply": "Hi there!",
        **fields,
    }


async def create_intent(
    client: httpx.AsyncClient, owner: Account, project_id: str, **fields: Any
) -> dict[str, Any]:
    response = await client.post(
        f"/projects/{project_id}/intents", json=intent_body(**fields), headers=owner.headers
    )
    assert response.status_code == 201, response.text
    return response.json()


async def document(
    client: httpx.AsyncClient,
    owner: Account,
    project_id: str,
    title: str = "Returns policy",
    text: str = "# Returns\n\nItems can be returned within 30 days.",
) -> dict[str, Any]:
    """A knowledge document given as text (202: indexed in the background)."""
    response = await client.post(
        f"/projects/{project_id}/knowledge/documents",
        json={"title": title, "text": text},
        headers=owner.headers,
    )
    assert response.status_code == 202, response.text
    return response.json()


async def api_key(
    client: httpx.AsyncClient, owner: Account, project_id: str, **fields: Any
) -> dict[str, Any]:
    response = await client.post(
        f"/projects/{project_id}/api-keys",
        json={"name": "backend", **fields},
        headers=owner.headers,
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def key_headers(key: str, end_user: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}"}
    if end_user is not None:
        headers["X-End-User-ID"] = end_user
    return headers


def in_workspace(account: Account, workspace_id: str) -> Account:
    """The same account acting in another of its workspaces (`X-Workspace-ID`)."""
    return replace(account, headers={**account.headers, "X-Workspace-ID": workspace_id})


async def create_workspace(
    client: httpx.AsyncClient, owner: Account, name: str = "Team"
) -> dict[str, Any]:
    response = await client.post("/workspaces", json={"name": name}, headers=owner.headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def invite(
    client: httpx.AsyncClient, admin: Account, workspace_id: str, email: str, role: str
) -> dict[str, Any]:
    response = await client.post(
        f"/workspaces/{workspace_id}/invitations",
        json={"email": email, "role": role},
        headers=admin.headers,
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def member(
    client: httpx.AsyncClient, owner: Account, workspace_id: str, role: str
) -> Account:
    """A new account that joined `workspace_id` with `role` (invited, then accepted), acting
    in it."""
    joiner = await account(client)
    invitation = await invite(client, owner, workspace_id, joiner.email, role)
    response = await client.post(
        "/invitations/accept", json={"token": invitation["token"]}, headers=joiner.headers
    )
    assert response.status_code == 200, response.text
    return in_workspace(joiner, workspace_id)


async def create_webhook(
    client: httpx.AsyncClient, owner: Account, project_id: str, url: str, **fields: Any
) -> dict[str, Any]:
    response = await client.post(
        f"/projects/{project_id}/webhooks", json={"url": url, **fields}, headers=owner.headers
    )
    assert response.status_code == 201, response.text
    return dict(response.json())
