"""Request ids and access logs: ids, methods, routes, statuses, timings and the workspace;
never bodies or secrets. Lines are JSON (python-json-logger) or, with LOG_FORMAT=text, plain
key=value text."""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-ID"
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
# Filled in while a request runs (e.g. the caller's workspace) and logged with its access line.
request_facts_var: ContextVar[dict[str, str] | None] = ContextVar("request_facts", default=None)
# The client's address and user agent, for the audit log (never logged by us).
request_client_var: ContextVar[tuple[str | None, str | None]] = ContextVar(
    "request_client", default=(None, None)
)
# Who the request acts as, for the audit log: (user | api_key, id, the user's email).
request_actor_var: ContextVar[tuple[str, uuid.UUID, str | None] | None] = ContextVar(
    "request_actor", default=None
)
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

access_logger = logging.getLogger("app.access")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get() or "-"
        return True


def note_request_fact(key: str, value: str) -> None:
    """Add a fact (e.g. `workspace_id`) to the current request's access log line."""
    facts = request_facts_var.get()
    if facts is not None:
        facts[key] = value


def configure_logging(level: str, log_format: str = "json") -> None:
    """One line per record on stderr, tagged with the request id: JSON objects (the message,
    plus each record's structured fields), or key=value text."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    formatter: logging.Formatter
    if log_format == "json":
        formatter = JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    else:
        formatter = logging.Formatter(
            "%(asctime)s level=%(levelname)s logger=%(name)s request_id=%(request_id)s %(message)s"
        )
    handler.setFormatter(formatter)
    root = logging.getLogger("app")
    root.handlers = [handler]
    root.setLevel(level)
    root.propagate = False


class RequestContextMiddleware:
    """Gives every request an id (the caller's `X-Request-ID` if sane), echoes it, logs the request.

    A pure ASGI middleware, so streaming responses pass through untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request_id_var.set(request_id)
        request_actor_var.set(None)
        client = scope.get("client")
        agent = headers.get(b"user-agent")
        request_client_var.set(
            (client[0] if client else None, agent.decode("latin-1")[:500] if agent else None)
        )
        facts: dict[str, str] = {}
        request_facts_var.set(facts)
        started = time.perf_counter()
        status_code = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"
                ]
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            duration_ms = round((time.perf_counter() - started) * 1000, 1)
            route = getattr(scope.get("route"), "path", None)
            access_logger.info(
                "method=%s path=%s status=%s duration_ms=%.1f",
                scope["method"],
                scope["path"],
                status_code,
                duration_ms,
                extra={
                    "event": "request",
                    "method": scope["method"],
                    "route": route,
                    "path": scope["path"],
                    "status": status_code,
                    "duration_ms": duration_ms,
                    **facts,
                },
            )
