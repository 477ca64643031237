"""Payout reconciliation's store operations (runner/reconcile reads what was booked through these).

``recon_event_objects`` indexes which Stripe object each inbox event carries (filled incrementally
from the inbox), so a balance transaction's source finds its bookings by an index instead of a scan
of event payloads; ``delivery_postings`` holds the money movement each delivery books;
``recon_results`` one row per reconciled payout per run.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import and_, select

from runner.store.db import Store, _insert
from runner.store.tables import deliveries, delivery_postings, inbox, recon_event_objects, recon_results


def refresh_index(store, batch: int = 1000) -> int:
    """Index inbox events not indexed yet; the number added."""
    added = 0
    idx = recon_event_objects
    q = (select(inbox.c.event_id, inbox.c.type, inbox.c.account, inbox.c.payload)
         .select_from(inbox.outerjoin(idx, idx.c.event_id == inbox.c.event_id))
         .where(idx.c.event_id.is_(None)).limit(batch))
    while True:
        with store.engine.connect() as c:
            rows = c.execute(q).all()
        if not rows:
            return added
        values = []
        for r in rows:
            try:
                obj = json.loads(r.payload)["data"]["object"]
                oid = obj.get("id") if isinstance(obj, dict) else None
            except (ValueError, KeyError, TypeError):
                oid = None
            values.append({"event_id": r.event_id, "object_id": str(oid or ""), "event_type": r.type,
                           "account": r.account})
        with store.tx() as c:
            for v in values:
                c.execute(_insert(store.engine, idx).values(**v).on_conflict_do_nothing())
        added += len(values)
        if len(rows) < batch:
            return added


def bookings(store: Store, ids: list[str], exclude_flow: str | None = None) -> list[tuple]:
    """(object id, event id, event type, event status, delivery id, state, flow, connector type, action,
    payload JSON, last error) for each event carrying one of ``ids``, delivery columns None without a row."""
    idx = recon_event_objects
    join_cond = deliveries.c.event_id == idx.c.event_id
    if exclude_flow:
        join_cond = and_(join_cond, deliveries.c.flow != exclude_flow)
    q = (select(idx.c.object_id, idx.c.event_id, idx.c.event_type, inbox.c.status, deliveries.c.id,
                deliveries.c.state, deliveries.c.flow, deliveries.c.connector_type, deliveries.c.action,
                deliveries.c.payload, deliveries.c.last_error)
         .select_from(idx.join(inbox, inbox.c.event_id == idx.c.event_id).outerjoin(deliveries, join_cond))
         .where(idx.c.object_id.in_(ids)))
    with store.engine.connect() as c:
        return [tuple(r) for r in c.execute(q)]


def postings(store: Store, txn_ids: list[str], source_ids: list[str], books: str,
             exclude_flow: str | None = None) -> list[tuple]:
    """(delivery id, state, flow, connection, kind, movement, balance transaction, source, settlement amount,
    last error) of each posting in ``books`` of one of these balance transactions or sources."""
    dp = delivery_postings
    cond = dp.c.balance_transaction.in_(txn_ids)
    if source_ids:
        cond = cond | dp.c.source.in_(source_ids)
    q = (select(deliveries.c.id, deliveries.c.state, dp.c.flow, dp.c.connection, dp.c.kind, dp.c.movement,
                dp.c.balance_transaction, dp.c.source, dp.c.settlement_amount, deliveries.c.last_error)
         .select_from(dp.join(deliveries, deliveries.c.idempotency_key == dp.c.idempotency_key))
         .where(and_(cond, dp.c.books == books)))
    if exclude_flow:
        q = q.where(dp.c.flow != exclude_flow)
    with store.engine.connect() as c:
        return [tuple(r) for r in c.execute(q)]


def add_result(store: Store, **values: Any) -> None:
    """One reconciled payout of a run."""
    with store.tx() as c:
        c.execute(recon_results.insert().values(**values, at=time.time()))
