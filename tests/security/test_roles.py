"""The role matrix, generated from the OpenAPI schema: every operation that acts in a
workspace, asked by a non-member and by a member of each role, answers as the table in
`app/workspaces/roles.py` says: 404 for the non-member, 403 `insufficient_role` (naming the role
needed) below the operation's role, and a real answer from that role up.

The expected role of each operation is written out here, apart from the code that enforces it,
so a route whose dependency names the wrong role fails this test; a new route fails it until it
is added to the table.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import httpx
from fastapi import FastAPI

from tests import factories
from tests.channels.helpers import channel_with_a_conversation
from tests.factories import in_workspace
from tests.security.test_matrix import (
    PUBLIC,
    Operation,
    _body,
    _operations,
    _tenant,
    _url,
    webhook_with_a_delivery,
)

ROLES = ("viewer", "agent", "admin", "owner")
W = "/workspaces/{workspace_id}"
P = "/projects/{project_id}"
S = "/sessions/{session_id}"
C = "/conversations/{conversation_id}"
K = f"{P}/knowledge"
CONVERSATION_ACTIONS = (
    "handoff",
    "assign",
    "unassign",
    "release",
    "pause",
    "resume",
    "resolve",
    "reopen",
)
EXPECTED: dict[tuple[str, str], str] = {
    ("GET", W): "viewer",
    ("PATCH", W): "admin",
    ("DELETE", W): "owner",
    ("GET", f"{W}/members"): "viewer",
    ("PATCH", f"{W}/members/{{user_id}}"): "admin",
    ("DELETE", f"{W}/members/{{user_id}}"): "admin",  # or yourself: tested in tests/workspaces
    ("POST", f"{W}/invitations"): "admin",
    ("GET", f"{W}/invitations"): "admin",
    ("DELETE", f"{W}/invitations/{{invitation_id}}"): "admin",
    ("GET", f"{W}/audit-log"): "admin",
    ("GET", f"{W}/audit-log/export"): "admin",
    ("POST", "/projects"): "admin",
    ("GET", "/projects"): "viewer",
    ("GET", P): "viewer",
    ("PATCH", P): "admin",
    ("DELETE", P): "admin",
    ("POST", f"{P}/prompts"): "admin",
    ("GET", f"{P}/prompts"): "viewer",
    ("GET", f"{P}/prompts/{{prompt_id}}"): "viewer",
    ("PATCH", f"{P}/prompts/{{prompt_id}}"): "admin",
    ("DELETE", f"{P}/prompts/{{prompt_id}}"): "admin",
    ("POST", f"{P}/intents"): "admin",
    ("GET", f"{P}/intents"): "viewer",
    ("GET", f"{P}/intents/{{intent_id}}"): "viewer",
    ("PATCH", f"{P}/intents/{{intent_id}}"): "admin",
    ("DELETE", f"{P}/intents/{{intent_id}}"): "admin",
    ("POST", f"{P}/api-keys"): "admin",
    ("GET", f"{P}/api-keys"): "admin",
    ("DELETE", f"{P}/api-keys/{{key_id}}"): "admin",
    ("POST", "/chat"): "agent",
    ("POST", f"{S}/regenerate"): "agent",
    ("GET", f"{S}/messages/{{message_id}}/stream"): "viewer",
    ("POST", f"{S}/messages/{{message_id}}/cancel"): "agent",
    ("POST", "/messages/{message_id}/feedback"): "agent",
    ("GET", f"{P}/sessions"): "viewer",
    ("GET", f"{P}/usage"): "viewer",
    ("GET", S): "viewer",
    ("PATCH", S): "agent",
    ("DELETE", S): "admin",
    ("GET", f"{S}/messages"): "viewer",
    ("GET", f"{S}/export"): "viewer",
    ("POST", f"{P}/webhooks"): "admin",
    ("GET", f"{P}/webhooks"): "admin",
    ("GET", "/webhooks/{webhook_id}"): "admin",
    ("PATCH", "/webhooks/{webhook_id}"): "admin",
    ("DELETE", "/webhooks/{webhook_id}"): "admin",
    ("GET", "/webhooks/{webhook_id}/deliveries"): "admin",
    ("POST", "/webhooks/{webhook_id}/deliveries/{delivery_id}/resend"): "admin",
    ("GET", f"{P}/events"): "viewer",
    ("GET", f"{P}/events/stream"): "viewer",
    ("GET", f"{W}/jobs"): "admin",
    ("POST", f"{W}/jobs/{{job_id}}/retry"): "admin",
    ("POST", f"{P}/channels"): "admin",
    ("GET", f"{P}/channels"): "agent",
    ("GET", "/channels/{channel_id}"): "agent",
    ("PATCH", "/channels/{channel_id}"): "admin",
    ("DELETE", "/channels/{channel_id}"): "admin",
    ("POST", "/channels/{channel_id}/rotate-secret"): "admin",
    ("GET", "/conversations"): "agent",
    ("GET", C): "agent",
    ("GET", f"{C}/messages"): "agent",
    ("POST", f"{C}/messages"): "agent",
    **{("POST", f"{C}/{action}"): "agent" for action in CONVERSATION_ACTIONS},
    ("POST", f"{K}/documents"): "admin",
    ("GET", f"{K}/documents"): "viewer",
    ("GET", f"{K}/documents/{{document_id}}"): "viewer",
    ("GET", f"{K}/documents/{{document_id}}/chunks"): "viewer",
    ("PATCH", f"{K}/documents/{{document_id}}"): "admin",
    ("GET", f"{K}/documents/{{document_id}}/file"): "viewer",
    ("PUT", f"{K}/documents/{{document_id}}/file"): "admin",
    ("POST", f"{K}/documents/{{document_id}}/retry"): "admin",
    ("DELETE", f"{K}/documents/{{document_id}}"): "admin",
    ("POST", f"{K}/retrieve"): "viewer",
}
# The caller's own account, in no particular workspace: any signed-in user.
ACCOUNT_LEVEL = {
    ("GET", "/users/me"),
    ("GET", "/workspaces"),
    ("POST", "/workspaces"),
    ("POST", "/invitations/accept"),
}
KEY_ONLY_PREFIXES = ("/v1/", "/api/v1/")


async def _ask(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    body: dict[str, Any] | None,
    account: factories.Account,
) -> httpx.Response:
    return await client.request(method, url, json=body, headers=account.headers)


def _order(operation: Operation) -> tuple[bool, int, int]:
    # Deletions last, the deepest first, then the project and the workspace, whose deletion
    # takes everything in them: what one role deleted is gone for the roles after it, never
    # for the operations after it.
    deleting = operation.method == "DELETE"
    container = {P: 1, W: 2}.get(operation.path, 0) if deleting else 0
    return deleting, container, -operation.path.count("/") if deleting else 0


async def test_every_operation_answers_each_role_as_the_table_says(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    tenant = await _tenant(client)
    owner, team = tenant.account, tenant.ids["workspace_id"]
    # The tenant's fixtures, made again in the team workspace: every id below lives there.
    in_team = in_workspace(owner, team)
    pid = (await factories.create_project(client, in_team, name="team bot"))["id"]
    prompt = await factories.create_prompt(client, in_team, pid)
    intent = await factories.create_intent(client, in_team, pid)
    key = await factories.api_key(client, in_team, pid, scopes=["chat"])
    turn = await factories.chat(client, in_team, pid, "hello team")
    target = await factories.member(client, owner, team, "viewer")
    invitation = await factories.invite(client, owner, team, "later@example.com", "viewer")
    webhook, delivery, job = await webhook_with_a_delivery(client, in_team, pid, team)
    channel, conversation = await channel_with_a_conversation(client, in_team, pid)
    document = await factories.document(client, in_team, pid)
    ids = {
        **tenant.ids,
        "project_id": pid,
        "prompt_id": prompt["id"],
        "intent_id": intent["id"],
        "key_id": key["id"],
        "session_id": turn["session_id"],
        "message_id": turn["assistant_message"]["id"],
        "user_id": target.user_id,
        "invitation_id": invitation["id"],
        "webhook_id": webhook,
        "delivery_id": delivery,
        "job_id": job,
        "channel_id": channel,
        "conversation_id": conversation,
        "document_id": document["id"],
    }
    members = {"owner": in_team}
    for role in ("viewer", "agent", "admin"):
        members[role] = await factories.member(client, owner, team, role)
    stranger = in_workspace(await factories.account(client), team)

    operations = [
        op
        for op in _operations(app)
        if (op.method, op.path) not in PUBLIC and not op.path.startswith(KEY_ONLY_PREFIXES)
    ]
    unlisted = [
        (op.method, op.path)
        for op in operations
        if (op.method, op.path) not in EXPECTED and (op.method, op.path) not in ACCOUNT_LEVEL
    ]
    assert not unlisted, f"add these operations to the role matrix: {unlisted}"

    checked = 0
    for operation in sorted(operations, key=_order):
        key_ = (operation.method, operation.path)
        url, body = _url(operation, ids), _body(app, operation, ids)

        ask = partial(_ask, client, operation.method, url, body)

        if key_ in ACCOUNT_LEVEL:
            for role in ROLES:
                response = await ask(members[role])
                assert response.status_code not in (401, 403), (key_, role, response.text)
            continue
        needed = EXPECTED[key_]
        outsider = await ask(stranger)
        assert outsider.status_code == 404, (key_, outsider.text)
        first_allowed = True
        for role in ROLES:
            response = await ask(members[role])
            where = (operation.method, operation.path, role, response.status_code, response.text)
            if ROLES.index(role) < ROLES.index(needed):
                assert response.status_code == 403, where
                error = response.json()["error"]
                assert error["code"] == "insufficient_role", where
                assert error["details"][0]["required_role"] == needed, where
            else:
                assert response.status_code < 500 and response.status_code != 403, where
                if first_allowed:  # the resources still exist: a real answer, not a 404
                    assert response.status_code != 404, where
                first_allowed = False
            checked += 1
    assert checked >= 4 * 35, checked
