"""The dispatcher's store operations: claim a chunk of inbox events, write the chunk's plans.

Planning is written a chunk at a time (runner/ingest/dispatch.py): the events are taken
with ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several dispatchers
(serve and workers) share the inbox without planning an event twice; on SQLite
the write transaction re-reads the events' status under the database write lock
and only the events still waiting are written. Each chunk's delivery rows go in
with one ``INSERT ... ON CONFLICT (idempotency_key) DO NOTHING`` executed for
many rows (a known key keeps its row and state: nothing is repeated), their
postings with another, the events' new status with one ``UPDATE``.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

from sqlalchemy import and_, bindparam, or_, select, update
from sqlalchemy.engine import Connection

from runner.core import jsonio
from runner.store.db import Store, _insert
from runner.store.tables import deliveries, delivery_postings, inbox


def delivery_row(op: Any, now: float) -> tuple[dict, dict | None]:
    """The deliveries row (pending, due now) and the delivery_postings row (or None) of one operation."""
    row = {"idempotency_key": op.idempotency_key, "event_id": op.event_id, "flow": op.flow,
           "flow_file": getattr(op, "flow_file", None), "route": op.route, "connection": op.connection,
           "connector_type": op.connector_type, "action": op.action, "payload": jsonio.dumps(op.payload),
           "state": "pending", "attempts": 0, "max_attempts": getattr(op, "max_attempts", None) or 6,
           "retry_policy": getattr(op, "retry_policy", None), "next_attempt_at": now, "created_at": now,
           "updated_at": now}
    p = getattr(op, "posting", None)
    if not p:
        return row, None
    return row, {"idempotency_key": op.idempotency_key, "flow": op.flow, "connection": op.connection,
                 "kind": p["kind"], "movement": p["key"], "balance_transaction": p.get("balance_transaction"),
                 "source": p.get("source"), "account": p.get("account"), "books": p["books"],
                 "currency": p["currency"], "gross": str(p["gross"]), "fee": str(p["fee"]), "net": str(p["net"]),
                 "settlement_currency": p.get("settlement_currency"),
                 "settlement_amount": str(p.get("settlement_amount")), "created_at": now}


def _waiting(statuses: tuple[str, ...], after: tuple[float, str] | None):
    conds = [inbox.c.status.in_(statuses)]
    if after is not None:       # keyset paging: a re-planned event that failed again is not taken twice
        conds.append(or_(inbox.c.received_at > after[0],
                         and_(inbox.c.received_at == after[0], inbox.c.event_id > after[1])))
    return and_(*conds)


def claim_events(store: Store, conn: Connection, limit: int, statuses: tuple[str, ...],
                 after: tuple[float, str] | None = None) -> list[dict]:
    """Up to ``limit`` inbox rows in one of ``statuses`` (oldest first, after the ``after`` cursor).

    On PostgreSQL they stay locked until ``conn``'s transaction ends and other
    dispatchers skip them; on SQLite this is a plain read (see ``still_waiting``).
    """
    q = (select(inbox).where(_waiting(statuses, after))
         .order_by(inbox.c.received_at, inbox.c.event_id).limit(limit))
    if store.dialect == "postgresql":
        q = q.with_for_update(skip_locked=True)
    return [dict(r) for r in conn.execute(q).mappings()]


def still_waiting(conn: Connection, event_ids: list[str], statuses: tuple[str, ...]) -> set[str]:
    """The ids among ``event_ids`` still in one of ``statuses`` (read inside the write transaction)."""
    return set(conn.execute(select(inbox.c.event_id).where(
        and_(inbox.c.event_id.in_(event_ids), inbox.c.status.in_(statuses)))).scalars())


def insert_deliveries(store: Store, conn: Connection, rows: Iterable[tuple[dict, dict | None]]) -> set[str]:
    """Insert delivery rows (and their postings) that are not there yet; the keys inserted.

    The keys already present are read first (one SELECT), then every row goes in with
    ``ON CONFLICT DO NOTHING`` and no RETURNING (which costs SQLAlchemy three times the
    insert's CPU). Under SQLite's write lock the answer is exact; on PostgreSQL a key another
    process inserts between the two statements is still written once (and its posting once),
    it is only counted as new by both.
    """
    by_key: dict[str, tuple[dict, dict | None]] = {}
    for row, posting in rows:          # a key planned twice in one chunk: its first plan, as row by row
        by_key.setdefault(row["idempotency_key"], (row, posting))
    keys = list(by_key)
    known: set[str] = set()
    for i in range(0, len(keys), 500):
        known.update(conn.execute(select(deliveries.c.idempotency_key).where(
            deliveries.c.idempotency_key.in_(keys[i:i + 500]))).scalars())
    created = set(keys) - known
    if not created:
        return created
    conn.execute(_insert(store.engine, deliveries).on_conflict_do_nothing(index_elements=["idempotency_key"]),
                 [by_key[k][0] for k in keys if k in created])
    postings = [by_key[k][1] for k in keys if k in created and by_key[k][1] is not None]
    if postings:
        conn.execute(_insert(store.engine, delivery_postings)
                     .on_conflict_do_nothing(index_elements=["idempotency_key"]), postings)
    return created


def mark_events(conn: Connection, marks: list[dict]) -> None:
    """One UPDATE for many events; each mark: event_id, status, flows, error."""
    if not marks:
        return
    conn.execute(update(inbox).where(inbox.c.event_id == bindparam("m_id")).values(
        status=bindparam("m_status"), flows=bindparam("m_flows"), error=bindparam("m_error"),
        updated_at=time.time()),
        [{"m_id": m["event_id"], "m_status": m["status"], "m_flows": m["flows"], "m_error": m["error"]}
         for m in marks])
