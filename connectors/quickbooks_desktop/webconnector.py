"""The Web Connector conversation, without SOAP: sessions, requests, responses.

QuickBooks Desktop pulls: the Web Connector (QBWC) authenticates, asks for
qbXML (``send_request``), runs it against the open company file and posts the
response back (``receive_response``) until we report 100 percent done. Each
session claims due deliveries under its ticket; the requestID -> delivery
mapping lives in the store (``qbwc_requests``), so a restart or a broken-off
session loses nothing, and a transaction whose fate is unknown is queried
before it is added again.
"""

from __future__ import annotations

import hmac
import logging
import secrets as pysecrets
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from sqlalchemy import String, and_, cast, func, or_, select, update

from connectors.base import ErrorKind, Outcome, TargetError
from runner.delivery import decide
from runner.store.tables import deliveries, qbwc_requests, qbwc_sessions

from . import qbxml
from .actions import OBJECTS

log = logging.getLogger("ledgerflow.qbwc")

TYPE = "quickbooks_desktop"
MAX_ROUND_TRIPS = 10_000


@dataclass(frozen=True)
class QbdConnection:
    """One ``quickbooks_desktop`` connection: a company file behind one Web Connector user."""

    name: str
    username: str
    password: Any                 # a secret reference: {env: NAME} or {prefect_secret: block}
    company_file: str = ""        # "" = whatever company file is open
    qbxml_version: str = qbxml.DEFAULT_VERSION
    requests_per_message: int = 50
    poll_minutes: int = 5
    lease_seconds: float = 900.0

    @classmethod
    def from_config(cls, name: str, cfg: Mapping[str, Any]) -> "QbdConnection":
        if not cfg.get("username"):
            raise ValueError(f"connections.{name}.username: expected the Web Connector user name")
        return cls(name=name, username=str(cfg["username"]), password=cfg.get("password"),
                   company_file=str(cfg.get("company_file") or ""),
                   qbxml_version=str(cfg.get("qbxml_version") or qbxml.DEFAULT_VERSION),
                   requests_per_message=int(cfg.get("requests_per_message") or 50),
                   poll_minutes=int(cfg.get("poll_minutes") or 5),
                   lease_seconds=float(cfg.get("lease_seconds") or 900))


def connections_of(project_connections: Mapping[str, Mapping[str, Any]]) -> list[QbdConnection]:
    return [QbdConnection.from_config(n, c) for n, c in project_connections.items() if c.get("type") == TYPE]


class WebConnectorBackend:
    """What each Web Connector SOAP operation does, against the store."""

    def __init__(self, store, connections: list[QbdConnection], secrets, *,
                 clock: Callable[[], float] = time.time):
        self.store = store
        self.connections = {c.name: c for c in connections}
        self.secrets = secrets
        self.clock = clock
        self._errors: dict[str, str] = {}      # last error of tickets that have no session row (bounded)

    # ---- authenticate ---------------------------------------------------------


    def _remember_error(self, ticket: str | None, message: str, keep: int = 256) -> None:
        """Anyone can call with made-up tickets: keep only the most recent ones."""
        self._errors.pop(ticket or "", None)
        self._errors[ticket or ""] = message
        while len(self._errors) > keep:
            self._errors.pop(next(iter(self._errors)))
    def authenticate(self, username: str | None, password: str | None) -> list[str]:
        """[ticket, ""|company file] when there is work, [ticket, "none"] when not, ["", "nvu"] on a bad login."""
        conn = self._login(username or "", password or "")
        if conn is None:
            return ["", "nvu"]
        now = self.clock()
        self._abandon_open_sessions(conn, now)
        ticket = pysecrets.token_urlsafe(24)
        work = self._due_count(conn, now) > 0
        with self.store.tx(immediate=True) as c:
            c.execute(qbwc_sessions.insert().values(
                ticket=ticket, connection=conn.name, state="open" if work else "closed", round_trips=0, done=0,
                created_at=now, updated_at=now))
        return [ticket, conn.company_file if work else "none"]

    def _login(self, username: str, password: str) -> QbdConnection | None:
        found = None
        for conn in self.connections.values():    # compare against every user: no early exit to time
            if hmac.compare_digest(conn.username.encode(), username.encode()):
                found = conn
        if found is None:
            return None
        try:
            expected = self.secrets.resolve(found.password, f"connections.{found.name}.password")
        except Exception as exc:  # noqa: BLE001 - a missing secret is a failed login, and is logged
            log.error("Web Connector login for connection %s refused: %s", found.name, exc)
            return None
        if not hmac.compare_digest(expected.encode(), password.encode()):
            log.warning("Web Connector login for connection %s refused: wrong password", found.name)
            return None
        return found

    # ---- sendRequestXML -------------------------------------------------------------

    def send_request(self, ticket: str | None, hcp_response: str | None = None, company_file: str | None = None,
                     country: str | None = None, major: int | None = None, minor: int | None = None) -> str:
        """The next qbXML message for this session ("" for an unknown ticket: QBWC then asks getLastError)."""
        session = self._session(ticket)
        if session is None or session["state"] != "open":
            self._remember_error(ticket, "ledgerflow: unknown or finished Web Connector session; reconnect")
            return ""
        conn = self.connections[session["connection"]]
        now = self.clock()
        version = session["qbxml_version"]
        if version is None:
            version = qbxml.choose_version(conn.qbxml_version, hcp_response, major, minor)
            self._update_session(ticket, qbxml_version=version, company_file=company_file or None)
        rows = self._next_requests(conn, ticket, now)
        by_id = {d["id"]: d for d in self._deliveries([r["delivery_id"] for r in rows])}
        requests, sent_ids, dead = [], [], []
        for r in rows:
            d = by_id[r["delivery_id"]]
            rid = str(r["id"])
            try:
                if r["phase"] == "add":
                    requests.append(qbxml.add_request(d["action"], d["payload"], rid, d["idempotency_key"]))
                else:
                    requests.append(qbxml.query_request(d["action"], d["payload"], rid))
                sent_ids.append(r["id"])
            except TargetError as exc:
                dead.append((r, d, exc))
            except (KeyError, TypeError, ValueError) as exc:
                dead.append((r, d, TargetError(f"payload cannot be written as qbXML: {exc}", ErrorKind.PERMANENT)))
        with self.store.tx(immediate=True) as c:
            if sent_ids:
                c.execute(update(qbwc_requests).where(qbwc_requests.c.id.in_(sent_ids))
                          .values(state="sent", request_id=cast(qbwc_requests.c.id, String), updated_at=now))
            c.execute(update(qbwc_sessions).where(qbwc_sessions.c.ticket == ticket)
                      .values(round_trips=qbwc_sessions.c.round_trips + 1, updated_at=now))
        if dead:
            self._record(ticket, [(r, d, Outcome.failed(self._item(d), e), None) for r, d, e in dead], now)
        return qbxml.message(requests, version)

    def _next_requests(self, conn: QbdConnection, ticket: str, now: float) -> list[dict]:
        """This session's queued follow-ups, topped up with newly claimed deliveries."""
        queued = self._rows(ticket, "queued")
        room = conn.requests_per_message - len(queued)
        if room > 0:
            claimed = self.store.claim(ticket, limit=room, lease=conn.lease_seconds, connections=[conn.name],
                                       connector_types=[TYPE], now=now)
            if claimed:
                unsure = self._unanswered_adds([d["id"] for d in claimed])
                with self.store.tx(immediate=True) as c:
                    for d in claimed:
                        phase = "query" if d["action"] != "customer" and (d["attempts"] > 0 or d["id"] in unsure) \
                            else "add"
                        c.execute(qbwc_requests.insert().values(
                            ticket=ticket, delivery_id=d["id"], phase=phase, state="queued",
                            created_at=now, updated_at=now))
                queued = self._rows(ticket, "queued")
        actions = {d["id"]: d["action"] for d in self._deliveries([r["delivery_id"] for r in queued])}
        # customers first: a sales receipt in the same message may name the customer being added
        queued.sort(key=lambda r: (actions.get(r["delivery_id"]) != "customer", r["id"]))
        return queued[:conn.requests_per_message]

    # ---- receiveResponseXML -----------------------------------------------------------

    def receive_response(self, ticket: str | None, response: str | None, hresult: str | None = None,
                         message: str | None = None) -> int:
        """Record QuickBooks' answers; percent done (100 ends the session), negative on an error."""
        session = self._session(ticket)
        if session is None or session["state"] != "open":
            self._remember_error(ticket, "ledgerflow: unknown or finished Web Connector session; reconnect")
            return -1
        conn = self.connections[session["connection"]]
        now = self.clock()
        sent = self._rows(ticket, "sent")
        by_delivery = {d["id"]: d for d in self._deliveries([r["delivery_id"] for r in sent])}
        problem = None
        responses: list[qbxml.Response] = []
        if (hresult or "").strip() or not (response or "").strip():
            problem = f"QuickBooks could not process the request ({(hresult or '').strip() or 'no hresult'}): " \
                      f"{(message or '').strip() or 'no response'}"
        else:
            try:
                responses = qbxml.parse_response(response or "")
            except ValueError as exc:
                problem = str(exc)
        if problem:
            err = TargetError(problem, ErrorKind.RETRYABLE, retry_after=conn.poll_minutes * 60)
            self._record(ticket, [(r, by_delivery[r["delivery_id"]], Outcome.failed(self._item(by_delivery[r["delivery_id"]]), err), None)
                                  for r in sent], now)
            self._update_session(ticket, last_error=problem)
            return -101

        rows_by_rid = {r["request_id"]: r for r in sent}
        results, followups = [], []
        for resp in responses:
            r = rows_by_rid.pop(resp.request_id, None)
            if r is None:
                log.warning("qbXML response for unknown requestID %r ignored", resp.request_id)
                continue
            d = by_delivery[r["delivery_id"]]
            outcome, next_phase = self._interpret(r, d, resp, conn)
            if next_phase:
                followups.append((r, next_phase, resp.code))
            else:
                results.append((r, d, outcome, resp.code))
        self._record(ticket, results, now)
        if followups:
            with self.store.tx(immediate=True) as c:
                for r, phase, code in followups:
                    c.execute(update(qbwc_requests).where(qbwc_requests.c.id == r["id"])
                              .values(state="answered", status_code=code, updated_at=now))
                    c.execute(qbwc_requests.insert().values(ticket=ticket, delivery_id=r["delivery_id"], phase=phase,
                                                            state="queued", created_at=now, updated_at=now))
        # requests QuickBooks did not answer stay "sent": their deliveries are queried before any re-add
        return self._percent(conn, ticket, now)

    def _interpret(self, row: dict, d: dict, resp: qbxml.Response,
                   conn: QbdConnection) -> tuple[Outcome | None, str | None]:
        """(outcome, None) when the delivery is decided, (None, next phase) when another request follows."""
        item = self._item(d)
        phase = row["phase"]
        if phase == "add":
            if resp.ok:
                return Outcome.sent(item, resp.ref(), status_code=resp.code), None
            if d["action"] == "customer" and resp.code == qbxml.NAME_IN_USE:
                return None, "lookup"
        elif phase == "query":
            if resp.ok or resp.code == qbxml.NO_MATCH:
                tag = qbxml.delivery_tag(d["idempotency_key"])
                for ret in resp.rets:
                    if tag in (ret.get("Memo") or "") and ret.get("TxnID"):
                        return Outcome.sent(item, ret["TxnID"], found_existing=True), None
                return None, "add"
        elif phase == "lookup":
            if resp.ok and resp.ref():
                return Outcome.sent(item, resp.ref(), found_existing=True), None
            if resp.code == qbxml.NO_MATCH:
                return Outcome.failed(item, TargetError(
                    f"QuickBooks 3100: the name {d['payload'].get('Name')!r} is already used by a vendor, "
                    "employee or other name, not a customer; rename one of them", ErrorKind.PERMANENT)), None
        err = qbxml.classify(resp)
        if err.kind == ErrorKind.RETRYABLE:
            err.retry_after = conn.poll_minutes * 60      # busy or in use: try again at the next poll
        return Outcome.failed(item, err), None

    def _record(self, ticket: str, results: list[tuple[dict, dict, Outcome, int | None]], now: float) -> None:
        if not results:
            return
        decisions = [decide(d, o, now) for _, d, o, _ in results]
        self.store.finish(decisions, worker=ticket)
        with self.store.tx(immediate=True) as c:
            for r, _, _, code in results:
                c.execute(update(qbwc_requests).where(qbwc_requests.c.id == r["id"])
                          .values(state="answered", status_code=code, updated_at=now))
            c.execute(update(qbwc_sessions).where(qbwc_sessions.c.ticket == ticket)
                      .values(done=qbwc_sessions.c.done + len(results), updated_at=now))
        for dec in decisions:
            if dec["state"] == "dead":
                log.warning("dead-letter: delivery %s (quickbooks_desktop): %s", dec["id"], dec.get("error"))

    def _percent(self, conn: QbdConnection, ticket: str, now: float) -> int:
        session = self._session(ticket)
        queued = len(self._rows(ticket, "queued"))
        remaining = queued + self._due_count(conn, now)
        if remaining == 0 or session["round_trips"] >= MAX_ROUND_TRIPS:
            return 100
        done = session["done"]
        return max(0, min(99, int(100 * done / (done + remaining))))

    # ---- connectionError, getLastError, closeConnection --------------------------------

    def connection_error(self, ticket: str | None, hresult: str | None, message: str | None) -> str:
        """QBWC could not reach QuickBooks: remember why, give the work back, and stop ("done")."""
        text = f"QuickBooks connection error {(hresult or '').strip()}: {(message or '').strip()}".strip()
        if self._session(ticket) is not None:
            self._update_session(ticket, last_error=text)
            self._end(ticket, "closed", text)
        log.warning("Web Connector: %s", text)
        return "done"

    def get_last_error(self, ticket: str | None) -> str:
        session = self._session(ticket)
        if session is None:
            return self._errors.get(ticket or "", "ledgerflow: unknown Web Connector session")
        return session["last_error"] or ""

    def close(self, ticket: str | None) -> str:
        session = self._session(ticket)
        if session is None:
            return "OK"
        self._end(ticket, "closed", "the Web Connector closed the session before QuickBooks answered")
        s = self._session(ticket)
        return f"OK: {s['done']} deliveries recorded in {s['round_trips']} round trips"

    # ---- sessions -------------------------------------------------------------------------

    def _abandon_open_sessions(self, conn: QbdConnection, now: float) -> None:
        """A new login ends the connection's earlier sessions (QBWC runs one at a time per application)."""
        with self.store.engine.connect() as c:
            stale = [r[0] for r in c.execute(select(qbwc_sessions.c.ticket).where(and_(
                qbwc_sessions.c.connection == conn.name, qbwc_sessions.c.state == "open")))]
        for t in stale:
            self._end(t, "abandoned", "the Web Connector session was broken off; QuickBooks may not have answered")

    def _end(self, ticket: str, state: str, why: str) -> None:
        """Close a session: queued requests are dropped, its claimed deliveries go back for the next poll.
        Requests sent but never answered stay "sent", so their deliveries are queried before a re-add."""
        now = self.clock()
        with self.store.tx(immediate=True) as c:
            c.execute(update(qbwc_requests).where(and_(qbwc_requests.c.ticket == ticket,
                                                       qbwc_requests.c.state == "queued"))
                      .values(state="released", updated_at=now))
            c.execute(update(qbwc_sessions).where(qbwc_sessions.c.ticket == ticket)
                      .values(state=state, updated_at=now))
            held = [r[0] for r in c.execute(select(deliveries.c.id).where(and_(
                deliveries.c.claimed_by == ticket, deliveries.c.state == "sending")))]
        if held:
            self.store.finish([{"id": i, "state": "retrying", "error": why, "kind": ErrorKind.RETRYABLE.value,
                                "next_attempt_at": now, "counted": False} for i in held], worker=ticket)

    def _session(self, ticket: str | None) -> dict | None:
        if not ticket:
            return None
        with self.store.engine.connect() as c:
            row = c.execute(select(qbwc_sessions).where(qbwc_sessions.c.ticket == ticket)).mappings().first()
        return dict(row) if row else None

    def _update_session(self, ticket: str, **values: Any) -> None:
        values["updated_at"] = self.clock()
        with self.store.tx(immediate=True) as c:
            c.execute(update(qbwc_sessions).where(qbwc_sessions.c.ticket == ticket).values(**values))

    def _rows(self, ticket: str, state: str) -> list[dict]:
        with self.store.engine.connect() as c:
            rows = c.execute(select(qbwc_requests).where(and_(qbwc_requests.c.ticket == ticket,
                                                              qbwc_requests.c.state == state))
                             .order_by(qbwc_requests.c.id)).mappings().all()
        out = [dict(r) for r in rows]
        for r in out:
            r["request_id"] = str(r["request_id"]) if r["request_id"] is not None else None
        return out

    def _unanswered_adds(self, delivery_ids: list[int]) -> set[int]:
        """Deliveries with an add request that an earlier session sent and never heard back about."""
        with self.store.engine.connect() as c:
            return {r[0] for r in c.execute(select(qbwc_requests.c.delivery_id).where(and_(
                qbwc_requests.c.delivery_id.in_(delivery_ids), qbwc_requests.c.phase == "add",
                qbwc_requests.c.state == "sent")))}

    def _deliveries(self, ids: list[int]) -> list[dict]:
        return self.store.deliveries_where(deliveries.c.id.in_(ids)) if ids else []

    def _due_count(self, conn: QbdConnection, now: float) -> int:
        due = or_(and_(deliveries.c.state.in_(("pending", "retrying")), deliveries.c.next_attempt_at <= now),
                  and_(deliveries.c.state == "sending", deliveries.c.lease_until < now))
        q = select(func.count()).select_from(deliveries).where(and_(
            due, deliveries.c.connection == conn.name, deliveries.c.connector_type == TYPE))
        with self.store.engine.connect() as c:
            return c.execute(q).scalar_one()

    @staticmethod
    def _item(d: dict):
        from connectors.base import Item
        return Item(d["id"], d["idempotency_key"], d["action"], d["payload"], d["attempts"], d.get("target_ref"))


__all__ = ["WebConnectorBackend", "QbdConnection", "connections_of", "OBJECTS"]
