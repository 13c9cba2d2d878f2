"""Callers resolved recently, so that a request does not re-read its user or API key.

An entry lives `AUTH_CACHE_SECONDS` (0 turns the cache off). Revoking a key forgets it at once
in the process that revoked it; other processes, and changes made directly in the database
(deactivating or deleting a user), take effect within that many seconds.

When an entry expires under load, the concurrent requests of that caller share one lookup
instead of each querying the database (`load`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.auth.dependencies import Principal

CACHED_CALLERS = 10_000

# What a lookup finds: the caller and (an API key's) expiry, or None for an unknown caller.
Found = tuple["Principal", datetime | None] | None


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
        self._loading: dict[str, asyncio.Future[Principal | None]] = {}

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

    async def load(self, key: str, lookup: Callable[[], Awaitable[Found]]) -> Principal | None:
        """The cached caller, else what `lookup` finds (cached): one lookup per key at a time,
        shared by the requests that arrive while it runs. It runs as its own task, so a
        request that goes away does not cancel it for the others; its error reaches them all."""
        principal = self.get(key)
        if principal is not None:
            return principal
        loading = self._loading.get(key)
        if loading is None:
            loading = asyncio.ensure_future(self._lookup(key, lookup))
            self._loading[key] = loading
            loading.add_done_callback(partial(self._loaded, key))
        return await asyncio.shield(loading)

    async def _lookup(self, key: str, lookup: Callable[[], Awaitable[Found]]) -> Principal | None:
        found = await lookup()
        if found is None:
            return None
        principal, expires_at = found
        self.put(key, principal, expires_at)
        return principal

    def _loaded(self, key: str, loading: asyncio.Future[Principal | None]) -> None:
        if self._loading.get(key) is loading:
            del self._loading[key]
        if not loading.cancelled():
            loading.exception()  # retrieved: every waiter may have gone away

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
