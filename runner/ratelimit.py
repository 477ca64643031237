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
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from sqlalchemy import and_, delete, func, or_, select, update

from .errors import LedgerflowError
from .store.tables import rate_keys, rate_slots

POLL = 0.05     # seconds between tries while only the concurrency limit is full


@dataclass(frozen=True)
class Limit:
    key: str
    rate: int | None = None          # requests per window; None: no rate limit
    per: float = 60.0                # window, seconds
    concurrency: int | None = None   # requests in flight; None: unlimited
    lease: float = 120.0             # how long an unreleased slot holds a concurrency place


class RateLimitTimeout(LedgerflowError):
    def __init__(self, keys: list[str], wait: float):
        self.wait = wait
        super().__init__(f"rate limit for {', '.join(keys)} would need a wait of {wait:.1f} s")


class RateLimiter:
    def __init__(self, store: Any, *, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep):
        self.store = store
        self.clock = clock
        self.sleep = sleep

    # ---- the decision, under lock ---------------------------------------------------

    def try_acquire(self, limits: Sequence[Limit]) -> tuple[list[int] | None, float]:
        """Take a slot under every limit, or none. Returns (slot ids, 0) or (None, seconds to wait)."""
        now = self.clock()
        limits = sorted(limits, key=lambda lim: lim.key)     # one lock order for everyone
        with self.store.tx(immediate=True) as c:
            self._ensure_keys(c, [lim.key for lim in limits])
            rows = c.execute(select(rate_keys.c.key, rate_keys.c.blocked_until)
                             .where(rate_keys.c.key.in_([lim.key for lim in limits]))
                             .order_by(rate_keys.c.key).with_for_update()).all()
            wait = max([b - now for _, b in rows if b and b > now] or [0.0])
            for lim in limits:
                c.execute(delete(rate_slots).where(and_(
                    rate_slots.c.key == lim.key, rate_slots.c.started_at <= now - lim.per,
                    or_(rate_slots.c.lease_until.is_(None), rate_slots.c.lease_until <= now))))
                if lim.rate is not None:
                    started = c.execute(select(rate_slots.c.started_at).where(and_(
                        rate_slots.c.key == lim.key, rate_slots.c.started_at > now - lim.per))
                        .order_by(rate_slots.c.started_at.desc()).limit(lim.rate)).scalars().all()
                    if len(started) >= lim.rate:
                        wait = max(wait, started[-1] + lim.per - now)
                if lim.concurrency is not None:
                    busy = c.execute(select(func.count()).select_from(rate_slots).where(and_(
                        rate_slots.c.key == lim.key, rate_slots.c.lease_until > now))).scalar_one()
                    if busy >= lim.concurrency:
                        wait = max(wait, POLL)
            if wait > 0:
                return None, wait
            ids = []
            for lim in limits:
                res = c.execute(rate_slots.insert().values(key=lim.key, started_at=now, lease_until=now + lim.lease))
                ids.append(res.inserted_primary_key[0])
            return ids, 0.0

    def release(self, slot_ids: Sequence[int]) -> None:
        """End the requests. Each now counts in the window from its end: the target saw it
        somewhere between start and end, and counting from the end never undercounts."""
        if slot_ids:
            with self.store.tx() as c:
                c.execute(update(rate_slots).where(rate_slots.c.id.in_(list(slot_ids)))
                          .values(lease_until=None, started_at=self.clock()))

    def block(self, key: str, until: float) -> None:
        """Nobody starts a request under ``key`` before ``until`` (a 429's Retry-After)."""
        with self.store.tx(immediate=True) as c:
            self._ensure_keys(c, [key])
            c.execute(update(rate_keys).where(and_(rate_keys.c.key == key, rate_keys.c.blocked_until < until))
                      .values(blocked_until=until))

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

    def _ensure_keys(self, c, keys: list[str]) -> None:
        have = set(c.execute(select(rate_keys.c.key).where(rate_keys.c.key.in_(keys))).scalars())
        for k in keys:
            if k not in have:
                if self.store.dialect == "postgresql":
                    from sqlalchemy.dialects.postgresql import insert
                else:
                    from sqlalchemy.dialects.sqlite import insert
                c.execute(insert(rate_keys).values(key=k, blocked_until=0.0).on_conflict_do_nothing())
