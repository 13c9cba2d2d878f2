"""Resilient LLM calls for one turn: retries with backoff (tenacity), a fallback chain of
provider/model targets, circuit breakers, and one deadline for the whole turn.

- Retries happen on retryable failures only (connection errors, timeouts, 429, 5xx), with
  exponential backoff and jitter; a 429's `Retry-After` is honoured when it fits before the
  deadline, otherwise the target is given up at once.
- Once a streamed reply has produced its first chunk, nothing is retried: text may have reached
  the client.
- The next target of the chain is tried when a target fails with a retryable error (or its
  breaker is open). A non-retryable failure (a rejected request, bad credentials) ends the turn.
- A breaker per provider+model opens after `threshold` consecutive failed attempts and skips the
  target for `cooldown` seconds; then one trial call decides whether it closes again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_any,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

from app.llm.base import (
    EmbeddingProvider,
    LLMError,
    LLMNotConfiguredError,
    LLMProvider,
    LLMRateLimitError,
    LLMTimeoutError,
)
from app.llm.types import (
    Completion,
    CompletionRequest,
    EmbeddingRequest,
    Embeddings,
    StreamChunk,
    Usage,
)

logger = logging.getLogger("app.llm")

T = TypeVar("T")

if TYPE_CHECKING:  # the metrics sink is optional and framework-bound
    from app.core.metrics import Metrics


class LLMCircuitOpenError(LLMError):
    """Every target's breaker is open: the upstream failed repeatedly and is resting."""

    retryable = True

    def __init__(self, message: str, *, provider: str, retry_after: int) -> None:
        super().__init__(message, provider=provider, status_code=None)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3  # per target
    base_delay: float = 0.5
    max_delay: float = 8.0
    total_timeout: float = 120.0  # the whole turn, every attempt and wait included
    first_token_timeout: float = 30.0  # streaming: until the first chunk


class CircuitBreaker:
    def __init__(
        self,
        provider: str,
        model: str,
        *,
        threshold: int,
        cooldown: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider, self.model = provider, model
        self.threshold, self.cooldown, self.clock = threshold, cooldown, clock
        self.failures = 0
        self.opened_at: float | None = None
        self.trial_running = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.clock() >= self.opened_at + self.cooldown else "open"

    def allow(self) -> bool:
        """May a call go to this target now? In half-open state, one trial at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self.trial_running:
            self.trial_running = True
            return True
        return False

    def record_success(self) -> None:
        if self.opened_at is not None:
            logger.info("circuit closed provider=%s model=%s", self.provider, self.model)
        self.failures, self.opened_at, self.trial_running = 0, None, False

    def record_failure(self) -> None:
        self.failures += 1
        reopen = self.trial_running
        self.trial_running = False
        if reopen or (self.opened_at is None and self.failures >= self.threshold):
            self.opened_at = self.clock()
            logger.warning(
                "circuit opened provider=%s model=%s failures=%d cooldown_s=%g",
                self.provider,
                self.model,
                self.failures,
                self.cooldown,
            )

    def snapshot(self) -> dict[str, Any]:
        state = self.state
        retry_in = None
        if state == "open" and self.opened_at is not None:
            retry_in = round(self.opened_at + self.cooldown - self.clock(), 1)
        return {
            "provider": self.provider,
            "model": self.model,
            "state": state,
            "consecutive_failures": self.failures,
            "retry_in_seconds": retry_in,
        }


class BreakerBoard:
    """The process's breakers, one per provider+model, created on first use."""

    def __init__(self, *, threshold: int, cooldown: float) -> None:
        self.threshold, self.cooldown = threshold, cooldown
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}

    def get(self, provider: str, model: str) -> CircuitBreaker:
        key = (provider, model)
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = CircuitBreaker(
                provider, model, threshold=self.threshold, cooldown=self.cooldown
            )
            self._breakers[key] = breaker
        return breaker

    def snapshot(self) -> list[dict[str, Any]]:
        return [b.snapshot() for b in self._breakers.values()]


@dataclass(frozen=True)
class Target:
    provider: LLMProvider
    model: str


@dataclass
class CallReport:
    """Who answered and how: filled in as the call runs."""

    provider: str | None = None
    model: str | None = None
    attempts: int = 0
    fallback: bool = False  # answered by a target after the first


def report_headers(report: CallReport | None) -> dict[str, str]:
    """`X-LLM-Attempts` / `X-LLM-Fallback` / `X-LLM-Provider` / `X-LLM-Model` for a response."""
    if report is None or report.attempts == 0:
        return {}
    headers = {
        "X-LLM-Attempts": str(report.attempts),
        "X-LLM-Fallback": "true" if report.fallback else "false",
    }
    if report.provider is not None and report.model is not None:
        headers["X-LLM-Provider"] = report.provider
        headers["X-LLM-Model"] = report.model
    return headers


class _PastDeadline(stop_base):
    """Checked after `wait` chose the pause: give up if it would end past the deadline."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __call__(self, state: RetryCallState) -> bool:
        return time.monotonic() + (state.upcoming_sleep or 0.0) >= self.deadline


@dataclass
class ResilientProvider:
    """An `LLMProvider` for one turn over a chain of targets."""

    targets: list[Target]
    policy: RetryPolicy
    breakers: BreakerBoard
    report: CallReport = field(default_factory=CallReport)
    metrics: Metrics | None = None
    name: str = field(init=False)
    default_model: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = self.targets[0].provider.name
        self.default_model = self.targets[0].model

    async def complete(self, request: CompletionRequest) -> Completion:
        deadline = time.monotonic() + self.policy.total_timeout

        async def call(target: Target) -> Completion:
            return await target.provider.complete(replace(request, model=target.model))

        completion = await self._over_targets(call, deadline)
        self._count_tokens(completion.usage)
        return completion

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        """The texts' vectors, with the same retries, breakers and deadline as a completion."""
        deadline = time.monotonic() + self.policy.total_timeout

        async def call(target: Target) -> Embeddings:
            if not isinstance(target.provider, EmbeddingProvider):
                raise LLMNotConfiguredError(
                    f"{target.provider.name} cannot embed", provider=target.provider.name
                )
            return await target.provider.embed(replace(request, model=target.model))

        embeddings = await self._over_targets(call, deadline)
        self._count_tokens(embeddings.usage)
        return embeddings

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[StreamChunk, None]:
        deadline = time.monotonic() + self.policy.total_timeout
        opened: list[AsyncGenerator[StreamChunk, None]] = []

        async def open_stream(target: Target) -> list[StreamChunk]:
            """The chunks up to the first with text (or the end), within the first-token
            timeout; what comes after is never retried."""
            chunks = target.provider.stream(replace(request, model=target.model))
            opened.append(chunks)
            wait = min(self.policy.first_token_timeout, max(0.0, deadline - time.monotonic()))
            head: list[StreamChunk] = []
            try:
                async with asyncio.timeout(wait):  # in this task: the stream stays in it
                    async for chunk in chunks:
                        head.append(chunk)
                        if chunk.delta or chunk.finish_reason:
                            break
            except TimeoutError:
                await chunks.aclose()
                raise LLMTimeoutError(
                    f"{target.provider.name} sent no text within {wait:.1f}s",
                    provider=target.provider.name,
                ) from None
            except BaseException:
                await chunks.aclose()
                raise
            return head

        head = await self._over_targets(open_stream, deadline)
        chunks = opened[-1]
        breaker = self.breakers.get(self.report.provider or "", self.report.model or "")
        usage: Usage | None = None
        try:
            for chunk in head:
                usage = chunk.usage or usage
                yield chunk
            async with asyncio.timeout_at(_loop_time(deadline)):
                async for chunk in chunks:
                    usage = chunk.usage or usage
                    yield chunk
            self._count_tokens(usage)
        except TimeoutError:
            raise LLMTimeoutError(
                f"the reply did not finish within {self.policy.total_timeout:g}s",
                provider=self.report.provider or self.name,
            ) from None
        except LLMError as exc:
            if exc.retryable:
                breaker.record_failure()
            raise
        finally:
            await chunks.aclose()

    def _count_tokens(self, usage: Usage | None) -> None:
        if self.metrics is not None and usage is not None:
            self.metrics.tokens(
                self.report.provider or self.name,
                self.report.model or self.default_model,
                usage.prompt_tokens,
                usage.completion_tokens,
            )

    def _observe(self, target: Target, outcome: str, started: float) -> None:
        if self.metrics is not None:
            self.metrics.llm_call(
                target.provider.name, target.model, outcome, time.perf_counter() - started
            )

    async def _over_targets(self, call: Callable[[Target], Awaitable[T]], deadline: float) -> T:
        last_error: LLMError | None = None
        for index, target in enumerate(self.targets):
            breaker = self.breakers.get(target.provider.name, target.model)
            if not breaker.allow():
                retry_in = breaker.snapshot()["retry_in_seconds"] or 1
                last_error = last_error or LLMCircuitOpenError(
                    f"{target.provider.name} ({target.model}) failed repeatedly and is paused",
                    provider=target.provider.name,
                    retry_after=max(1, math.ceil(retry_in)),
                )
                continue
            try:
                result = await self._with_retries(call, target, breaker, deadline)
            except LLMError as exc:
                if not exc.retryable:
                    raise
                last_error = exc
                if time.monotonic() >= deadline:
                    break
                continue
            self.report.provider, self.report.model = target.provider.name, target.model
            self.report.fallback = index > 0
            return result
        assert last_error is not None  # noqa: S101 - there is at least one target
        raise last_error

    async def _with_retries(
        self,
        call: Callable[[Target], Awaitable[T]],
        target: Target,
        breaker: CircuitBreaker,
        deadline: float,
    ) -> T:
        backoff = wait_exponential_jitter(
            multiplier=self.policy.base_delay,
            max=self.policy.max_delay,
            jitter=self.policy.base_delay,
        )

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, LLMRateLimitError) and error.retry_after is not None:
                return float(error.retry_after)
            return float(backoff(state))

        retrying = AsyncRetrying(
            stop=stop_any(stop_after_attempt(self.policy.max_attempts), _PastDeadline(deadline)),
            wait=wait,
            retry=retry_if_exception(lambda e: isinstance(e, LLMError) and e.retryable),
            reraise=True,
            before_sleep=_log_retry(target),
        )
        async for attempt in retrying:
            with attempt:
                self.report.attempts += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LLMTimeoutError(
                        f"the turn's {self.policy.total_timeout:g}s deadline passed",
                        provider=target.provider.name,
                    )
                started = time.perf_counter()
                try:
                    async with asyncio.timeout(remaining):
                        result = await call(target)
                except TimeoutError:
                    breaker.record_failure()
                    self._observe(target, "LLMTimeoutError", started)
                    raise LLMTimeoutError(
                        f"the turn's {self.policy.total_timeout:g}s deadline passed",
                        provider=target.provider.name,
                    ) from None
                except LLMError as exc:
                    self._observe(target, type(exc).__name__, started)
                    if exc.retryable:
                        breaker.record_failure()
                    else:
                        breaker.record_success()  # it answered; the request was the problem
                    raise
                self._observe(target, "success", started)
                breaker.record_success()
                return result
        raise AssertionError("unreachable")  # pragma: no cover - reraise=True


def _log_retry(target: Target) -> Callable[[RetryCallState], None]:
    def log(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        logger.warning(
            "llm retry provider=%s model=%s attempt=%d wait_s=%.2f error=%s",
            target.provider.name,
            target.model,
            state.attempt_number,
            state.upcoming_sleep,
            type(error).__name__,
        )

    return log


def _loop_time(monotonic_deadline: float) -> float:
    """A `time.monotonic()` deadline on the event loop's clock."""
    return asyncio.get_running_loop().time() + (monotonic_deadline - time.monotonic())


__all__ = [
    "BreakerBoard",
    "CallReport",
    "CircuitBreaker",
    "LLMCircuitOpenError",
    "ResilientProvider",
    "RetryPolicy",
    "Target",
]
