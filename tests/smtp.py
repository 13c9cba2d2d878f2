"""A real SMTP server on 127.0.0.1 (aiosmtpd, in its own thread), keeping what it receives."""

from __future__ import annotations

import asyncio
import email
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller


@dataclass
class Inbox:
    messages: list[Message] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)
    refuse: bool = False  # answer 451 (a temporary failure) instead of accepting

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse:
            return "451 try again later"
        with self.arrived:
            self.messages.append(email.message_from_bytes(envelope.content))
            self.arrived.notify_all()
        return "250 OK"

    async def wait_for(self, count: int, within: float = 15.0) -> list[Message]:
        """Wait (without blocking the event loop) until `count` messages have arrived."""
        deadline = time.monotonic() + within
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.messages)} of {count} emails arrived")
            await asyncio.to_thread(self._wait, min(0.2, deadline - time.monotonic()))
        return self.messages[:count]

    def _wait(self, seconds: float) -> None:
        with self.arrived:
            self.arrived.wait(max(seconds, 0.01))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def token_in(message: Message, path: str) -> str:
    """The `token=` of the `{PUBLIC_BASE_URL}/<path>?token=...` link in a message."""
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes)
    found = re.search(rf"/{path}\?token=([A-Za-z0-9_\-%]+)", body.decode())
    assert found, body
    return found.group(1)


class SMTPServer:
    def __init__(self) -> None:
        self.inbox = Inbox()
        self.port = free_port()
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> SMTPServer:
        self.controller.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.controller.stop()

    def settings(self) -> dict[str, Any]:
        return {
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": self.port,
            "SMTP_STARTTLS": False,
            "SMTP_FROM": "Chatbot Platform <no-reply@example.com>",
            "JOBS_POLL_SECONDS": 0.05,
            "SMTP_TIMEOUT": 5,
        }
