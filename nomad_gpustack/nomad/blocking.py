"""The one blocking-query loop, with its index and backoff rules, for Nomad and Consul alike.

Both APIs answer `?index=N&wait=D` when their state moves past N or the wait runs out, and return the new
index in a header (`X-Nomad-Index`, `X-Consul-Index`). A return does not mean a change, an index can go
backwards (a snapshot restore, a new leader), and a failed request must be retried without hammering the
server: those rules live here, once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TypeVar

T = TypeVar("T")

QUICK_RETURN = 0.05  # seconds: an unchanged index that comes back faster than this would spin
SPIN_PAUSE = 0.1  # Consul's documentation asks clients to rate-limit that case


def next_index(previous: int, returned: int) -> int:
    """The index for the next query: 0 (a plain read) when it went backwards, never below 1 after an answer.

    An index below 1 would make every later query return at once, for ever.
    """
    if returned < previous:
        return 0
    return max(returned, 1)


def header_index(headers: Mapping[str, str], name: str) -> int:
    """A blocking-query index header (`X-Consul-Index`, `X-Nomad-Index`); 0 when absent or malformed."""
    try:
        return int(headers.get(name, "0") or 0)
    except ValueError:
        return 0


def backoff_delay(attempt: int, *, base: float = 0.5, cap: float = 10.0) -> float:
    """The pause before retry number `attempt` (0-based): exponential, capped, with jitter."""
    delay: float = min(cap, base * (2 ** min(attempt, 10))) * (0.5 + random.random() / 2)
    return delay


async def sleep_backoff(attempt: int, *, base: float = 0.5, cap: float = 10.0) -> float:
    """Exponential backoff with jitter; returns the delay slept."""
    delay = backoff_delay(attempt, base=base, cap=cap)
    await asyncio.sleep(delay)
    return delay


async def follow(
    query: Callable[[int], Awaitable[tuple[T, int]]],
    *,
    retry_on: type[Exception] | tuple[type[Exception], ...],
    on_retry: Callable[[Exception, float], None],
    index: int = 0,
    min_interval: float = 0.0,
) -> AsyncIterator[T]:
    """Run a blocking query for ever and yield its value each time the index moves.

    `query(index)` returns (value, new index); index 0 is a plain read that answers at once. Errors of the
    `retry_on` kinds are retried with backoff (`on_retry` hears of each), resuming from the last index.
    The first answer is always yielded. It never ends by itself: its caller bounds it (the watcher cancels its
    queries when --timeout passes; the gateway follows Consul until it stops).

    `min_interval`: at most one query that often. A query whose state changes all the time answers at once
    every time, each answer the whole list; the pause lets the changes gather into one answer (Consul's
    documentation asks clients of frequently changing data to rate-limit their blocking queries so).
    """
    attempt = 0
    last_start = -min_interval
    while True:
        pause = last_start + min_interval - time.monotonic()
        if pause > 0:
            await asyncio.sleep(pause)
        started = last_start = time.monotonic()
        try:
            value, returned = await query(index)
        except retry_on as exc:
            delay = await sleep_backoff(attempt)
            attempt += 1
            on_retry(exc, delay)
            continue
        attempt = 0
        if returned == index and index > 0:
            if time.monotonic() - started < QUICK_RETURN:
                await asyncio.sleep(SPIN_PAUSE)
            continue  # the wait ran out without a change
        index = next_index(index, returned)
        yield value
