"""A webhook receiver on 127.0.0.1 that checks each delivery with the Standard Webhooks
reference code (the `standardwebhooks` package's `verify`), not with our signing function."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class Receiver:
    secret: str | None = None
    statuses: list[int] = field(default_factory=list)  # answers to give, in order; then 204
    received: list[dict[str, Any]] = field(default_factory=list)  # verified envelopes
    headers: list[dict[str, str]] = field(default_factory=list)
    rejected: int = 0
    delay: float = 0.0  # seconds to take over each delivery (a slow endpoint)
    started: int = 0  # deliveries that arrived, answered or not

    def ids(self) -> set[str]:
        return {envelope["id"] for envelope in self.received}

    def in_session_order(self) -> bool:
        """Whether each session's events first arrived in sequence order (duplicates aside)."""
        seen: set[str] = set()
        last: dict[str, int] = {}
        for envelope in self.received:
            if envelope["id"] in seen or "sessionid" not in envelope:
                continue
            seen.add(envelope["id"])
            session, sequence = envelope["sessionid"], envelope["sequence"]
            if sequence <= last.get(session, 0):
                return False
            last[session] = sequence
        return True

    def asgi(self) -> Starlette:
        return Starlette(routes=[Route("/hook", self._hook, methods=["POST"])])

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        self.started += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.secret is not None:
            try:
                Webhook(self.secret).verify(body, dict(request.headers))
            except WebhookVerificationError:
                self.rejected += 1
                return Response(status_code=401)
        status = self.statuses.pop(0) if self.statuses else 204
        if 200 <= status < 300:
            self.received.append(json.loads(body))
            self.headers.append(dict(request.headers))
        return Response(status_code=status)
