"""WhatsApp Cloud API (Meta's Graph API): webhook parsing, the signature, and sending text.

Send errors are classified by `error.code` (Meta's guidance; the HTTP status and subcode are not
reliable), following the codes Meta documents for the Cloud API.
"""

from __future__ import annotations

import hashlib
import hmac
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

SIGNATURE_HEADER = "x-hub-signature-256"
RETRY_CODES = {"1", "2", "131000", "131016", "131057", "133004"}
THROTTLE_CODES = {"130429", "4", "80007"}
AUTH_CODES = {"0", "10", "190", *(str(code) for code in range(200, 300))}
WINDOW_CODE = "131047"
PAIR_RATE_CODE = "131056"
PLACEHOLDERS = {"image", "video", "audio", "document", "sticker", "location", "contacts"}


def verify_signature(app_secret: str, body: bytes, header: str | None) -> bool:
    """`X-Hub-Signature-256: sha256=<hex>`: HMAC-SHA256 of the raw body with the app secret,
    compared in constant time."""
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header.removeprefix("sha256=").strip().lower())


def _text_of(message: dict[str, Any]) -> tuple[str, str]:
    kind = str(message.get("type") or "unknown")
    if kind == "text":
        return kind, str((message.get("text") or {}).get("body") or "")
    if kind == "button":
        return kind, str((message.get("button") or {}).get("text") or "[button]")
    if kind == "interactive":
        reply = message.get("interactive") or {}
        chosen = reply.get("button_reply") or reply.get("list_reply") or {}
        return kind, str(chosen.get("title") or "[interactive]")
    caption = (
        (message.get(kind) or {}).get("caption") if isinstance(message.get(kind), dict) else None
    )
    label = f"[{kind}]" if kind in PLACEHOLDERS else f"[unsupported: {kind}]"
    return kind, f"{label} {caption}" if caption else label


def _status(item: dict[str, Any]) -> StatusUpdate | None:
    if not item.get("id") or not item.get("status"):
        return None
    error = (item.get("errors") or [{}])[0]
    return StatusUpdate(
        external_id=str(item["id"]),
        status=str(item["status"]),
        timestamp=to_int(item.get("timestamp")),
        error_code=str(error["code"]) if error.get("code") is not None else None,
        error_title=error.get("title") or error.get("message"),
        callback=item.get("biz_opaque_callback_data"),
        pricing=item.get("pricing") if isinstance(item.get("pricing"), dict) else None,
    )


class MetaCloudProvider:
    name = "meta_cloud"

    def parse(self, payload: Any, link_id: str | None) -> Inbound:
        """Every entry, change, message and status (not only the first of each)."""
        inbound = Inbound()
        entries = payload.get("entry") if isinstance(payload, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            for change in (entry or {}).get("changes") or []:
                value = (change or {}).get("value") or {}
                number = str((value.get("metadata") or {}).get("phone_number_id") or "")
                if (change or {}).get("field") != "messages" or (link_id and number != link_id):
                    inbound.ignored += 1
                    continue
                self._parse_value(value, inbound)
        return inbound

    def _parse_value(self, value: dict[str, Any], inbound: Inbound) -> None:
        names = {
            str(c.get("wa_id") or c.get("user_id")): (c.get("profile") or {}).get("name")
            for c in value.get("contacts") or []
            if isinstance(c, dict)
        }
        for message in value.get("messages") or []:
            sender = str(message.get("from") or message.get("user_id") or "")
            if not message.get("id") or not sender:
                inbound.ignored += 1
                continue
            kind, text = _text_of(message)
            inbound.messages.append(
                InboundMessage(
                    external_id=str(message["id"]),
                    contact_id=sender,
                    kind=kind,
                    text=text,
                    contact_name=names.get(sender),
                    timestamp=to_int(message.get("timestamp")),
                )
            )
        for item in value.get("statuses") or []:
            status = _status(item) if isinstance(item, dict) else None
            if status is None:
                inbound.ignored += 1
            else:
                inbound.statuses.append(status)
        for error in value.get("errors") or []:
            inbound.errors.append(str((error or {}).get("code")))

    async def send_text(
        self,
        client: httpx.AsyncClient,
        link: Link,
        to: str,
        text: str,
        *,
        callback: str | None = None,
    ) -> Sent:
        url = f"{link.base_url.rstrip('/')}/{link.api_version}/{link.phone_number_id}/messages"
        body: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "text",
            "text": {"preview_url": False, "body": text},
        }
        if callback:
            body["biz_opaque_callback_data"] = callback
        try:
            response = await client.post(
                url, json=body, headers={"authorization": f"Bearer {link.token}"}
            )
        except httpx.HTTPError as exc:
            raise transport_failure(exc) from exc
        data = _json(response)
        if response.status_code == 200:
            messages = data.get("messages") if isinstance(data, dict) else None
            if isinstance(messages, list) and messages and messages[0].get("id"):
                return Sent(str(messages[0]["id"]))
            raise SendError(Failure.AMBIGUOUS, "a 200 answer without a message id")
        raise classify(response, data)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def classify(response: httpx.Response, data: Any) -> SendError:
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        failure = (
            Failure.RETRY
            if response.status_code >= 500 or response.status_code == 429
            else (Failure.AUTH if response.status_code in (401, 403) else Failure.PERMANENT)
        )
        return SendError(failure, f"HTTP {response.status_code}", code=str(response.status_code))
    code = str(error.get("code", ""))
    title = str(error.get("message") or error.get("error_user_title") or "send failed")
    wait = retry_after(response.headers)
    if code in THROTTLE_CODES:
        return SendError(Failure.THROTTLED, title, code=code, retry_after=wait)
    if code == PAIR_RATE_CODE:
        return SendError(Failure.PACE_CONTACT, title, code=code, retry_after=wait)
    if code in AUTH_CODES:
        return SendError(Failure.AUTH, title, code=code)
    if code == WINDOW_CODE:
        return SendError(Failure.WINDOW_CLOSED, title, code=code)
    if code in RETRY_CODES or response.status_code >= 500:
        return SendError(Failure.RETRY, title, code=code, retry_after=wait)
    return SendError(Failure.PERMANENT, title, code=code)
