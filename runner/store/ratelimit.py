"""The shared rate limiter's store operations (runner/store/limiter.py waits and retries; this decides).

Deciding happens under a lock on the keys' rows (``SELECT ... FOR UPDATE`` on PostgreSQL,
``BEGIN IMMEDIATE`` on SQLite): one ``rate_limit_keys`` row per limited key (``blocked_until``
after a 429), one ``rate_limit_slots`` row per request started under it.
"""

from __future__ import annotations

from typing import Any, Sequence

from sqlalchemy import and_, delete, func, or_, select, update

from runner.store.db import Store, _insert
from runner.store.tables import rate_keys, rate_slots


def try_take(store: Store, limits: Sequence[Any], now: float, poll: float) -> tuple[list[int] | None, float]:
    """Take a slot under every limit (key, rate, per, concurrency, lease), or none: (slot ids, 0) or
    (None, seconds to wait); ``poll`` is the wait while only a concurrency limit is full."""
    limits = sorted(limits, key=lambda lim: lim.key)     # one lock order for everyone
    with store.tx(immediate=True) as c:
        _ensure_keys(store, c, [lim.key for lim in limits])
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
                    wait = max(wait, poll)
        if wait > 0:
            return None, wait
        ids = []
        for lim in limits:
            res = c.execute(rate_slots.insert().values(key=lim.key, started_at=now, lease_until=now + lim.lease))
            ids.append(res.inserted_primary_key[0])
        return ids, 0.0


def release(store: Store, slot_ids: Sequence[int], now: float) -> None:
    """End the requests; each counts in the window from ``now`` (its end)."""
    with store.tx() as c:
        c.execute(update(rate_slots).where(rate_slots.c.id.in_(list(slot_ids))).values(lease_until=None, started_at=now))


def block(store: Store, key: str, until: float) -> None:
    """Nobody starts a request under ``key`` before ``until``."""
    with store.tx(immediate=True) as c:
        _ensure_keys(store, c, [key])
        c.execute(update(rate_keys).where(and_(rate_keys.c.key == key, rate_keys.c.blocked_until < until))
                  .values(blocked_until=until))


def _ensure_keys(store: Store, c, keys: list[str]) -> None:
    have = set(c.execute(select(rate_keys.c.key).where(rate_keys.c.key.in_(keys))).scalars())
    for k in keys:
        if k not in have:
            c.execute(_insert(store.engine, rate_keys).values(key=k, blocked_until=0.0).on_conflict_do_nothing())
