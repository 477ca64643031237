"""A rate limiter shared by every worker process through the store.

Per key: at most ``rate`` requests started in any sliding ``per``-second
window, and at most ``concurrency`` in flight. Several limits can be taken
together (atomically: all or none), e.g. a QuickBooks company's 500 requests
a minute and its 40 batch requests a minute. A 429 from the target can
``block`` a key for everyone until the time the target named.

Deciding happens under a lock on the keys' rows (``SELECT ... FOR UPDATE`` on
PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite); the request itself runs outside
any transaction. A slot's lease bounds how long a dead worker can hold a
concurrency place.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from connectors.base import Limit, RateLimitTimeout
from runner.store import ratelimit as shared

POLL = 0.05     # seconds between tries while only the concurrency limit is full


# Limit and RateLimitTimeout are part of the connector contract (connectors.base)
__all__ = ["Limit", "RateLimitTimeout", "RateLimiter"]


class RateLimiter:
    def __init__(self, store: Any, *, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep):
        self.store = store
        self.clock = clock
        self.sleep = sleep

    # ---- the decision, under lock ---------------------------------------------------

    def try_acquire(self, limits: Sequence[Limit]) -> tuple[list[int] | None, float]:
        """Take a slot under every limit, or none. Returns (slot ids, 0) or (None, seconds to wait)."""
        return shared.try_take(self.store, limits, self.clock(), POLL)

    def release(self, slot_ids: Sequence[int]) -> None:
        """End the requests. Each now counts in the window from its end: the target saw it
        somewhere between start and end, and counting from the end never undercounts."""
        if slot_ids:
            shared.release(self.store, slot_ids, self.clock())

    def block(self, key: str, until: float) -> None:
        """Nobody starts a request under ``key`` before ``until`` (a 429's Retry-After)."""
        shared.block(self.store, key, until)

    # ---- waiting ------------------------------------------------------------------

    def acquire(self, limits: Sequence[Limit], *, max_wait: float | None = None) -> list[int]:
        """Wait for a slot under every limit; ``RateLimitTimeout`` if that would exceed ``max_wait``."""
        deadline = None if max_wait is None else self.clock() + max_wait
        while True:
            ids, wait = self.try_acquire(limits)
            if ids is not None:
                return ids
            if deadline is not None and self.clock() + wait > deadline:
                raise RateLimitTimeout([lim.key for lim in limits], wait)
            self.sleep(wait)

    @contextmanager
    def slot(self, limits: Sequence[Limit], *, max_wait: float | None = None) -> Iterator[None]:
        ids = self.acquire(limits, max_wait=max_wait)
        try:
            yield
        finally:
            self.release(ids)
