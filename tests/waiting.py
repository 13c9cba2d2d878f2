"""Waiting for something a background task does, bounded in count and time."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def until(
    probe: Callable[[], Awaitable[T] | T],
    done: Callable[[T], bool],
    *,
    polls: int = 200,
    every: float = 0.05,
    what: str = "the condition",
) -> T:
    """Call `probe` (a coroutine function, or a plain one) until `done(its result)`, at most
    `polls` times `every` seconds apart; the last result, or AssertionError naming `what`."""
    for _ in range(polls):
        found = probe()
        if inspect.isawaitable(found):
            found = await found
        if done(found):
            return found
        await asyncio.sleep(every)
    raise AssertionError(f"{what} did not happen within {polls * every:.0f} s")
