"""The FX rates cache's store operations: one row per (source, base, quote, date), written once.

runner/core/fx.py's caching provider asks here before it asks the rate source; the stored text is
``rate@date used`` (a source may answer a weekend with Friday's rate).
"""

from __future__ import annotations

import time

from sqlalchemy import select

from runner.store.db import Store, _insert
from runner.store.tables import fx_rates


def cached(store: Store, source: str, base: str, quote: str, day: str) -> str | None:
    with store.engine.connect() as c:
        return c.execute(select(fx_rates.c.rate).where(
            fx_rates.c.source == source, fx_rates.c.base == base, fx_rates.c.quote == quote,
            fx_rates.c.rate_date == day)).scalar()


def remember(store: Store, source: str, base: str, quote: str, day: str, rate: str) -> None:
    """Keep a rate; the first one stored for its key stays."""
    with store.tx() as c:
        c.execute(_insert(store.engine, fx_rates).values(source=source, base=base, quote=quote, rate_date=day,
                                                         rate=rate, fetched_at=time.time()).on_conflict_do_nothing())


class RateCache:
    """The cache runner/core/fx.py's ``CachedProvider`` is given (fx stays below the store: it knows only
    ``cached``/``remember`` with the store bound)."""

    def __init__(self, store: Store):
        self.store = store

    def cached(self, source: str, base: str, quote: str, day: str) -> str | None:
        return cached(self.store, source, base, quote, day)

    def remember(self, source: str, base: str, quote: str, day: str, rate: str) -> None:
        remember(self.store, source, base, quote, day, rate)
