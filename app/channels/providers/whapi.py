"""Whapi.cloud (a linked WhatsApp device): webhook parsing and sending text.

Whapi documents no webhook signature; a per-channel secret header (configured at Whapi as a
webhook header) authenticates requests instead. Its error bodies are not documented either, so
failures are classified by HTTP status: 429 and 5xx are retried, 401/403 are credentials, other
4xx permanent.
"""

from __future__ import annotations

from typing import Any

import httpx

from app.channels.providers.base import (
    Failure,
    Inbound,
    InboundMessage,
    Link,
    SendError,
    Sent,
    StatusUpdate,
    retry_after,
    to_int,
    transport_failure,
)

SECRET_HEADER = "x-webhook-secret"  # noqa: S105 - a header name
PERSON_SUFFIX = "@s.whatsapp.net"


def contact_of(chat_id: str) -> str:
    return chat_id.removesuffix(PERSON_SUFFIX).removesuffix("@c.us").lstrip("+")


class WhapiProvider:
    name = "whapi"

    def parse(self, payload: Any, link_id: str | None) -> Inbound:
        inbound = Inbound()
        if not isinstance(payload, dict):
            return inbound
        for message in payload.get("messages") or []:
            parsed = self._message(message) if isinstance(message, dict) else None
            if parsed is None:
                inbound.ignored += 1
            else:
                inbound.messages.append(parsed)
        for item in payload.get("statuses") or []:
            if isinstance(item, dict) and item.get("id") and item.get("status"):
                inbound.statuses.append(
                    StatusUpdate(
                        external_id=str(item["id"]),
                        status=str(item["status"]),
                        timestamp=to_int(item.get("timestamp")),
                    )
                )
            else:
                inbound.ignored += 1
        return inbound

    def _message(self, message: dict[str, Any]) -> InboundMessage | None:
        chat_id = str(message.get("chat_id") or "")
        if chat_id.endswith("@g.us"):
            return None  # groups are not conversations (v1)
        from_me = bool(message.get("from_me"))
        # Our own sends (and a human's on the linked phone) come back with from_me; the chat
        # is then the recipient's.
        who = chat_id if (from_me or not message.get("from")) else str(message.get("from"))
        contact = contact_of(who)
        if not contact or not message.get("id"):
            return None
        kind = str(message.get("type") or ("text" if message.get("text") else "unknown"))
        if kind == "text":
            text = str((message.get("text") or {}).get("body") or "")
        else:
            media = message.get(kind)
            caption = media.get("caption") if isinstance(media, dict) else None
            text = f"[{kind}] {caption}" if caption else f"[{kind}]"
        return InboundMessage(
            external_id=str(message["id"]),
            contact_id=contact,
            kind=kind,
            text=text,
            contact_name=message.get("from_name"),
            from_me=from_me,
            timestamp=to_int(message.get("timestamp")),
        )

    async def send_text(
        self,
        client: httpx.AsyncClient,
        link: Link,
        to: str,
        text: str,
        *,
        callback: str | None = None,
    ) -> Sent:
        url = f"{link.base_url.rstrip('/')}/messages/text"
        try:
            response = await client.post(
                url,
                json={"to": to, "body": text},
                headers={"authorization": f"Bearer {link.token}"},
            )
        except httpx.HTTPError as exc:
            raise transport_failure(exc) from exc
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code < 300:
            message = data.get("message") if isinstance(data, dict) else None
            if isinstance(message, dict) and message.get("id"):
                return Sent(str(message["id"]))
            raise SendError(Failure.AMBIGUOUS, "an answer without a message id")
        status = response.status_code
        title = _error_title(data) or f"HTTP {status}"
        if status == 429:
            return_after = retry_after(response.headers)
            raise SendError(Failure.THROTTLED, title, code="429", retry_after=return_after)
        if status >= 500:
            raise SendError(Failure.RETRY, title, code=str(status))
        if status in (401, 403):
            raise SendError(Failure.AUTH, title, code=str(status))
        raise SendError(Failure.PERMANENT, title, code=str(status))


def _error_title(data: Any) -> str | None:
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            return str(error.get("message") or "") or None
        if isinstance(error, str):
            return error
    return None
