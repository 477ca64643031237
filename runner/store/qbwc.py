"""The QuickBooks Web Connector's store operations: its sessions and the qbXML requests each carried.

The Web Connector (connectors/quickbooks_desktop/webconnector.py) is pulled by QuickBooks'
own client, so it keeps its conversation in the store: one ``qbwc_sessions`` row per login, one
``qbwc_requests`` row per request (requestID -> delivery), so a restart or a broken-off session
loses nothing. Its deliveries' states change only through ``Store.claim`` and ``Store.finish``
(runner/store/transitions.py); this module owns the SQL on its two tables.
"""

from __future__ import annotations

from typing import Any, Iterable

from sqlalchemy import String, and_, cast, func, select, update

from runner.store.db import Store, _due
from runner.store.tables import attempts, deliveries, qbwc_requests, qbwc_sessions

R, S = qbwc_requests, qbwc_sessions


class QbwcStore:
    def __init__(self, store: Store):
        self.store = store

    # ---- sessions --------------------------------------------------------------------------

    def open_session(self, ticket: str, connection: str, *, has_work: bool, now: float) -> None:
        with self.store.tx(immediate=True) as c:
            c.execute(S.insert().values(ticket=ticket, connection=connection, state="open" if has_work else "closed",
                                        round_trips=0, done=0, created_at=now, updated_at=now))

    def session(self, ticket: str | None) -> dict | None:
        if not ticket:
            return None
        with self.store.engine.connect() as c:
            row = c.execute(select(S).where(S.c.ticket == ticket)).mappings().first()
        return dict(row) if row else None

    def update_session(self, ticket: str, **values: Any) -> None:
        with self.store.tx(immediate=True) as c:
            c.execute(update(S).where(S.c.ticket == ticket).values(**values))

    def open_tickets(self, connection: str) -> list[str]:
        with self.store.engine.connect() as c:
            return [r[0] for r in c.execute(select(S.c.ticket).where(and_(S.c.connection == connection,
                                                                         S.c.state == "open")))]

    def end_session(self, ticket: str, state: str, now: float) -> list[int]:
        """Drop the session's queued requests and give it ``state``; the deliveries it still holds."""
        with self.store.tx(immediate=True) as c:
            c.execute(update(R).where(and_(R.c.ticket == ticket, R.c.state == "queued"))
                      .values(state="released", updated_at=now))
            c.execute(update(S).where(S.c.ticket == ticket).values(state=state, updated_at=now))
        return [d.id for d in self.store.find_deliveries(claimed_by=ticket, state="sending")]

    # ---- requests ---------------------------------------------------------------------------

    def requests(self, ticket: str, state: str) -> list[dict]:
        """The session's requests in ``state``, oldest first; ``request_id`` as the text sent."""
        with self.store.engine.connect() as c:
            rows = c.execute(select(R).where(and_(R.c.ticket == ticket, R.c.state == state))
                             .order_by(R.c.id)).mappings().all()
        out = [dict(r) for r in rows]
        for r in out:
            r["request_id"] = str(r["request_id"]) if r["request_id"] is not None else None
        return out

    def queue(self, ticket: str, phases: Iterable[tuple[int, str]], now: float,
              answered: Iterable[tuple[int, int | None]] = ()) -> None:
        """Mark ``answered`` requests (id, status code) answered and queue (delivery id, phase) requests."""
        with self.store.tx(immediate=True) as c:
            for rid, code in answered:
                c.execute(update(R).where(R.c.id == rid).values(state="answered", status_code=code, updated_at=now))
            for delivery_id, phase in phases:
                c.execute(R.insert().values(ticket=ticket, delivery_id=delivery_id, phase=phase, state="queued",
                                            created_at=now, updated_at=now))

    def mark_sent(self, ticket: str, ids: list[int], now: float) -> None:
        """These requests went out in one message (requestID = row id); one more round trip."""
        with self.store.tx(immediate=True) as c:
            if ids:
                c.execute(update(R).where(R.c.id.in_(ids))
                          .values(state="sent", request_id=cast(R.c.id, String), updated_at=now))
            c.execute(update(S).where(S.c.ticket == ticket).values(round_trips=S.c.round_trips + 1, updated_at=now))

    def set_state(self, ids: list[int], state: str, now: float) -> None:
        with self.store.tx(immediate=True) as c:
            c.execute(update(R).where(R.c.id.in_(ids)).values(state=state, updated_at=now))

    def record(self, ticket: str, answered: list[tuple[int, int | None]], now: float) -> None:
        """These requests (id, status code) decided their deliveries: answered, counted as done."""
        with self.store.tx(immediate=True) as c:
            for rid, code in answered:
                c.execute(update(R).where(R.c.id == rid).values(state="answered", status_code=code, updated_at=now))
            c.execute(update(S).where(S.c.ticket == ticket).values(done=S.c.done + len(answered), updated_at=now))

    def unanswered_adds(self, delivery_ids: list[int]) -> set[int]:
        """Deliveries with an add request that an earlier session sent and never heard back about."""
        with self.store.engine.connect() as c:
            return {r[0] for r in c.execute(select(R.c.delivery_id).where(and_(
                R.c.delivery_id.in_(delivery_ids), R.c.phase == "add", R.c.state.in_(("sent", "unanswered")))))}

    def unanswered_in(self, ticket: str, note_prefix: str) -> int:
        """Attempts this session logged with an error starting ``note_prefix``."""
        with self.store.engine.connect() as c:
            return c.execute(select(func.count()).select_from(attempts).where(and_(
                attempts.c.worker == ticket, attempts.c.error.like(note_prefix + "%")))).scalar_one()

    def due_count(self, connection: str, connector_type: str, now: float) -> int:
        """Deliveries of this connection a claim would take now."""
        q = select(func.count()).select_from(deliveries).where(and_(
            _due(now), deliveries.c.connection == connection, deliveries.c.connector_type == connector_type))
        with self.store.engine.connect() as c:
            return c.execute(q).scalar_one()
