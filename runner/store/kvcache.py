"""The key/value cache connectors keep look-ups in (``Runtime.cache``): one place for
the ``kv_cache`` table's SQL, which the QuickBooks Online and Sage look-ups and the
Web Connector's stable ids each used to write for themselves. Shared by every
worker through the store; values are text (JSON when structured)."""

from __future__ import annotations

import time
from typing import Any, Callable

from sqlalchemy import and_, delete, select

from runner.store.db import _insert
from runner.store.tables import kv


class KeyValueCache:
    def __init__(self, store: Any, clock: Callable[[], float] = time.time):
        self.store = store
        self.clock = clock

    @staticmethod
    def _where(namespace: str, key: str):
        return and_(kv.c.namespace == namespace, kv.c.key == key)

    def entry(self, namespace: str, key: str) -> tuple[str, float] | None:
        """(value, when it was written), or None."""
        with self.store.engine.connect() as c:
            row = c.execute(select(kv.c.value, kv.c.updated_at).where(self._where(namespace, key))).first()
        return None if row is None else (row.value, row.updated_at)

    def get(self, namespace: str, key: str) -> str | None:
        found = self.entry(namespace, key)
        return None if found is None else found[0]

    def put(self, namespace: str, key: str, value: str) -> None:
        now = self.clock()
        stmt = _insert(self.store.engine, kv).values(namespace=namespace, key=key, value=value, updated_at=now)
        with self.store.tx(immediate=True) as c:
            c.execute(stmt.on_conflict_do_update(index_elements=["namespace", "key"],
                                                 set_={"value": value, "updated_at": now}))

    def put_new(self, namespace: str, key: str, value: str) -> str:
        """Store ``value`` unless the key has one already; the value the key has now (two
        processes racing both get the winner's)."""
        stmt = _insert(self.store.engine, kv).values(namespace=namespace, key=key, value=value,
                                                     updated_at=self.clock())
        with self.store.tx(immediate=True) as c:
            c.execute(stmt.on_conflict_do_nothing(index_elements=["namespace", "key"]))
            return c.execute(select(kv.c.value).where(self._where(namespace, key))).scalar_one()

    def delete(self, namespace: str, key: str) -> None:
        with self.store.tx(immediate=True) as c:
            c.execute(delete(kv).where(self._where(namespace, key)))
