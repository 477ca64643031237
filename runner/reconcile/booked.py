"""What the runner booked for a Stripe object: inbox events and their delivery rows.

Matching rule (documented in the README): a balance transaction's source object
(``source.id``, and its ``payment_intent`` for charges) is booked by every
delivery whose inbox event carries that object (``event.data.object.id``) and
whose event type books the transaction's reporting category (the policy's
``expect``). The index ``recon_event_objects`` (event id -> object id) is filled
incrementally from the inbox so each page of 100 transactions costs one query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from runner.core import jsonio
from runner.store import recon


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


def bookings_for(store, object_ids: Iterable[str], exclude_flow: str | None = None) -> dict[str, list[Booked]]:
    """object id -> its events (with their delivery rows, if any)."""
    ids = sorted({i for i in object_ids if i})
    out: dict[str, list[Booked]] = {}
    if not ids:
        return out
    for r in recon.bookings(store, ids, exclude_flow):
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
    txn_ids = sorted({i for i in txn_ids if i})
    source_ids = sorted({i for i in source_ids if i})
    out: dict[str, list[PostedBooking]] = {}
    if not txn_ids and not source_ids:
        return out
    for r in recon.postings(store, txn_ids, source_ids, books, exclude_flow):
        b = PostedBooking(*r)
        for key in {b.balance_transaction, b.source} - {None}:
            out.setdefault(key, []).append(b)
    return out
