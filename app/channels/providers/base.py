"""The channel provider interface: what a WhatsApp gateway must do for us, and the one error
type its failures become (classified by what we should do about them).

Providers are stateless; the per-channel values come in a `Link`. Vendor JSON stops at the
provider module: webhooks are parsed into `Inbound`, sends return `Sent` or raise `SendError`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from app.core.outbound import OutboundAddressRefused


@dataclass(frozen=True)
class Link:
    """One channel's connection: where to call and with what."""

    base_url: str
    token: str
    phone_number_id: str | None = None
    api_version: str | None = None


@dataclass(frozen=True)
class InboundMessage:
    external_id: str
    contact_id: str  # who wrote (or, for our own echoes, to whom)
    kind: str  # text, image, audio, ...
    text: str  # the text, or a placeholder such as "[image]" (with the caption, if any)
    contact_name: str | None = None
    from_me: bool = False  # sent from the linked device (Whapi): our echo, or a human typing
    timestamp: int | None = None


@dataclass(frozen=True)
class StatusUpdate:
    external_id: str
    status: str  # sent, delivered, read, failed
    timestamp: int | None = None
    error_code: str | None = None
    error_title: str | None = None
    callback: str | None = None  # what we sent as biz_opaque_callback_data (Meta)
    pricing: dict[str, Any] | None = None


@dataclass
class Inbound:
    """Everything one webhook request carried that is for this channel."""

    messages: list[InboundMessage] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # out-of-band error codes
    ignored: int = 0  # entries for another number, groups, unknown kinds


@dataclass(frozen=True)
class Sent:
    external_id: str


class Failure(enum.StrEnum):
    """What a failed send calls for."""

    RETRY = "retry"  # temporary: try again with backoff
    THROTTLED = "throttled"  # the number's throughput: slow the whole channel
    PACE_CONTACT = "pace_contact"  # too many to this recipient: slow this conversation
    AUTH = "auth"  # our credentials: the channel stops until they are fixed
    WINDOW_CLOSED = "window_closed"  # the 24-hour customer-service window has closed
    PERMANENT = "permanent"  # undeliverable, invalid: no retry
    AMBIGUOUS = "ambiguous"  # the request may have gone through (timeout after sending)


class SendError(Exception):
    def __init__(
        self,
        failure: Failure,
        title: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{code or failure.value}: {title}")
        self.failure = failure
        self.title = title
        self.code = code
        self.retry_after = retry_after


class ChannelProvider(Protocol):
    name: str

    def parse(self, payload: Any, link_id: str | None) -> Inbound:
        """The messages and statuses in a webhook payload (already authenticated); entries
        for another number than `link_id` are ignored."""
        ...

    async def send_text(
        self,
        client: httpx.AsyncClient,
        link: Link,
        to: str,
        text: str,
        *,
        callback: str | None = None,
    ) -> Sent:
        """Send one text message (at most MAX_TEXT characters)."""
        ...


def transport_failure(exc: httpx.HTTPError) -> SendError:
    """A network failure: before the request left (retry) or after (ambiguous). A base URL the
    outbound guard refuses fails for good: retrying cannot change where it points."""
    if isinstance(exc, OutboundAddressRefused):
        return SendError(Failure.PERMANENT, str(exc), code="url_not_allowed")
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return SendError(Failure.RETRY, f"could not connect: {type(exc).__name__}")
    return SendError(Failure.AMBIGUOUS, f"no answer after sending: {type(exc).__name__}")


def to_int(value: Any) -> int | None:
    """A provider's number, which may come as a string (Meta's timestamps), or None."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after", "")
    return float(value) if value.isdigit() else None
