"""Authorization matrices generated from the app's OpenAPI schema, so a new route is covered the
moment it exists:

- every operation with an id (in its path or its body) answers another tenant's id with 404 and
  leaks nothing of it;
- every protected operation rejects no token, a malformed one, an expired one, one signed with
  another key, `alg: none`, and the token of a deleted or deactivated user;
- no operation applies read-only or unknown fields (`id`, `workspace_id`, `owner`, `role`,
  `created_at`) sent in its body.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from jose import jwt
from sqlalchemy import delete, update

from app.core.config import Settings
from app.core.db import create_engine
from app.models import User
from tests import factories
from tests.channels.helpers import channel_with_a_conversation
from tests.conftest import make_settings
from tests.waiting import until

CANARY = "CANARY-tenant-a-7f3e"
PUBLIC = {
    ("GET", "/health"),
    ("GET", "/ready"),
    ("POST", "/auth/register"),
    ("POST", "/auth/login"),
    ("POST", "/auth/refresh"),
    ("POST", "/auth/logout"),
    ("POST", "/auth/password-reset"),
    ("POST", "/auth/password-reset/confirm"),
}
# Called by WhatsApp providers, authenticated by a signature or the channel's secret
# (tests/channels/), not by a bearer token: public to these matrices.
PROVIDER_CALLED = {
    ("GET", "/webhooks/meta/{channel_id}"),
    ("POST", "/webhooks/meta/{channel_id}"),
    ("POST", "/webhooks/whapi/{channel_id}"),
    ("POST", "/webhook/whapi"),
}
PUBLIC |= PROVIDER_CALLED
KEY_ONLY_PREFIXES = ("/v1/", "/api/v1/")
READ_ONLY_FIELDS = ("id", "workspace_id", "owner", "role", "created_at")


@dataclass
class Operation:
    method: str
    path: str
    spec: dict[str, Any]

    @property
    def params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)

    @property
    def key_only(self) -> bool:
        return self.path.startswith(KEY_ONLY_PREFIXES)


def _operations(app: FastAPI) -> list[Operation]:
    return [
        Operation(method.upper(), path, spec)
        for path, item in app.openapi()["paths"].items()
        for method, spec in item.items()
    ]


def _example(app: FastAPI, operation: Operation) -> dict[str, Any] | None:
    """The documented example body (every JSON body must have one), or None without a body."""
    body = operation.spec.get("requestBody")
    if body is None:
        return None
    content = body["content"].get("application/json")
    if content is None:
        return None
    schema = content["schema"]
    if "oneOf" in schema:  # a tagged union: its first kind's example
        schema = schema["oneOf"][0]
    if "$ref" not in schema:
        return {}  # an optional body (anyOf with null): an empty object is valid
    name = schema["$ref"].rsplit("/", 1)[1]
    examples = app.openapi()["components"]["schemas"][name].get("examples")
    assert examples, f"{operation.method} {operation.path}: document an example for {name}"
    example: dict[str, Any] = dict(examples[0])
    return example


@dataclass
class Tenant:
    account: factories.Account
    key: str
    ids: dict[str, str]


async def _tenant(client: httpx.AsyncClient, *, canary: str = "") -> Tenant:
    owner = await factories.account(client)
    project = await factories.create_project(client, owner, name=f"{canary} project")
    pid = project["id"]
    prompt = await factories.create_prompt(client, owner, pid, content=f"{canary} prompt")
    intent = await factories.create_intent(client, owner, pid, reply=f"{canary} reply")
    key = await factories.api_key(
        client, owner, pid, scopes=["chat", "sessions:read", "sessions:write"]
    )
    turn = await factories.chat(client, owner, pid, f"{canary} message")
    me = (await client.get("/workspaces", headers=owner.headers)).json()["items"]
    personal = next(w for w in me if w["is_personal"])["id"]
    webhook, delivery, job = await webhook_with_a_delivery(client, owner, pid, personal)
    channel, conversation = await channel_with_a_conversation(client, owner, pid)
    document = await factories.document(client, owner, pid, title=f"{canary} document")
    team = await factories.create_workspace(client, owner, f"{canary} team")
    teammate = await factories.member(client, owner, team["id"], "agent")
    invitation = await factories.invite(client, owner, team["id"], "x@example.com", "viewer")
    return Tenant(
        owner,
        key["key"],
        {
            "project_id": pid,
            "prompt_id": prompt["id"],
            "intent_id": intent["id"],
            "key_id": key["id"],
            "session_id": turn["session_id"],
            "message_id": turn["assistant_message"]["id"],
            "model": project["slug"],
            "workspace_id": team["id"],
            "user_id": teammate.user_id,
            "invitation_id": invitation["id"],
            "webhook_id": webhook,
            "delivery_id": delivery,
            "job_id": job,
            "channel_id": channel,
            "conversation_id": conversation,
            "document_id": document["id"],
        },
    )


async def webhook_with_a_delivery(
    client: httpx.AsyncClient, owner: factories.Account, pid: str, workspace_id: str
) -> tuple[str, str, str]:
    """A webhook to a closed local port, its first (failed) attempt, and that delivery's job."""
    hook = await factories.create_webhook(client, owner, pid, "http://127.0.0.1:9/hook")
    await factories.chat(client, owner, pid, "for the webhook")
    url = f"/webhooks/{hook['id']}/deliveries"

    async def deliveries() -> list[dict[str, Any]]:
        return list((await client.get(url, headers=owner.headers)).json()["items"])

    delivery = (await until(deliveries, bool, polls=300, what="a webhook delivery"))[0]
    jobs_url = f"/workspaces/{workspace_id}/jobs?status=queued&kind=webhook.deliver"

    async def jobs() -> list[dict[str, Any]]:
        return list((await client.get(jobs_url, headers=owner.headers)).json()["items"])

    return hook["id"], delivery["id"], (await until(jobs, bool, what="the retry"))[0]["id"]


def _url(operation: Operation, ids: dict[str, str]) -> str:
    unknown = [p for p in operation.params if p not in ids]
    assert not unknown, f"{operation.method} {operation.path}: add {unknown} to the matrix"
    url = operation.path.format(**{p: ids[p] for p in operation.params})
    if operation.path.endswith("/events/stream"):  # a live stream: let it end
        url += "?max_seconds=0.2"
    return url


def _body(app: FastAPI, operation: Operation, ids: dict[str, str]) -> dict[str, Any] | None:
    example = _example(app, operation)
    if example is None:
        return None
    for field in list(example):
        # `user_id` in a body is the caller's own end-user reference (the seed's /api/v1/chat),
        # not one of our ids.
        if field in ids and field != "user_id":
            example[field] = ids[field]
    if operation.path == "/v1/chat/completions":
        example["model"] = ids["model"]
    return example


async def test_every_id_of_another_tenant_answers_404(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    victim = await _tenant(client, canary=CANARY)
    intruder = await _tenant(client)
    checked = []
    for operation in _operations(app):
        if (operation.method, operation.path) in PROVIDER_CALLED:
            continue
        body = _body(app, operation, victim.ids)
        carries_id = (
            bool(operation.params)
            or bool(body and any(f in victim.ids for f in body if f not in ("model", "user_id")))
            or operation.path == "/v1/chat/completions"
        )
        if not carries_id:
            continue
        headers = (
            factories.key_headers(intruder.key) if operation.key_only else intruder.account.headers
        )
        response = await client.request(
            operation.method, _url(operation, victim.ids), json=body, headers=headers
        )
        assert response.status_code == 404, (operation.method, operation.path, response.text)
        assert CANARY not in response.text
        checked.append(f"{operation.method} {operation.path}")
    assert len(checked) >= 25, checked  # the matrix really ran over the id routes


def _forged_tokens(settings: Settings, user_id: str) -> dict[str, str]:
    now = datetime.now(UTC)
    claims = {
        "sub": user_id,
        "iss": settings.JWT_ISSUER,
        "aud": settings.JWT_AUDIENCE,
        "iat": int(now.timestamp()),
        "typ": "access",
    }
    secret = settings.SECRET_KEY.get_secret_value()
    valid_exp = int((now + timedelta(minutes=5)).timestamp())

    def unsigned(payload: dict[str, Any]) -> str:
        def part(data: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

        return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."

    return {
        "malformed": "not-a-jwt",
        "expired": jwt.encode(
            claims | {"exp": int((now - timedelta(minutes=1)).timestamp())}, secret, "HS256"
        ),
        "other key": jwt.encode(
            claims | {"exp": valid_exp}, "another-secret-key-0123456789abcdef", "HS256"
        ),
        "alg none": unsigned(claims | {"exp": valid_exp}),
        "no exp": jwt.encode(claims, secret, "HS256"),
        "wrong audience": jwt.encode(
            claims | {"exp": valid_exp, "aud": "someone-else"}, secret, "HS256"
        ),
        "refresh-like": jwt.encode(claims | {"exp": valid_exp, "typ": "refresh"}, secret, "HS256"),
        "unknown user": jwt.encode(
            claims | {"exp": valid_exp, "sub": str(uuid.uuid4())}, secret, "HS256"
        ),
    }


async def test_every_protected_route_rejects_bad_credentials(
    app: FastAPI, client: httpx.AsyncClient, database_url: str, settings: Settings
) -> None:
    tenant = await _tenant(client)
    deactivated = await factories.account(client)
    deleted = await factories.account(client)
    engine = create_engine(make_settings(database_url))
    try:
        async with engine.begin() as connection:
            await connection.execute(
                update(User)
                .where(User.id == uuid.UUID(deactivated.user_id))
                .values(is_active=False)
            )
            await connection.execute(delete(User).where(User.id == uuid.UUID(deleted.user_id)))
    finally:
        await engine.dispose()

    credentials: dict[str, dict[str, str]] = {"none": {}}
    for name, token in _forged_tokens(settings, tenant.account.user_id).items():
        credentials[name] = {"Authorization": f"Bearer {token}"}
    credentials["deactivated user"] = deactivated.headers
    credentials["deleted user"] = deleted.headers
    credentials["unknown api key"] = {"Authorization": "Bearer cbp_" + "A" * 43}
    credentials["unknown api key (X-API-Key)"] = {"X-API-Key": "cbp_" + "B" * 43}

    protected = [op for op in _operations(app) if (op.method, op.path) not in PUBLIC]
    assert len(protected) >= 30
    for operation in protected:
        url = _url(operation, tenant.ids)
        body = _body(app, operation, tenant.ids)
        for name, headers in credentials.items():
            response = await client.request(operation.method, url, json=body, headers=headers)
            # An API key on a route for signed-in users is refused as a key (403) before it is
            # looked up; everywhere else a bad credential is 401.
            allowed = {401, 403} if name.startswith("unknown api key") else {401}
            where = (operation.method, operation.path, name, response.text)
            assert response.status_code in allowed, where
            if response.status_code == 403:
                assert not operation.key_only, where
                assert response.json()["error"]["code"] == "api_key_not_allowed", where
            error = response.json()["error"]
            assert ("code" in error) or ("type" in error)
    # And the public list is exactly what the schema leaves unprotected.
    unprotected = {(op.method, op.path) for op in _operations(app) if not op.spec.get("security")}
    assert unprotected == PUBLIC


async def test_read_only_and_unknown_fields_are_never_applied(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    tenant = await _tenant(client)
    other = await _tenant(client)
    injected = {
        "id": str(uuid.uuid4()),
        "workspace_id": str(uuid.uuid4()),
        "owner": other.account.user_id,
        "role": "owner",
        "created_at": "2000-01-01T00:00:00Z",
    }
    injected["workspace_id"] = injected["workspace_id"]
    for operation in _operations(app):
        if operation.method not in ("POST", "PATCH", "PUT"):
            continue
        body = _body(app, operation, tenant.ids)
        if not body or (operation.method, operation.path) in PUBLIC:
            continue
        headers = (
            factories.key_headers(tenant.key, "u1")
            if operation.key_only
            else tenant.account.headers
        )
        # A field the operation documents (a member's `role`) is not an injection there.
        extra = {field: value for field, value in injected.items() if field not in body}
        response = await client.request(
            operation.method, _url(operation, tenant.ids), json=body | extra, headers=headers
        )
        where = (operation.method, operation.path, response.text[:300])
        assert response.status_code < 500, where
        if response.status_code < 300:
            text = response.text
            assert injected["id"] not in text and injected["workspace_id"] not in text, where
            assert "2000-01-01" not in text, where
        else:
            assert response.status_code in (400, 422), where
