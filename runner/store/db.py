"""Store operations. Small, explicit, and the same on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from sqlalchemy import and_, bindparam, create_engine, event, func, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from runner.core import jsonio
from runner.store import transitions
from runner.store.model import Delivery, State
from runner.store.tables import attempts, audit, deliveries, delivery_postings, inbox, kv

log = logging.getLogger("ledgerflow.store")

TERMINAL = ("sent", "dead", "discarded")
LOST_ATTEMPT = ("the worker holding this delivery stopped mid-batch (its lease expired); "
                "the attempt may have reached the target, so the next one checks for it first")
LOST = "lost"     # error_kind of a row taken over from a lapsed lease (see ``claim``)


def as_claimed(row: Delivery) -> Delivery:
    """A claimed row as connectors see it: ``attempts`` counts a taken-over holder's attempt that
    may have reached the target, so the connector looks for the document before sending again."""
    if row.error_kind == LOST:
        row = row.replace(attempts=row.attempts + 1)
    return row


def _decided(r: dict, cur, n: int, now: float) -> dict:
    """The bound values of ``finish``'s UPDATE for one result that decides its row's state."""
    sent = transitions.check(r["id"], cur.state, r["state"]) is State.SENT
    error = None if sent else (r["error"] if r.get("error") is not None else cur.last_error)
    kind = None if sent else (r.get("kind") if r.get("error") is not None else cur.error_kind)
    return {"b_id": r["id"], "b_state": State(r["state"]).value, "b_attempts": n,
            "b_target_ref": r["target_ref"] if r.get("target_ref") is not None else cur.target_ref,
            "b_last_error": error, "b_error_kind": kind,
            "b_next": r["next_attempt_at"] if r.get("next_attempt_at") is not None else cur.next_attempt_at,
            "b_sent_at": now if sent else cur.sent_at}


def _due(now: float):
    """Due: pending/retrying whose time has come, or held under a lease that has lapsed."""
    return or_(and_(deliveries.c.state.in_(("pending", "retrying")), deliveries.c.next_attempt_at <= now),
               and_(deliveries.c.state == "sending", deliveries.c.lease_until < now))


def _insert(engine: Engine, table):
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # pragma: no cover - trivially exercised
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")     # a commit is on disk, even on power loss
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
            # let SQLAlchemy's BEGIN be a real BEGIN IMMEDIATE when we ask for one
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(conn):  # pragma: no cover
            conn.exec_driver_sql(conn.info.pop("begin_sql", "BEGIN"))

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)

    @event.listens_for(engine, "connect")
    def _session(dbapi_conn, _record):
        # A process stopped mid-transaction (SIGSTOP, a frozen VM, a debugger) would keep its row locks
        # for as long as it is stopped, and claims skip locked rows (SKIP LOCKED): its leases could
        # never be taken over. PostgreSQL ends such a session after this long idle in a transaction.
        autocommit = dbapi_conn.autocommit
        dbapi_conn.autocommit = True
        with dbapi_conn.cursor() as cur:
            cur.execute(f"SET idle_in_transaction_session_timeout = '{int(IDLE_IN_TRANSACTION * 1000)}ms'")
        dbapi_conn.autocommit = autocommit

    return engine


# Seconds a PostgreSQL transaction may sit between statements before the server ends it (see
# ``make_engine``): longer than any of ours does; one that works while it holds rows asks for more
# (``tx(idle_limit=)``: a dispatcher chunk planning, an OAuth refresh waiting for the token endpoint).
IDLE_IN_TRANSACTION = 60.0


class Store:
    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self.dialect = self.engine.dialect.name
        from runner.store.migrations import upgrade
        upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def tx(self, *, immediate: bool = False, idle_limit: float | None = None) -> Iterator[Connection]:
        """A transaction; on SQLite ``immediate`` takes the write lock up front. ``idle_limit``: seconds
        this transaction may spend between statements (PostgreSQL; default ``IDLE_IN_TRANSACTION``),
        for one that works (fetches, plans) while it holds rows."""
        with self.engine.connect() as conn:
            if immediate and self.dialect == "sqlite":
                conn.info["begin_sql"] = "BEGIN IMMEDIATE"
            with conn.begin():
                if idle_limit is not None and self.dialect == "postgresql":
                    conn.exec_driver_sql(f"SET LOCAL idle_in_transaction_session_timeout = '{int(idle_limit * 1000)}ms'")
                yield conn

    # ---- inbox -------------------------------------------------------------

    def add_events(self, events: Iterable[tuple[dict, str, str]], conn: Connection | None = None) -> list[bool]:
        """Insert (event, raw_json, source) rows; True where new, False for a duplicate id.

        One transaction, no read before the insert: ``INSERT ... ON CONFLICT
        (event_id) DO NOTHING RETURNING event_id`` names the rows this statement
        inserted, so several receiver processes may insert the same id at once
        and exactly one of them gets it as new (PostgreSQL: psycopg's pipelined
        executemany; SQLite: multi-row statements under BEGIN IMMEDIATE). The
        webhook receiver's group commit calls this per batch, so the per-row
        cost matters.
        """
        now = time.time()
        rows = [(ev["id"], ev.get("type", ""), ev.get("account"),
                 ev.get("created") if type(ev.get("created")) is int else None, raw, source, now, "pending", now)
                for ev, raw, source in events]
        if not rows:
            return []
        ph = "?" if self.dialect == "sqlite" else "%s"
        head = "INSERT INTO inbox (event_id, type, account, created, payload, source, received_at, status, updated_at)"
        one = f"({', '.join([ph] * 9)})"
        tail = " ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
        new: set[str] = set()
        with (self._maybe(conn)) as c:
            cur = c.connection.cursor()
            try:
                if self.dialect == "postgresql":
                    cur.executemany(f"{head} VALUES {one}{tail}", rows, returning=True)
                    while True:
                        for r in cur.fetchall():
                            new.add(r[0])
                        if not cur.nextset():
                            break
                else:                                # sqlite3's executemany drops RETURNING rows
                    for i in range(0, len(rows), 300):
                        chunk = rows[i:i + 300]
                        cur.execute(f"{head} VALUES {', '.join([one] * len(chunk))}{tail}",
                                    [v for r in chunk for v in r])
                        new.update(r[0] for r in cur.fetchall())
            finally:
                cur.close()
        results = []
        for r in rows:              # a repeated id within the batch: only its first row is new
            results.append(r[0] in new)
            new.discard(r[0])
        return results

    def add_event(self, ev: dict, raw: str, source: str) -> bool:
        return self.add_events([(ev, raw, source)])[0]

    def get_event(self, event_id: str) -> dict | None:
        with self.engine.connect() as c:
            row = c.execute(select(inbox).where(inbox.c.event_id == event_id)).mappings().first()
        return dict(row) if row else None

    def event_ids(self, ids: Iterable[str]) -> set[str]:
        ids = list(ids)
        found: set[str] = set()
        with self.engine.connect() as c:
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                found.update(r[0] for r in c.execute(select(inbox.c.event_id).where(inbox.c.event_id.in_(chunk))))
        return found

    def list_events(self, *, status: str | None = None, limit: int = 50) -> list[dict]:
        """The newest inbox rows (of ``status``), without their payloads."""
        q = select(*[c for c in inbox.c if c.name != "payload"]).order_by(inbox.c.received_at.desc()).limit(limit)
        if status:
            q = q.where(inbox.c.status == status)
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings().all()]

    def event_payloads(self, ids: Iterable[str]) -> dict[str, str]:
        """The stored JSON of these inbox events, by id (ids not in the inbox left out)."""
        ids = sorted(set(ids))
        out: dict[str, str] = {}
        with self.engine.connect() as c:
            for i in range(0, len(ids), 500):
                out.update(c.execute(select(inbox.c.event_id, inbox.c.payload)
                                     .where(inbox.c.event_id.in_(ids[i:i + 500]))).all())
        return out

    def pending_events(self, limit: int = 500) -> list[dict]:
        with self.engine.connect() as c:
            rows = c.execute(select(inbox).where(inbox.c.status == "pending")
                             .order_by(inbox.c.received_at, inbox.c.event_id).limit(limit)).mappings().all()
        return [dict(r) for r in rows]

    def mark_event(self, event_id: str, status: str, *, flows: str | None = None, error: str | None = None,
                   conn: Connection | None = None) -> None:
        with self._maybe(conn) as c:
            c.execute(update(inbox).where(inbox.c.event_id == event_id)
                      .values(status=status, flows=flows, error=error, updated_at=time.time()))

    def count_events(self, status: str | None = None) -> int:
        q = select(func.count()).select_from(inbox)
        if status:
            q = q.where(inbox.c.status == status)
        with self.engine.connect() as c:
            return c.execute(q).scalar_one()

    # ---- deliveries ----------------------------------------------------------

    def add_deliveries(self, ops: Iterable[Any], *, max_attempts: int = 6, flow_file: str | None = None,
                       conn: Connection | None = None) -> list[tuple[int, bool]]:
        """Write a pending row per operation before any side effect.

        Returns (delivery id, created) per op; an op whose idempotency key is
        already known keeps its existing row (and state): nothing is repeated.
        """
        now = time.time()
        out = []
        with self._maybe(conn) as c:
            for op in ops:
                stmt = _insert(self.engine, deliveries).values(
                    idempotency_key=op.idempotency_key, event_id=op.event_id, flow=op.flow,
                    flow_file=flow_file or getattr(op, "flow_file", None), route=op.route,
                    connection=op.connection, connector_type=op.connector_type, action=op.action,
                    payload=jsonio.dumps(op.payload), state="pending", attempts=0,
                    max_attempts=getattr(op, "max_attempts", None) or max_attempts,
                    retry_policy=getattr(op, "retry_policy", None),
                    next_attempt_at=now, created_at=now, updated_at=now,
                ).on_conflict_do_nothing(index_elements=["idempotency_key"])
                created = c.execute(stmt.returning(deliveries.c.id)).first() is not None
                did = c.execute(select(deliveries.c.id).where(
                    deliveries.c.idempotency_key == op.idempotency_key)).scalar_one()
                out.append((did, created))
                posting = getattr(op, "posting", None)
                if created and posting:
                    c.execute(_insert(self.engine, delivery_postings).values(
                        idempotency_key=op.idempotency_key, flow=op.flow, connection=op.connection,
                        kind=posting["kind"], movement=posting["key"],
                        balance_transaction=posting.get("balance_transaction"), source=posting.get("source"),
                        account=posting.get("account"), books=posting["books"], currency=posting["currency"],
                        gross=str(posting["gross"]), fee=str(posting["fee"]), net=str(posting["net"]),
                        settlement_currency=posting.get("settlement_currency"),
                        settlement_amount=str(posting.get("settlement_amount")), created_at=now,
                    ).on_conflict_do_nothing(index_elements=["idempotency_key"]))
        return out

    def close_plan_rows(self, keys: list[str], conn: Connection | None = None) -> None:
        """Plan rows (runner/deliver/replan.py) whose flow has now planned the event: done."""
        if not keys:
            return
        now = time.time()
        with self._maybe(conn) as c:
            sources = transitions.require(("pending", "retrying", "dead"), State.SENT, "closing plan rows")
            c.execute(update(deliveries).where(and_(deliveries.c.idempotency_key.in_(keys),
                                                    deliveries.c.state.in_(sources)))
                      .values(state=State.SENT.value, target_ref="planned by dispatch", claimed_by=None, lease_until=None,
                              updated_at=now, sent_at=now))

    def delivery(self, delivery_id: int) -> Delivery | None:
        with self.engine.connect() as c:
            row = c.execute(select(deliveries).where(deliveries.c.id == delivery_id)).mappings().first()
        return self._row(row)

    def delivery_by_key(self, key: str) -> Delivery | None:
        with self.engine.connect() as c:
            row = c.execute(select(deliveries).where(deliveries.c.idempotency_key == key)).mappings().first()
        return self._row(row)

    def deliveries_where(self, *conds, limit: int | None = None, order=None) -> list[Delivery]:
        q = select(deliveries).where(and_(*conds)) if conds else select(deliveries)
        q = q.order_by(order if order is not None else deliveries.c.id)
        if limit:
            q = q.limit(limit)
        with self.engine.connect() as c:
            return [self._row(r) for r in c.execute(q).mappings().all()]

    def claim(self, worker: str, *, limit: int = 100, lease: float = 300.0, connections: list[str] | None = None,
              connector_types: list[str] | None = None, ids: list[int] | None = None,
              now: float | None = None) -> list[Delivery]:
        """Take up to ``limit`` due deliveries for this worker, under a lease.

        Due means pending/retrying with next_attempt_at <= now, or claimed by a
        worker whose lease has expired (it died mid-batch). PostgreSQL uses
        ``FOR UPDATE SKIP LOCKED``; SQLite takes the database write lock.
        """
        now = time.time() if now is None else now
        conds = [_due(now)]
        if connections:
            conds.append(deliveries.c.connection.in_(connections))
        if connector_types:
            conds.append(deliveries.c.connector_type.in_(connector_types))
        if ids is not None:
            conds.append(deliveries.c.id.in_(ids))
        q = select(deliveries.c.id).where(and_(*conds)).order_by(deliveries.c.next_attempt_at, deliveries.c.id).limit(limit)
        if self.dialect == "postgresql":
            q = q.with_for_update(skip_locked=True)
        with self.tx(immediate=True) as c:
            claimed = [r[0] for r in c.execute(q)]
            if not claimed:
                return []
            # A row still 'sending' was held by a worker whose lease lapsed (it died or stalled): its
            # attempt may have reached the target. Not counted (it may never have been made, and a late
            # answer counts it in ``finish``), but marked "lost", so the next attempt looks first.
            lost = [r[0] for r in c.execute(select(deliveries.c.id).where(
                and_(deliveries.c.id.in_(claimed), deliveries.c.state == "sending")))]
            if lost:
                c.execute(update(deliveries).where(deliveries.c.id.in_(lost))
                          .values(last_error=LOST_ATTEMPT, error_kind=LOST))
                c.execute(attempts.insert(), [{"delivery_id": i, "attempt": 0, "at": now, "outcome": "lost",
                                               "error": LOST_ATTEMPT, "worker": worker} for i in lost])
            transitions.require(("pending", "retrying", "sending"), State.SENDING, "claim")
            c.execute(update(deliveries).where(deliveries.c.id.in_(claimed))
                      .values(state=State.SENDING.value, claimed_by=worker, lease_until=now + lease, updated_at=now))
            rows = c.execute(select(deliveries).where(deliveries.c.id.in_(claimed))
                             .order_by(deliveries.c.id)).mappings().all()
        return [as_claimed(self._row(r)) for r in rows]

    def claimed(self, worker: str, ids: list[int]) -> list[Delivery]:
        """The rows among ``ids`` that ``worker`` still holds a claim on, as ``claim`` returns them."""
        if not ids:
            return []
        return [as_claimed(r) for r in self.deliveries_where(
            deliveries.c.id.in_(ids), deliveries.c.claimed_by == worker, deliveries.c.state == "sending")]

    def renew(self, worker: str, ids: list[int], lease: float, now: float | None = None) -> int:
        """Extend the leases a live worker holds on ``ids`` (its batch in hand); rows renewed."""
        if not ids:
            return 0
        now = time.time() if now is None else now
        with self.tx() as c:
            return c.execute(update(deliveries).where(and_(
                deliveries.c.id.in_(ids), deliveries.c.claimed_by == worker, deliveries.c.state == "sending"))
                .values(lease_until=now + lease)).rowcount

    def count_due(self, *, connector_types: list[str] | None = None, now: float | None = None) -> int:
        """Deliveries ``claim`` would take now (of these connector types)."""
        now = time.time() if now is None else now
        conds = [_due(now)]
        if connector_types:
            conds.append(deliveries.c.connector_type.in_(connector_types))
        with self.engine.connect() as c:
            return c.execute(select(func.count()).select_from(deliveries).where(and_(*conds))).scalar_one()

    def finish(self, results: list[dict], *, worker: str | None = None,
               flow_run_id: str | None = None) -> set[int]:
        """Record outcomes; the ids whose state this worker's results decided.

        Each result: id, state (sent|retrying|dead), error, kind, target_ref,
        next_attempt_at, counted (False for throttling). With ``worker``, a row
        this worker no longer holds (its lease lapsed and another worker took it
        over) keeps its state, with one exception: a success is the target's
        answer and wins over anything but an earlier success. Every real attempt
        is counted and logged either way. Few statements, each for many rows.
        """
        if not results:
            return set()
        return self.retrying_lost_connection(lambda c: self._finish(c, results, worker, flow_run_id), "finish")

    def retrying_lost_connection(self, body: Callable[[Connection], Any], what: str, tries: int = 3) -> Any:
        """``body(conn)`` in one transaction, again (up to ``tries`` times) when the connection was
        lost before the commit: PostgreSQL ended a session that sat idle in a transaction (a process
        stopped mid-batch, see ``make_engine``) or the server restarted. The transaction was rolled
        back, so nothing is written twice; a failure at the commit itself is not retried (its outcome
        is unknown)."""
        for attempt in range(1, tries + 1):
            committing = False
            try:
                with self.tx(immediate=True) as conn:
                    out = body(conn)
                    committing = True
                return out
            except DBAPIError as exc:
                if committing or not exc.connection_invalidated or attempt == tries:
                    raise
                log.warning("store: the connection was lost during %s before it committed (nothing was written); "
                            "trying again (%d of %d)", what, attempt + 1, tries)
        raise AssertionError("unreachable")

    def _finish(self, c: Connection, results: list[dict], worker: str | None, flow_run_id: str | None) -> set[int]:
        now = time.time()
        d = deliveries
        q = select(d.c.id, d.c.state, d.c.claimed_by, d.c.attempts, d.c.target_ref, d.c.last_error,
                   d.c.error_kind, d.c.next_attempt_at, d.c.sent_at).where(d.c.id.in_([r["id"] for r in results]))
        if self.dialect == "postgresql":
            q = q.with_for_update()
        current = {row.id: row for row in c.execute(q)}
        decided, counted_only, logged = [], [], []
        for r in results:
            cur = current.pop(r["id"], None)
            if cur is None:
                continue
            counted = r.get("counted", True)
            n = cur.attempts + (1 if counted else 0)
            holder = worker is None or (cur.claimed_by == worker and cur.state == "sending")
            if holder or (r["state"] == "sent" and cur.state != "sent"):
                decided.append(_decided(r, cur, n, now))
            elif counted:
                counted_only.append({"b_id": r["id"]})
            logged.append({"delivery_id": r["id"], "attempt": n, "at": now,
                           "outcome": {"sent": "sent", "dead": "dead"}.get(
                               r["state"], "retry" if counted else "throttled"),
                           "error": r.get("error"), "worker": worker, "flow_run_id": flow_run_id})
        if decided:
            c.execute(update(d).where(d.c.id == bindparam("b_id")).values(
                state=bindparam("b_state"), attempts=bindparam("b_attempts"),
                target_ref=bindparam("b_target_ref"), last_error=bindparam("b_last_error"),
                error_kind=bindparam("b_error_kind"), next_attempt_at=bindparam("b_next"),
                sent_at=bindparam("b_sent_at"), updated_at=now, claimed_by=None, lease_until=None), decided)
        if counted_only:     # attempted by a worker that lost its claim: counted, state left to the holder
            c.execute(update(d).where(d.c.id == bindparam("b_id")).values(attempts=d.c.attempts + 1),
                      counted_only)
        if logged:
            c.execute(attempts.insert(), logged)
        return {u["b_id"] for u in decided}

    def find_deliveries(self, *, state: str | Iterable[str] | None = None, flow: str | None = None,
                        connections: Iterable[str] | None = None, connector_type: str | None = None,
                        action: str | None = None, event_id: str | None = None, ids: Iterable[int] | None = None,
                        claimed_by: str | None = None, created_since: float | None = None,
                        limit: int | None = None, newest_first: bool = False) -> list[Delivery]:
        """Deliveries matching every filter given (oldest first unless ``newest_first``)."""
        d = deliveries
        states = [state] if isinstance(state, str) else state
        conds = []
        if states is not None:
            conds.append(d.c.state.in_([State(s).value for s in states]))
        if connections is not None:
            conds.append(d.c.connection.in_(list(connections)))
        if ids is not None:
            conds.append(d.c.id.in_(list(ids)))
        if created_since is not None:
            conds.append(d.c.created_at >= created_since)
        for column, value in ((d.c.flow, flow), (d.c.connector_type, connector_type), (d.c.action, action),
                              (d.c.event_id, event_id), (d.c.claimed_by, claimed_by)):
            if value is not None:
                conds.append(column == value)
        return self.deliveries_where(*conds, limit=limit, order=d.c.id.desc() if newest_first else None)

    def release(self, worker: str, ids: list[int], next_attempt_at: float) -> int:
        """Give back the claims ``worker`` still holds on ``ids`` (a batch that failed as a whole):
        retrying, due at ``next_attempt_at``, attempts not counted. Rows released."""
        sources = transitions.require(("sending",), State.RETRYING, "release")
        d = deliveries
        with self.tx() as c:
            return c.execute(update(d).where(and_(d.c.id.in_(ids), d.c.claimed_by == worker, d.c.state.in_(sources)))
                             .values(state=State.RETRYING.value, claimed_by=None, lease_until=None,
                                     next_attempt_at=next_attempt_at, updated_at=time.time())).rowcount

    def requeue(self, row: Delivery, values: dict, *, budget: int) -> bool:
        """Make ``row`` pending and due now with ``values`` (a replay of a dead row, or a retrying row
        re-planned), ``budget`` more attempts, if it is still as read; True when it was. Attempts keep
        counting (a target that answers a repeated request id with its original fault, as QuickBooks
        Online does, must see a new attempt)."""
        transitions.check(row.id, row.state, State.PENDING)
        now = time.time()
        d = deliveries
        with self.tx(immediate=True) as c:
            res = c.execute(update(d).where(and_(d.c.id == row.id, d.c.state == State(row.state).value,
                                                 d.c.updated_at == row.updated_at)).values(
                **values, state=State.PENDING.value, max_attempts=d.c.attempts + budget, next_attempt_at=now,
                last_error=None, error_kind=None, claimed_by=None, lease_until=None, updated_at=now))
        return res.rowcount == 1

    def discard(self, delivery_id: int) -> bool:
        """A dead delivery discarded by a person; False when it is no longer dead."""
        sources = transitions.require(("dead",), State.DISCARDED, f"discarding delivery {delivery_id}")
        d = deliveries
        with self.tx(immediate=True) as c:
            return c.execute(update(d).where(and_(d.c.id == delivery_id, d.c.state.in_(sources)))
                             .values(state=State.DISCARDED.value, updated_at=time.time())).rowcount == 1

    def set_delivery(self, delivery_id: int, **values: Any) -> None:
        """Change a delivery's columns other than its state (states change through the methods
        runner/store/transitions.py lists, each checked)."""
        if "state" in values:
            raise transitions.IllegalTransition(
                f"delivery {delivery_id}: set_delivery does not change states; use claim, finish, release, "
                "requeue, discard or close_plan_rows (runner/store/transitions.py)")
        values.setdefault("updated_at", time.time())
        if "payload" in values and not isinstance(values["payload"], str):
            values["payload"] = jsonio.dumps(values["payload"])
        with self.tx() as c:
            c.execute(update(deliveries).where(deliveries.c.id == delivery_id).values(**values))

    def attempts_of(self, delivery_id: int) -> list[dict]:
        with self.engine.connect() as c:
            rows = c.execute(select(attempts).where(attempts.c.delivery_id == delivery_id)
                             .order_by(attempts.c.id)).mappings().all()
        return [dict(r) for r in rows]

    def count_deliveries(self, state: str | None = None) -> int:
        q = select(func.count()).select_from(deliveries)
        if state:
            q = q.where(deliveries.c.state == state)
        with self.engine.connect() as c:
            return c.execute(q).scalar_one()

    def audit(self, action: str, subject: str, detail: str = "", actor: str | None = None) -> None:
        import getpass
        with self.tx() as c:
            c.execute(audit.insert().values(at=time.time(), actor=actor or getpass.getuser(), action=action,
                                            subject=subject, detail=detail))

    # ---- the key/value cache ---------------------------------------------------------

    def kv_get_many(self, namespace: str, keys: Iterable[str]) -> dict[str, str]:
        keys = sorted(set(keys))
        out: dict[str, str] = {}
        with self.engine.connect() as c:
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                out.update(c.execute(select(kv.c.key, kv.c.value).where(
                    and_(kv.c.namespace == namespace, kv.c.key.in_(chunk)))).all())
        return out

    def kv_put_many(self, namespace: str, values: dict[str, str]) -> None:
        """Insert or replace; one transaction."""
        if not values:
            return
        now = time.time()
        with self.tx() as c:
            stmt = _insert(self.engine, kv)
            stmt = stmt.on_conflict_do_update(index_elements=[kv.c.namespace, kv.c.key],
                                              set_={"value": stmt.excluded.value, "updated_at": now})
            c.execute(stmt, [{"namespace": namespace, "key": k, "value": v, "updated_at": now}
                             for k, v in values.items()])

    # ---- helpers -------------------------------------------------------------

    @contextmanager
    def _maybe(self, conn: Connection | None) -> Iterator[Connection]:
        if conn is not None:
            yield conn
        else:
            with self.tx(immediate=True) as c:
                yield c

    @staticmethod
    def _row(row) -> Delivery | None:
        if row is None:
            return None
        d = dict(row)
        if isinstance(d.get("payload"), str):
            d["payload"] = jsonio.loads(d["payload"])
        return Delivery.from_row(d)


_STORES: dict[str, Store] = {}


def open_store(url: str) -> Store:
    """One Store (engine and pool) per URL per process."""
    if url not in _STORES:
        _STORES[url] = Store(url)
    return _STORES[url]
