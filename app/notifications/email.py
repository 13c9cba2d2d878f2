"""Email: queued in the transaction of what caused it, sent by a job (`email.send`), retried.

Backends: SMTP (`aiosmtplib`, with `SMTP_*`), or, in development with no `SMTP_HOST`, the
console: the message is written to the log, like Django's console backend, so a fresh clone
needs no mail server. A request never waits for, or fails because of, a mail server.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol

import aiosmtplib
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.jobs.queue import enqueue
from app.jobs.worker import GiveUp, JobKind, JobRun

logger = logging.getLogger("app.notifications")

EMAIL_KIND = "email.send"


@dataclass(frozen=True)
class Email:
    to: str
    subject: str
    text: str


class EmailBackend(Protocol):
    async def send(self, email: Email) -> None: ...


class ConsoleBackend:
    """Development: the message goes to the log (its links included), nowhere else."""

    async def send(self, email: Email) -> None:
        logger.info(
            "email (console backend) to=%s subject=%s\n%s", email.to, email.subject, email.text
        )


class SMTPBackend:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def send(self, email: Email) -> None:
        settings = self.settings
        message = EmailMessage()
        message["From"] = settings.SMTP_FROM
        message["To"] = email.to
        message["Subject"] = email.subject
        message.set_content(email.text)
        password = settings.SMTP_PASSWORD.get_secret_value() if settings.SMTP_PASSWORD else None
        try:
            await aiosmtplib.send(
                message,
                hostname=settings.SMTP_HOST,
                port=settings.SMTP_PORT,
                username=settings.SMTP_USERNAME,
                password=password,
                start_tls=settings.SMTP_STARTTLS,
                timeout=settings.SMTP_TIMEOUT,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:  # retrying will not make it valid
            raise GiveUp(f"recipient refused: {exc}") from exc


def email_backend(settings: Settings) -> EmailBackend:
    return SMTPBackend(settings) if settings.SMTP_HOST else ConsoleBackend()


def email_job(backend: EmailBackend) -> JobKind:
    async def send(run: JobRun) -> None:
        await backend.send(Email(**run.payload))
        logger.info("email sent kind=%s attempt=%d", run.payload.get("kind"), run.attempt)

    # Sent messages may carry one-time links: their payload is dropped once delivered.
    return JobKind(send, scrub_when_done=True)


async def queue_email(
    session: AsyncSession,
    email: Email,
    *,
    workspace_id: uuid.UUID | None = None,
) -> None:
    """Send `email` once the caller's transaction commits (never if it rolls back)."""
    await enqueue(
        session,
        EMAIL_KIND,
        {"to": email.to, "subject": email.subject, "text": email.text},
        workspace_id=workspace_id,
    )
