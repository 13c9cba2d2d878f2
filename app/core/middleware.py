"""ASGI middleware that guards the app: the request-body size limit."""

from __future__ import annotations

import json
import re

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import OPENAI_PATH_PREFIX, openai_error_body
from app.core.logging import request_id_var


class BodySizeLimitMiddleware:
    """Answers 413 in the error shape when a body exceeds the limit.

    Checks `Content-Length` up front and counts streamed (chunked) bytes as they arrive.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        larger: tuple[tuple[str | re.Pattern[str], int], ...] = (),
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.larger = larger  # (a path prefix or a pattern of whole paths, its own limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        limit = next((size for paths, size in self.larger if _matches(paths, path)), None)
        limit = limit or self.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(send, path, limit)
            return

        received = 0

        async def counting_receive() -> Message:
            # Raised inside the endpoint's body read, so the app's error handler renders it.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, detail=self._message(limit))
            return message

        await self.app(scope, counting_receive, send)

    @staticmethod
    def _message(limit: int) -> str:
        return f"The request body is larger than {limit} bytes."

    async def _reject(self, send: Send, path: str, limit: int) -> None:
        message = self._message(limit)
        if path.startswith(OPENAI_PATH_PREFIX):
            payload = openai_error_body(413, "payload_too_large", message)
        else:
            payload = {"error": {"code": "payload_too_large", "message": message}}
        body = json.dumps(payload).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        request_id = request_id_var.get()
        if request_id:
            headers.append((b"x-request-id", request_id.encode("latin-1")))
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


DOCS_PATHS = ("/docs", "/redoc", "/openapi.json")


class SecurityHeadersMiddleware:
    """Hardening headers on every response: no MIME sniffing, no framing, no referrer, no
    caching of API answers, a locked-down CSP (except on the interactive docs, which load
    Swagger UI's scripts), and HSTS in production."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = str(scope.get("path", "")).startswith(DOCS_PATHS)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                extra = [
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                ]
                if not docs:
                    extra.append(
                        (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
                    )
                    extra.append((b"cache-control", b"no-store"))
                if self.hsts:
                    extra.append(
                        (b"strict-transport-security", b"max-age=31536000; includeSubDomains")
                    )
                headers.extend((name, value) for name, value in extra if name not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


# A NUL character, as JSON writes it (`\u0000` not itself escaped), raw, or URL-encoded.
_JSON_NUL = re.compile(rb"(?:^|[^\\])(?:\\\\)*\\u0000", re.IGNORECASE)


NUL_MESSAGE = "The request contains a NUL character (\\u0000), which cannot be stored."


def _matches(paths: str | re.Pattern[str], path: str) -> bool:
    return path.startswith(paths) if isinstance(paths, str) else bool(paths.fullmatch(path))


class NulGuardMiddleware:
    """Answers 422 when a request's query or body carries a NUL character: no database can
    store one in text (Postgres refuses it), so it is refused up front for every route."""

    def __init__(self, app: ASGIApp, file_uploads: tuple[re.Pattern[str], ...] = ()) -> None:
        self.app = app
        # Routes whose multipart bodies carry files: binary, streamed to disk rather than held
        # here; those routes keep NULs out of what they store themselves.
        self.file_uploads = file_uploads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if b"%00" in scope.get("query_string", b""):
            await self._reject(send, scope.get("path", ""))
            return
        content_type = dict(scope["headers"]).get(b"content-type", b"")
        if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS") or (
            content_type.startswith(b"multipart/form-data")
            and any(_matches(paths, scope.get("path", "")) for paths in self.file_uploads)
        ):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        body = b""
        while True:  # the body is bounded by BodySizeLimitMiddleware, outside this one
            try:
                message = await receive()
            except HTTPException as exc:  # too large: answered here, outside the app
                await self._reject(send, "", status=exc.status_code, text=str(exc.detail))
                return
            messages.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        form = b"urlencoded" in content_type
        if b"\x00" in body or (form and b"%00" in body) or _JSON_NUL.search(body):
            await self._reject(send, scope.get("path", ""))
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _reject(
        self, send: Send, path: str, *, status: int = 422, text: str = NUL_MESSAGE
    ) -> None:
        code = "payload_too_large" if status == 413 else "validation_error"
        if path.startswith(OPENAI_PATH_PREFIX):
            status = 400 if status == 422 else status
            payload = openai_error_body(status, code, text)
        else:
            payload = {"error": {"code": code, "message": text}}
        body = json.dumps(payload).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        request_id = request_id_var.get()
        if request_id:
            headers.append((b"x-request-id", request_id.encode("latin-1")))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
