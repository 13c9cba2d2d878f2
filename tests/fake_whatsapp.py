"""A local WhatsApp: the Graph API's `POST /{version}/{phone_number_id}/messages` and Whapi's
`POST /messages/text`, speaking their real JSON, plus builders for the webhooks they send.

Run it in-process (`tests.live.serve(fake.asgi())`) or as a real server for manual checks:

    .venv/bin/uvicorn --factory tests.fake_whatsapp:create_app --port 9200

Every send is recorded (`fake.sends`, `GET /_control/sends`). Faults are scripted, one per
send: `fake.script(Fault(code=131056, status=429), ...)`, or `POST /_control/script` with the
same fields. A fault may answer Meta's error envelope (`code`), a bare HTTP status, wait
(`delay`), accept and then never answer (`drop`: the client times out), or refuse without
recording (`reject_before_record`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ERROR_TITLES = {
    130429: "Rate limit hit",
    131056: "(Business Account, Consumer Account) pair rate limit hit",
    131047: "Re-engagement message",
    131026: "Message undeliverable",
    190: "Invalid OAuth access token - Cannot parse access token",
    100: "Invalid parameter",
    131000: "Something went wrong",
}


@dataclass
class Fault:
    code: int | None = None  # Meta error code in the envelope
    status: int = 400  # HTTP status of the error answer (5xx without a code: a bare one)
    delay: float = 0.0  # seconds before answering (or before dropping)
    # record the send, then never answer (the client times out: it cannot know it went)
    drop: bool = False
    reject_before_record: bool = False  # an error answer for a send that is not recorded


@dataclass
class Send:
    provider: str  # meta_cloud | whapi
    to: str
    text: str
    id: str  # the id we answered with
    phone_number_id: str | None
    authorization: str | None
    callback: str | None
    at: float


class FakeWhatsApp:
    def __init__(self) -> None:
        self.sends: list[Send] = []
        self._script: deque[Fault] = deque()
        self._counter = 0

    def script(self, *faults: Fault) -> None:
        self._script.extend(faults)

    def reset(self) -> None:
        self.sends.clear()
        self._script.clear()

    def texts_to(self, to: str) -> list[str]:
        return [s.text for s in self.sends if s.to == to]

    def asgi(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/{version}/{phone_number_id}/messages", self._graph, methods=["POST"]),
                Route("/messages/text", self._whapi, methods=["POST"]),
                Route("/_control/script", self._control_script, methods=["POST"]),
                Route("/_control/sends", self._control_sends, methods=["GET"]),
                Route("/_control/reset", self._control_reset, methods=["POST"]),
            ]
        )

    async def _fault(self) -> Fault | None:
        fault = self._script.popleft() if self._script else None
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        return fault

    def _record(self, provider: str, to: str, text: str, request: Request, **extra: Any) -> str:
        self._counter += 1
        prefix = "wamid.FAKE" if provider == "meta_cloud" else "FAKE.whapi."
        message_id = f"{prefix}{self._counter:06d}"
        self.sends.append(
            Send(
                provider=provider,
                to=to,
                text=text,
                id=message_id,
                phone_number_id=extra.get("phone_number_id"),
                authorization=request.headers.get("authorization"),
                callback=extra.get("callback"),
                at=time.monotonic(),
            )
        )
        return message_id

    async def _graph(self, request: Request) -> Response:
        payload = await request.json()
        if not str(request.headers.get("authorization", "")).startswith("Bearer "):
            return meta_error(190, 401)
        if payload.get("messaging_product") != "whatsapp" or not payload.get("to"):
            return meta_error(100, 400)
        fault = await self._fault()
        if fault is not None and fault.reject_before_record:
            return meta_error(fault.code or 131000, fault.status)
        if payload.get("status") == "read":
            return JSONResponse({"success": True})
        if payload.get("type") != "text" or not (payload.get("text") or {}).get("body"):
            return meta_error(100, 400)
        if fault is not None and fault.code is not None:
            return meta_error(fault.code, fault.status)
        if fault is not None and fault.status >= 500 and not fault.drop:
            return Response("<html>Bad Gateway</html>", status_code=fault.status)
        message_id = self._record(
            "meta_cloud",
            payload["to"],
            payload["text"]["body"],
            request,
            phone_number_id=request.path_params["phone_number_id"],
            callback=payload.get("biz_opaque_callback_data"),
        )
        if fault is not None and fault.drop:
            return await hang()
        return JSONResponse(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": payload["to"], "wa_id": payload["to"]}],
                "messages": [{"id": message_id}],
            }
        )

    async def _whapi(self, request: Request) -> Response:
        payload = await request.json()
        if not str(request.headers.get("authorization", "")).startswith("Bearer "):
            return JSONResponse(
                {"error": {"code": 401, "message": "Unauthorized"}}, status_code=401
            )
        if not payload.get("to") or not payload.get("body"):
            return JSONResponse(
                {"error": {"code": 400, "message": "to and body required"}}, status_code=400
            )
        fault = await self._fault()
        if fault is not None and (fault.code is not None or fault.reject_before_record):
            return JSONResponse(
                {"error": {"code": fault.status, "message": "fault"}}, status_code=fault.status
            )
        message_id = self._record("whapi", str(payload["to"]), str(payload["body"]), request)
        if fault is not None and fault.drop:
            return await hang()
        return JSONResponse(
            {
                "sent": True,
                "message": {
                    "id": message_id,
                    "from_me": True,
                    "type": "text",
                    "chat_id": f"{payload['to']}@s.whatsapp.net",
                    "timestamp": int(time.time()),
                    "text": {"body": payload["body"]},
                },
            }
        )

    async def _control_script(self, request: Request) -> Response:
        items = await request.json()
        self.script(*(Fault(**item) for item in items))
        return JSONResponse({"queued": len(self._script)})

    async def _control_sends(self, _: Request) -> Response:
        return JSONResponse({"sends": [asdict(s) for s in self.sends]})

    async def _control_reset(self, _: Request) -> Response:
        self.reset()
        return JSONResponse({"ok": True})


async def hang() -> Response:
    await asyncio.sleep(30)  # longer than any client timeout in the tests
    return Response(status_code=504)


def meta_error(code: int, status: int) -> JSONResponse:
    title = ERROR_TITLES.get(code, "Error")
    return JSONResponse(
        {
            "error": {
                "message": f"(#{code}) {title}",
                "type": "OAuthException",
                "code": code,
                "error_data": {"messaging_product": "whatsapp", "details": title},
                "fbtrace_id": "AFakeTraceId",
            }
        },
        status_code=status,
    )


# -- webhooks as the providers send them --------------------------------------------------


def meta_inbound(
    phone_number_id: str,
    sender: str,
    text: str,
    wamid: str,
    *,
    name: str = "Sheena Nelson",
    kind: str = "text",
    extra_messages: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Meta's webhook for an inbound message (the shape of the docs' sample)."""
    message: dict[str, Any] = {
        "from": sender,
        "id": wamid,
        "timestamp": str(int(time.time())),
        "type": kind,
    }
    if kind == "text":
        message["text"] = {"body": text}
    else:
        message[kind] = (
            {"id": "media-1", "mime_type": "image/jpeg", "caption": text}
            if text
            else {"id": "media-1"}
        )
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550783881",
                                "phone_number_id": phone_number_id,
                            },
                            "contacts": [{"profile": {"name": name}, "wa_id": sender}],
                            "messages": [message, *(extra_messages or [])],
                        },
                        "field": "messages",
                    }
                ],
            }
        ],
    }


def meta_status(
    phone_number_id: str,
    wamid: str,
    status: str,
    recipient: str,
    *,
    error_code: int | None = None,
    callback: str | None = None,
) -> dict[str, Any]:
    """Meta's status webhook (sent, delivered, read, failed with `errors`)."""
    item: dict[str, Any] = {
        "id": wamid,
        "status": status,
        "timestamp": str(int(time.time())),
        "recipient_id": recipient,
    }
    if status != "failed":
        item["pricing"] = {
            "billable": False,
            "pricing_model": "PMP",
            "category": "service",
            "type": "free_customer_service",
        }
    if error_code is not None:
        title = ERROR_TITLES.get(error_code, "Error")
        item["errors"] = [
            {
                "code": error_code,
                "title": title,
                "message": title,
                "error_data": {"details": title},
                "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
            }
        ]
    if callback is not None:
        item["biz_opaque_callback_data"] = callback
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "5467539754836534",
                "changes": [
                    {
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550783881",
                                "phone_number_id": phone_number_id,
                            },
                            "statuses": [item],
                        },
                        "field": "messages",
                    }
                ],
            }
        ],
    }


def whapi_inbound(
    sender: str, text: str, message_id: str, *, from_me: bool = False, chat: str | None = None
) -> dict[str, Any]:
    """Whapi's webhook for a message (the help desk's sample, made valid JSON)."""
    chat_id = f"{chat or sender}@s.whatsapp.net"
    return {
        "messages": [
            {
                "id": message_id,
                "from_me": from_me,
                "type": "text",
                "chat_id": chat_id,
                "timestamp": int(time.time()),
                "source": "mobile" if not from_me else "api",
                "text": {"body": text},
                "from": sender,
                "from_name": "Gerald",
            }
        ],
        "event": {"type": "messages", "event": "post"},
        "channel_id": "MANTIS-M72HC",
    }


def encode(payload: dict[str, Any]) -> bytes:
    """The body as a provider sends it: compact JSON with non-ASCII text kept as is."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def sign(body: bytes, app_secret: str) -> str:
    """`X-Hub-Signature-256` as Meta computes it: HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def create_app() -> Starlette:
    return FakeWhatsApp().asgi()
