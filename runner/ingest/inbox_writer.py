"""Group commit for the inbox: one writer thread, one transaction per batch.

Request handlers hand their verified event to ``submit`` and wait. The writer
takes everything queued so far (up to ``max_batch``), inserts it with
``Store.add_events`` in a single transaction (SQLite: WAL + synchronous=FULL,
so the commit is on disk), and only then releases every waiting response.
While one batch commits the next one gathers, so the cost of a commit (an
fsync) is shared by all the events that arrived meanwhile. The thread keeps
one connection across batches (no pool check-out, nor PostgreSQL's pre-ping
round trip, per batch); a batch that fails on a reused connection is tried
once more on a new one, so a connection the server dropped while idle costs
no 503.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Any, Callable

log = logging.getLogger("ledgerflow.inbox")

_STOP = object()


class InboxUnavailable(Exception):
    """The batch could not be committed; nothing of it is acknowledged."""


class InboxWriter:
    def __init__(self, store, *, max_batch: int = 1000, on_commit: Callable[[int], None] | None = None):
        self.store = store
        self.max_batch = max_batch
        self.on_commit = on_commit
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.committed = 0
        self._conn = None             # the writer thread's own connection, kept across batches

    def start(self) -> "InboxWriter":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="inbox-writer", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._q.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    async def submit(self, event: dict, raw: str, source: str) -> bool:
        """Queue one event and wait until its batch is committed; True when it was new."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._q.put((event, raw, source, fut, loop))
        return await fut

    # ---- the writer thread --------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._q.get()
            if first is _STOP:
                break
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            self._commit(batch)
        self._drop_connection()

    def _add(self, rows: list[tuple]) -> list[bool]:
        """``Store.add_events`` in one transaction on the kept connection (SQLite: BEGIN IMMEDIATE)."""
        reused = self._conn is not None
        if self._conn is None:
            self._conn = self.store.engine.connect()
        if self.store.dialect == "sqlite":
            self._conn.info["begin_sql"] = "BEGIN IMMEDIATE"     # as Store.tx(immediate=True)
        try:
            with self._conn.begin():
                return self.store.add_events(rows, conn=self._conn)
        except Exception:
            self._drop_connection()
            if not reused:
                raise
        return self._add(rows)           # the kept connection may have gone stale: once more, on a new one

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - a broken connection is dropped either way
                pass
            self._conn = None

    def _insert(self, batch: list[tuple]) -> list[Any]:
        """One outcome per item: True/False (new/duplicate) or InboxUnavailable."""
        try:
            results: list[Any] = self._add([(ev, raw, src) for ev, raw, src, _, _ in batch])
            self.batches += 1
            self.committed += len(batch)
            return results
        except Exception as exc:  # noqa: BLE001 - every waiting request must get an answer
            log.error("inbox commit of %d event(s) failed: %s: %s", len(batch), type(exc).__name__, exc)
            if len(batch) == 1:
                return [InboxUnavailable(type(exc).__name__)]
        # one bad row must not cost the others their place: commit them one by one
        return [self._insert([item])[0] for item in batch]

    def _commit(self, batch: list[tuple]) -> None:
        results = self._insert(batch)
        by_loop: dict[Any, list] = {}
        for (_, _, _, fut, loop), outcome in zip(batch, results):
            by_loop.setdefault(loop, []).append((fut, outcome))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, items)
            except RuntimeError:   # the loop is closed: nobody is waiting any more
                pass
        new = sum(1 for r in results if r is True)
        if self.on_commit and new:
            try:
                self.on_commit(new)
            except Exception:  # noqa: BLE001
                log.exception("on_commit hook failed")


def _settle(items: list[tuple[asyncio.Future, Any]]) -> None:
    for fut, outcome in items:
        if fut.done():
            continue
        if isinstance(outcome, Exception):
            fut.set_exception(outcome)
        else:
            fut.set_result(outcome)
