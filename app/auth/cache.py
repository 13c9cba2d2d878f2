"""Callers resolved recently, so that a request does not re-read its user or API key.

An entry lives `AUTH_CACHE_SECONDS` (0 turns the cache off). Revoking a key forgets it at once
in the process that revoked it; other processes, and changes made directly in the database
(deactivating or deleting a user), take effect within that many seconds.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.auth.dependencies import Principal

CACHED_CALLERS = 10_000


@dataclass(frozen=True)
class _Entry:
    principal: Principal
    until: float  # monotonic
    expires_at: datetime | None  # an API key's own expiry


class PrincipalCache:
    def __init__(self, ttl_seconds: float, size: int = CACHED_CALLERS) -> None:
        self.ttl = ttl_seconds
        self.size = size
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def get(self, key: str) -> Principal | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.until <= time.monotonic() or (
            entry.expires_at is not None and entry.expires_at <= datetime.now(UTC)
        ):
            del self._entries[key]
            return None
        return entry.principal

    def put(self, key: str, principal: Principal, expires_at: datetime | None = None) -> None:
        if self.ttl <= 0:
            return
        self._entries[key] = _Entry(principal, time.monotonic() + self.ttl, expires_at)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def forget(self, matching: Callable[[Principal], bool]) -> None:
        for key in [k for k, e in self._entries.items() if matching(e.principal)]:
            del self._entries[key]

    def forget_api_key(self, key_id: uuid.UUID) -> None:
        self.forget(lambda principal: principal.api_key_id == key_id)
