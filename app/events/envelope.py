"""The CloudEvents 1.0 JSON envelope every sink gets (webhooks, Kafka, the feed).

Besides the required attributes, each event carries the extension attributes `workspaceid`,
`projectid` and, for a session's events, `sessionid` and `sequence` (1, 2, ... per session,
in the order they happened: a consumer can tell a gap from a duplicate).
"""

from __future__ import annotations

from typing import Any

from app.models import Event

SPEC_VERSION = "1.0"


def envelope(event: Event) -> dict[str, Any]:
    source = f"/workspaces/{event.workspace_id}"
    if event.project_id is not None:
        source += f"/projects/{event.project_id}"
    body: dict[str, Any] = {
        "specversion": SPEC_VERSION,
        "id": str(event.id),
        "source": source,
        "type": event.type,
        "time": event.created_at.isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "workspaceid": str(event.workspace_id),
    }
    if event.subject is not None:
        body["subject"] = event.subject
    if event.project_id is not None:
        body["projectid"] = str(event.project_id)
    if event.session_id is not None:
        body["sessionid"] = str(event.session_id)
    if event.sequence is not None:
        body["sequence"] = event.sequence
    body["data"] = event.data
    return body
