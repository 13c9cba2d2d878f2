"""Rate limits and token quotas on the `limits` library: in process memory by default, in Redis
when `REDIS_URL` is set (then every process enforces one shared limit).

Requests use a moving window (an exact count of the last minute: no burst at window edges;
`rate_limited`); tokens use a fixed 24-hour window that is charged after each reply
(`quota_exceeded` once it is used up). If Redis cannot
be reached, `RATE_LIMIT_FAIL_OPEN` decides: let the request through (logged) or answer 503.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from limits import (
    RateLimitItem,
    RateLimitItemPerDay,
    RateLimitItemPerHour,
    RateLimitItemPerMinute,
    RateLimitItemPerSecond,
)
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
from limits.errors import StorageError

from app.core.config import Settings
from app.core.errors import AppError, RateLimitedError

logger = logging.getLogger("app.ratelimit")

T = TypeVar("T")
STORAGE_RETRY_SECONDS = 5.0  # after a Redis failure, how long to stop asking it
PERIODS: dict[str, type[RateLimitItem]] = {
    "second": RateLimitItemPerSecond,
    "minute": RateLimitItemPerMinute,
    "hour": RateLimitItemPerHour,
    "day": RateLimitItemPerDay,
}


class LimiterUnavailableError(AppError):
    status_code = 503
    code = "rate_limiter_unavailable"
    message = "Rate limits cannot be checked right now; try again shortly."


@dataclass(frozen=True)
class Rule:
    """`limit` per `period` for one subject, e.g. 60 per minute for end user X of project P."""

    scope: str  # user | api_key | project | end_user | login_ip | login_account | register_ip
    subject: tuple[str, ...]
    limit: int  # 0: unlimited
    period: str = "minute"
    multiples: int = 1  # e.g. 15 with "minute": per 15 minutes

    @property
    def item(self) -> RateLimitItem:
        return PERIODS[self.period](self.limit, self.multiples)

    @property
    def window(self) -> str:
        return self.period if self.multiples == 1 else f"{self.multiples} {self.period}s"


class RateLimits:
    def __init__(self, settings: Settings) -> None:
        self.fail_open = settings.RATE_LIMIT_FAIL_OPEN
        storage: Storage
        if settings.REDIS_URL:
            storage = RedisStorage(
                "async+" + settings.REDIS_URL.get_secret_value(),
                implementation="redispy",
                wrap_exceptions=True,
                key_prefix="cbp",
                socket_connect_timeout=0.5,
                socket_timeout=0.5,
            )
        else:
            storage = MemoryStorage()
        self.backend = "redis" if settings.REDIS_URL else "memory"
        self.storage = storage
        self.requests = MovingWindowRateLimiter(storage)
        self.tokens = FixedWindowRateLimiter(storage)
        self._down_until = 0.0

    async def hit(self, rules: Sequence[Rule]) -> None:
        """Count one request against each rule; 429 `rate_limited` at the first one exceeded."""
        for rule in rules:
            if rule.limit <= 0:
                continue
            allowed = await self._call(self.requests.hit(rule.item, rule.scope, *rule.subject))
            if allowed is False:
                stats = await self._call(
                    self.requests.get_window_stats(rule.item, rule.scope, *rule.subject)
                )
                reset = stats.reset_time if stats else time.time() + 60
                raise _exceeded(
                    rule,
                    reset,
                    code="rate_limited",
                    message=f"Too many requests for this {rule.scope.replace('_', ' ')}: "
                    f"at most {rule.limit} per {rule.window}.",
                )

    async def refuse_if_exhausted(self, rule: Rule, message: str) -> None:
        """429 `rate_limited` if the rule has nothing left, without counting anything."""
        if rule.limit <= 0:
            return
        allowed = await self._call(self.requests.test(rule.item, rule.scope, *rule.subject))
        if allowed is False:
            stats = await self._call(
                self.requests.get_window_stats(rule.item, rule.scope, *rule.subject)
            )
            reset = stats.reset_time if stats else time.time() + 60
            raise _exceeded(rule, reset, code="rate_limited", message=message)

    async def count(self, rule: Rule) -> None:
        """Count one event against the rule (never refuses)."""
        if rule.limit > 0:
            await self._call(
                self.requests.hit(rule.item, rule.scope, *rule.subject), raise_closed=False
            )

    async def check_quota(self, rules: Sequence[Rule]) -> None:
        """429 `quota_exceeded` when a token budget is used up."""
        for rule in rules:
            if rule.limit <= 0:
                continue
            stats = await self._call(
                self.tokens.get_window_stats(rule.item, rule.scope, *rule.subject)
            )
            if stats is not None and stats.remaining <= 0:
                raise _exceeded(
                    rule,
                    stats.reset_time,
                    code="quota_exceeded",
                    message=f"The {rule.scope.replace('_', ' ')}'s token quota ({rule.limit} "
                    f"per {rule.window}) is used up.",
                )

    async def charge(self, rules: Sequence[Rule], tokens: int) -> None:
        """Count the tokens a reply used against each budget."""
        if tokens <= 0:
            return
        for rule in rules:
            if rule.limit > 0:
                await self._call(
                    self.tokens.hit(rule.item, rule.scope, *rule.subject, cost=tokens),
                    raise_closed=False,
                )

    async def remaining(self, rule: Rule) -> int | None:
        """Requests left in the rule's window (None when it cannot be told)."""
        stats = await self._call(
            self.requests.get_window_stats(rule.item, rule.scope, *rule.subject)
        )
        return stats.remaining if stats else None

    async def _call(self, operation: Awaitable[T], *, raise_closed: bool = True) -> T | None:
        """Run a storage operation; a storage failure follows RATE_LIMIT_FAIL_OPEN."""
        if time.monotonic() < self._down_until:
            close = getattr(operation, "close", None)
            if close is not None:
                close()  # never awaited: the storage is known to be down
            self._unavailable(raise_closed)
            return None
        try:
            return await operation
        except (StorageError, ConnectionError, OSError, TimeoutError) as exc:
            self._down_until = time.monotonic() + STORAGE_RETRY_SECONDS
            logger.warning(
                "rate limit storage unreachable backend=%s fail_open=%s error=%s",
                self.backend,
                self.fail_open,
                type(getattr(exc, "storage_error", exc)).__name__,
            )
            self._unavailable(raise_closed)
            return None

    def _unavailable(self, raise_closed: bool) -> None:
        if not self.fail_open and raise_closed:
            raise LimiterUnavailableError()
        return None

    async def ping(self) -> bool:
        try:
            return bool(await self.storage.check())
        except Exception:
            return False


def _exceeded(rule: Rule, reset_time: float, *, code: str, message: str) -> RateLimitedError:
    retry_after = max(1, math.ceil(reset_time - time.time()))
    error = RateLimitedError(
        message,
        retry_after=retry_after,
        code=code,
        details=[{"scope": rule.scope, "limit": rule.limit, "period": rule.window}],
    )
    error.headers |= {
        "X-RateLimit-Limit": str(rule.limit),
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(math.ceil(reset_time)),
        "X-RateLimit-Scope": rule.scope,
    }
    return error
