"""What the runner booked for a Stripe object: inbox events and their delivery rows.

Matching rule (documented in the README): a balance transaction's source object
(``source.id``, and its ``payment_intent`` for charges) is booked by every
delivery whose inbox event carries that object (``event.data.object.id``) and
whose event type books the transaction's reporting category (the policy's
``expect``). The index ``recon_event_objects`` (event id -> object id) is filled
incrementally from the inbox so each page of 100 transactions costs one query.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

from sqlalchemy import and_, select

from .. import jsonio
from ..store.db import _insert
from ..store.tables import deliveries, inbox, recon_event_objects


@dataclass
class Booked:
    event_id: str
    event_type: str
    event_status: str
    delivery_id: int | None = None
    state: str | None = None
    flow: str | None = None
    connector_type: str | None = None
    action: str | None = None
    payload: Any = None
    last_error: str | None = None


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


def bookings_for(store, object_ids: Iterable[str], exclude_flow: str | None = None) -> dict[str, list[Booked]]:
    """object id -> its events (with their delivery rows, if any)."""
    ids = sorted({i for i in object_ids if i})
    out: dict[str, list[Booked]] = {}
    if not ids:
        return out
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
        for r in c.execute(q):
            out.setdefault(r[0], []).append(Booked(
                event_id=r[1], event_type=r[2], event_status=r[3], delivery_id=r[4], state=r[5], flow=r[6],
                connector_type=r[7], action=r[8], payload=jsonio.loads(r[9]) if r[9] else None, last_error=r[10]))
    return out


def dig(payload: Any, path: str) -> Any:
    """A value at a dotted path with [n] list indexes (``lines[0].amount``); None when absent."""
    cur = payload
    for part in path.replace("]", "").split("."):
        name, _, index = part.partition("[")
        if name:
            if not isinstance(cur, dict) or name not in cur:
                return None
            cur = cur[name]
        if index:
            if not isinstance(cur, list) or int(index) >= len(cur):
                return None
            cur = cur[int(index)]
    return cur


@dataclass
class PostedBooking:
    """A delivery that booked a movement through the accounting model (``delivery_postings``)."""

    delivery_id: int
    state: str
    flow: str
    connection: str
    kind: str
    movement: str
    balance_transaction: str | None
    source: str | None
    settlement_amount: str | None
    last_error: str | None = None


def postings_for(store, txn_ids: Iterable[str], source_ids: Iterable[str], books: str,
                 exclude_flow: str | None = None) -> dict[str, list[PostedBooking]]:
    """balance transaction id or source id -> the deliveries that booked it, in these books."""
    from ..store.tables import delivery_postings as dp
    txn_ids = sorted({i for i in txn_ids if i})
    source_ids = sorted({i for i in source_ids if i})
    out: dict[str, list[PostedBooking]] = {}
    if not txn_ids and not source_ids:
        return out
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
        for r in c.execute(q):
            b = PostedBooking(*r)
            for key in {b.balance_transaction, b.source} - {None}:
                out.setdefault(key, []).append(b)
    return out
