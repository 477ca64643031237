"""The Web Connector conversation, without SOAP: sessions, requests, responses.

QuickBooks Desktop pulls: the Web Connector (QBWC) authenticates, asks for
qbXML (``send_request``), runs it against the open company file and posts the
response back (``receive_response``) until we report 100 percent done. Each
session claims due deliveries under its ticket; the requestID -> delivery
mapping lives in the store (``qbwc_requests``), so a restart or a broken-off
session loses nothing, and a transaction whose fate is unknown is queried
before it is added again.

Hardening (issue #14):

* a transaction naming a customer whose delivery is still outstanding waits for
  it: it is kept out of the message that adds the customer, and put back until
  the customer's next attempt when the customer got a busy answer;
* an hresult for a whole message (QuickBooks could not parse it) is narrowed
  down by bisection, so one bad request does not fail the others;
* 3170 ("in use by another user") retries at the next poll like 3175;
* requests QuickBooks did not answer are logged, reported through the
  percentage (negative) and getLastError, and retried (queried first);
* logins are throttled (a delay on every refusal, a lockout per address and per
  user name after repeated failures), every configured secret is resolved and
  compared in constant time whatever the user name, and tickets expire;
* everything logged from a caller is stripped of control characters.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets as pysecrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from connectors.base import ErrorKind, Outcome, TargetError

from . import qbxml
from .actions import OBJECTS

log = logging.getLogger("ledgerflow.qbwc")

TYPE = "quickbooks_desktop"
MAX_ROUND_TRIPS = 10_000
# busy answers: the record or list is held by someone else; try again at the next poll (3170: "in use by
# another user" is not in qbxml.BUSY_CODES)
RETRY_CODES = frozenset(qbxml.BUSY_CODES | {3170})
PARSE_ERROR = 0x80040400          # QBXMLRP2: "QuickBooks found an error when parsing the provided XML text stream"
SESSION_ERRORS = range(0x80040401, 0x80040500)   # QBXMLRP2 session/company-file errors: QuickBooks is not reachable
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def clean(text: Any, limit: int = 300) -> str:
    """``text`` fit for a log line: control characters (newlines included) become spaces, at most ``limit``."""
    t = _CONTROL.sub(" ", str(text if text is not None else "")).strip()
    return t if len(t) <= limit else t[:limit] + "..."


def hresult_code(hresult: str | None) -> int | None:
    """An HRESULT as an unsigned 32-bit number: '0x80040400', '80040400' or '-2147220480'."""
    t = (hresult or "").strip().lower()
    try:
        if t.startswith("0x"):
            return int(t, 16) & 0xFFFFFFFF
        if t.lstrip("-").isdigit():
            return int(t) & 0xFFFFFFFF
        if t and all(c in "0123456789abcdef" for c in t) and len(t) == 8:
            return int(t, 16)
    except ValueError:
        return None
    return None


@dataclass(frozen=True)
class ServiceSettings:
    """``serve.qbwc``: login throttling, session lifetime and the request size limit."""

    login_max_failures: int = 5            # per address; per user name it is four times this
    login_lockout: float = 300.0           # seconds; doubles with each further lockout, up to an hour
    login_failure_delay: float = 1.0       # seconds a refused login waits before it is answered (service)
    session_idle_timeout: float = 1800.0
    session_max_age: float = 8 * 3600.0
    max_body_bytes: int = 50 * 1024 * 1024

    @classmethod
    def from_config(cls, raw: Mapping[str, Any] | None) -> "ServiceSettings":
        raw = raw or {}
        kw = {}
        for name, default in cls.__dataclass_fields__.items():
            if name in raw and raw[name] is not None:
                kw[name] = type(default.default)(raw[name])
        return cls(**kw)


class LoginGuard:
    """Failed logins per address and per user name; a lockout refuses even the right password.

    Memory is bounded (the least recently seen keys are forgotten first)."""

    MAX_KEYS = 10_000
    MAX_LOCKOUT = 3600.0

    def __init__(self, max_failures: int = 5, lockout: float = 300.0):
        self.max_failures = max_failures
        self.lockout = lockout
        self._fails: OrderedDict[tuple, list[float]] = OrderedDict()
        self._locked: OrderedDict[tuple, tuple[float, int]] = OrderedDict()    # key -> (until, lockouts so far)

    @staticmethod
    def keys(client: str | None, username: str) -> list[tuple]:
        user = hashlib.sha256(username.strip().lower().encode("utf-8", "replace")).hexdigest()[:32]
        return [("addr", client or "?"), ("user", user)]

    def _limit(self, key: tuple) -> int:
        return self.max_failures * (4 if key[0] == "user" else 1)

    def locked_until(self, keys: Iterable[tuple], now: float) -> float | None:
        until = [self._locked[k][0] for k in keys if k in self._locked and self._locked[k][0] > now]
        return max(until) if until else None

    def failed(self, keys: Iterable[tuple], now: float) -> float | None:
        """Count a failure; the lockout end when this failure starts one."""
        started = None
        for k in keys:
            times = [t for t in self._fails.pop(k, []) if t > now - self.lockout] + [now]
            if len(times) >= self._limit(k):
                n = self._locked.pop(k, (0.0, 0))[1] + 1
                until = now + min(self.MAX_LOCKOUT, self.lockout * 2 ** (n - 1))
                self._locked[k] = (until, n)
                started = max(started or 0.0, until)
                times = []
            self._fails[k] = times
        for d in (self._fails, self._locked):
            while len(d) > self.MAX_KEYS:
                d.popitem(last=False)
        return started

    def succeeded(self, keys: Iterable[tuple]) -> None:
        for k in keys:
            self._fails.pop(k, None)


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
    """What each Web Connector SOAP operation does, against the runner's queue (``Runtime.qbwc``:
    sessions and requests, claims and reads of deliveries, outcomes recorded). A delivery is read
    as the runner's ``Delivery`` (attributes and ``row["..."]``)."""

    def __init__(self, queue, connections: list[QbdConnection], secrets, *,
                 clock: Callable[[], float] = time.time, settings: ServiceSettings | None = None):
        if not hasattr(queue, "record_outcomes"):
            raise TypeError(f"expected the runtime's Web Connector queue (Runtime.qbwc), got {type(queue).__name__}")
        self.qb = queue
        self.connections = {c.name: c for c in connections}
        self.secrets = secrets
        self.clock = clock
        self.settings = settings or ServiceSettings()
        self.guard = LoginGuard(self.settings.login_max_failures, self.settings.login_lockout)
        self._errors: dict[str, str] = {}      # last error of tickets that have no session row (bounded)
        self._isolate: dict[str, list[list[int]]] = {}   # ticket -> groups of deliveries to send apart (bisection)
        self.counters = {"logins": 0, "logins_refused": 0, "logins_locked": 0, "lockouts": 0}

    # ---- authenticate ---------------------------------------------------------


    def _remember_error(self, ticket: str | None, message: str, keep: int = 256) -> None:
        """Anyone can call with made-up tickets: keep only the most recent ones."""
        self._errors.pop(ticket or "", None)
        self._errors[ticket or ""] = message
        while len(self._errors) > keep:
            self._errors.pop(next(iter(self._errors)))
    def authenticate(self, username: str | None, password: str | None, client: str | None = None) -> list[str]:
        """[ticket, ""|company file] when there is work, [ticket, "none"] when not, ["", "nvu"] on a bad login
        (or while the address or user name is locked out)."""
        username, password = username or "", password or ""
        keys = self.guard.keys(client, username)
        now = self.clock()
        until = self.guard.locked_until(keys, now)
        if until is not None:
            self.counters["logins_locked"] += 1
            log.warning("Web Connector login from %s refused: locked out for another %ds after repeated failures",
                        clean(client, 64), int(until - now) + 1)
            return ["", "nvu"]
        conn = self._login(username, password)
        if conn is None:
            self.counters["logins_refused"] += 1
            started = self.guard.failed(keys, now)
            if started is not None:
                self.counters["lockouts"] += 1
                log.warning("Web Connector logins from %s (or for that user name) locked out for %ds after "
                            "repeated failures", clean(client, 64), int(started - now))
            return ["", "nvu"]
        self.guard.succeeded(keys)
        self.counters["logins"] += 1
        self._abandon_open_sessions(conn, now)
        now = self.clock()              # the held deliveries went back as due at a reading no later than this
        ticket = pysecrets.token_urlsafe(24)
        work = self._due_count(conn, now) > 0
        self.qb.open_session(ticket, conn.name, has_work=work, now=now)
        return [ticket, conn.company_file if work else "none"]

    def _login(self, username: str, password: str) -> QbdConnection | None:
        """The connection these credentials open. Every connection's secret is resolved and compared, in
        constant time and over digests of equal length, whatever the user name: no early exit to time."""
        user_d = hashlib.sha256(username.encode("utf-8", "surrogatepass")).digest()
        pass_d = hashlib.sha256(password.encode("utf-8", "surrogatepass")).digest()
        found, user_known, missing = None, None, None
        for conn in self.connections.values() or [None]:
            expected, resolved = "\x00 no secret", False
            if conn is not None:
                try:
                    expected, resolved = self.secrets.resolve(conn.password, f"connections.{conn.name}.password"), True
                except Exception as exc:  # noqa: BLE001 - a missing secret is a failed login, and is logged
                    missing = (conn, exc)
            user_ok = conn is not None and hmac.compare_digest(
                hashlib.sha256(conn.username.encode("utf-8", "surrogatepass")).digest(), user_d)
            pass_ok = hmac.compare_digest(hashlib.sha256(expected.encode("utf-8", "surrogatepass")).digest(), pass_d)
            if user_ok:
                user_known = conn
                if pass_ok and resolved:
                    found = conn
        if found is not None:
            return found
        if user_known is not None and missing is not None and missing[0] is user_known:
            log.error("Web Connector login for connection %s refused: %s", user_known.name, clean(missing[1]))
        elif user_known is not None:
            log.warning("Web Connector login for connection %s refused: wrong password", user_known.name)
        else:
            log.warning("Web Connector login refused: unknown user name")
        return None

    # ---- sendRequestXML -------------------------------------------------------------

    def send_request(self, ticket: str | None, hcp_response: str | None = None, company_file: str | None = None,
                     country: str | None = None, major: int | None = None, minor: int | None = None) -> str:
        """The next qbXML message for this session ("" for an unknown ticket: QBWC then asks getLastError)."""
        session = self._open_session(ticket)
        if session is None:
            return ""
        conn = self.connections[session["connection"]]
        now = self.clock()
        version = session["qbxml_version"]
        if version is None:
            version = qbxml.choose_version(conn.qbxml_version, hcp_response, major, minor)
            self._update_session(ticket, qbxml_version=version, company_file=company_file or None)
        rows = self._next_requests(conn, ticket, now)
        if not rows:
            text = ("ledgerflow: nothing can be sent in this session now (what is left waits for the customers "
                    "it names); the rest follows at the next poll")
            self._update_session(ticket, last_error=text)
            self._end(ticket, "closed", text)
            return ""
        by_id = {d.id: d for d in self._deliveries([r["delivery_id"] for r in rows])}
        requests, sent_ids, dead = [], [], []
        for r in rows:
            d = by_id[r["delivery_id"]]
            rid = str(r["id"])
            try:
                if r["phase"] == "add":
                    requests.append(qbxml.add_request(d.action, d.payload, rid, d.idempotency_key))
                else:
                    requests.append(qbxml.query_request(d.action, d.payload, rid))
                sent_ids.append(r["id"])
            except TargetError as exc:
                dead.append((r, d, exc))
            except (KeyError, TypeError, ValueError) as exc:
                dead.append((r, d, TargetError(f"payload cannot be written as qbXML: {exc}", ErrorKind.PERMANENT)))
        self.qb.mark_sent(ticket, sent_ids, now)
        if dead:
            self._record(ticket, [(r, d, Outcome.failed(self._item(d), e), None) for r, d, e in dead], now)
        return qbxml.message(requests, version)

    def _next_requests(self, conn: QbdConnection, ticket: str, now: float) -> list[dict]:
        """The next message's requests: this session's queued follow-ups, topped up with newly claimed
        deliveries, without transactions whose customer is still outstanding (they wait for it)."""
        for _ in range(3):
            queued = self._rows(ticket, "queued")
            room = conn.requests_per_message - len(queued)
            if room > 0 and not self._isolate.get(ticket):
                claimed = self.qb.claim(ticket, limit=room, lease=conn.lease_seconds, connections=[conn.name],
                                           connector_types=[TYPE], now=now)
                if claimed:
                    self._queue(ticket, claimed, now)
                    queued = self._rows(ticket, "queued")
            by_id = {d.id: d for d in self._deliveries([r["delivery_id"] for r in queued])}
            sendable = self._wait_for_customers(conn, ticket, queued, by_id, now)
            groups = self._isolate.get(ticket)
            while groups:                       # bisecting a message QuickBooks could not process
                group = set(groups.pop(0))
                part = [r for r in sendable if r["delivery_id"] in group]
                if part:
                    sendable = part
                    break
            if not groups:
                self._isolate.pop(ticket, None)
            # customers first: a transaction never travels with the customer it names (see above)
            sendable.sort(key=lambda r: (by_id[r["delivery_id"]]["action"] != "customer", r["id"]))
            if sendable:
                return sendable[:conn.requests_per_message]
            if not self._due_count(conn, now):
                return []
        return []

    def _queue(self, ticket: str, claimed: list[dict], now: float) -> None:
        unsure = self.qb.unanswered_adds([d.id for d in claimed])
        self.qb.queue(ticket, [(d.id, "query" if d.action != "customer" and (d.attempts > 0 or d.id in unsure)
                                else "add") for d in claimed], now)

    @staticmethod
    def _names(payload: Any) -> set[str]:
        """Customer names a transaction payload refers to (CustomerRef / EntityRef by FullName)."""
        out: set[str] = set()
        stack = [payload]
        while stack:
            v = stack.pop()
            if isinstance(v, Mapping):
                for k, sub in v.items():
                    if k in ("CustomerRef", "EntityRef") and isinstance(sub, Mapping) and sub.get("FullName"):
                        out.add(str(sub["FullName"]))
                    elif isinstance(sub, (Mapping, list)):
                        stack.append(sub)
            elif isinstance(v, list):
                stack.extend(v)
        return out

    def _wait_for_customers(self, conn: QbdConnection, ticket: str, queued: list[dict], by_id: dict[int, dict],
                            now: float) -> list[dict]:
        """Queued rows that may go now. A transaction naming a customer whose delivery is outstanding waits:
        while that delivery is in this session it stays queued for a later message; when it is due it is
        claimed into this session; otherwise the transaction goes back until the customer's next attempt."""
        wanted = {r["id"]: self._names(by_id[r["delivery_id"]]["payload"]) for r in queued
                  if by_id[r["delivery_id"]]["action"] != "customer"}
        if not any(wanted.values()):
            return list(queued)
        outstanding: dict[str, list[dict]] = {}
        for d in self.qb.find_deliveries(connections=[conn.name], connector_type=TYPE, action="customer",
                                            state=("pending", "retrying", "sending")):
            name = d.payload.get("Name") if isinstance(d.payload, Mapping) else None
            if name is not None:
                outstanding.setdefault(str(name), []).append(d)
        sendable, hold, claim = [], {}, set()
        for r in queued:
            blockers = [c for n in wanted.get(r["id"], ()) for c in outstanding.get(n, [])]
            if not blockers:
                sendable.append(r)
                continue
            mine = [c for c in blockers if c.state == "sending" and c.claimed_by == ticket]
            due = [c for c in blockers if (c.state in ("pending", "retrying") and c.next_attempt_at <= now)
                   or (c.state == "sending" and (c.lease_until or 0) < now)]
            if mine or due:
                claim.update(c.id for c in due)       # the customer comes first, in this session
                continue                                 # stays queued for a later message
            until = max([c.next_attempt_at for c in blockers if c.state != "sending"]
                        + [c.lease_until or now for c in blockers if c.state == "sending"] + [now])
            hold[r["id"]] = (r, until, blockers[0]["id"])
        if claim:
            got = self.qb.claim(ticket, limit=len(claim), lease=conn.lease_seconds, ids=sorted(claim), now=now)
            if got:
                self._queue(ticket, got, now)
        if hold:
            self.qb.set_state(list(hold), "released", now)
            self.qb.finish([{"id": r["delivery_id"], "state": "retrying", "kind": ErrorKind.RETRYABLE.value,
                                "error": f"waiting for the customer it names (delivery {cid}) to be in QuickBooks",
                                "next_attempt_at": until, "counted": False}
                               for r, until, cid in hold.values()], worker=ticket)
        return sendable

    # ---- receiveResponseXML -----------------------------------------------------------

    def receive_response(self, ticket: str | None, response: str | None, hresult: str | None = None,
                         message: str | None = None) -> int:
        """Record QuickBooks' answers; percent done (100 ends the session), negative on an error."""
        session = self._open_session(ticket)
        if session is None:
            return -1
        conn = self.connections[session["connection"]]
        now = self.clock()
        sent = self._rows(ticket, "sent")
        by_delivery = {d.id: d for d in self._deliveries([r["delivery_id"] for r in sent])}
        problem = None
        responses: list[qbxml.Response] = []
        if (hresult or "").strip() or not (response or "").strip():
            problem = f"QuickBooks could not process the request ({clean(hresult, 40) or 'no hresult'}): " \
                      f"{clean(message) or 'no response'}"
            code = hresult_code(hresult)
            if sent and (hresult or "").strip() and code not in SESSION_ERRORS:
                return self._narrow_down(conn, ticket, sent, by_delivery, code, problem, now)
        else:
            try:
                responses = qbxml.parse_response(response or "")
            except ValueError as exc:
                problem = str(exc)
        if problem:
            err = TargetError(problem, ErrorKind.RETRYABLE, retry_after=conn.poll_minutes * 60)
            self._record(ticket, [(r, by_delivery[r["delivery_id"]],
                                   Outcome.failed(self._item(by_delivery[r["delivery_id"]]), err), None)
                                  for r in sent], now)
            self._update_session(ticket, last_error=problem)
            return -101

        rows_by_rid = {r["request_id"]: r for r in sent}
        results, followups = [], []
        for resp in responses:
            r = rows_by_rid.pop(resp.request_id, None)
            if r is None:
                log.warning("qbXML response for unknown requestID %r ignored", clean(resp.request_id, 40))
                continue
            d = by_delivery[r["delivery_id"]]
            outcome, next_phase = self._interpret(r, d, resp, conn)
            if next_phase:
                followups.append((r, next_phase, resp.code))
            else:
                results.append((r, d, outcome, resp.code))
        missing = list(rows_by_rid.values())
        if missing:            # no answer: retried at the next poll, queried before any re-add ("sent" adds)
            note = (f"QuickBooks returned no answer for {len(missing)} of {len(sent)} request(s) "
                    f"(requestID {', '.join(r['request_id'] for r in missing[:10])}"
                    f"{', ...' if len(missing) > 10 else ''}); they are retried at the next poll")
            err = TargetError(note, ErrorKind.RETRYABLE, retry_after=conn.poll_minutes * 60)
            results += [(r, by_delivery[r["delivery_id"]], Outcome.failed(self._item(by_delivery[r["delivery_id"]]),
                                                                        err), None) for r in missing]
        self._record(ticket, results, now)
        if missing:
            self.qb.set_state([r["id"] for r in missing], "unanswered", now)   # the next attempt queries first
            log.warning("Web Connector: %s", note)
            self._update_session(ticket, last_error=note)
        if followups:
            self.qb.queue(ticket, [(r["delivery_id"], phase) for r, phase, _ in followups], now,
                          answered=[(r["id"], code) for r, _, code in followups])
        if missing:
            return -102        # the Web Connector shows getLastError: the operator learns of it
        self._settle(conn, ticket, now)
        return self._percent(conn, ticket, now)

    def _settle(self, conn: QbdConnection, ticket: str, now: float) -> None:
        """Put back, before the percentage is computed, queued transactions that must wait for a customer."""
        queued = self._rows(ticket, "queued")
        if queued:
            by_id = {d.id: d for d in self._deliveries([r["delivery_id"] for r in queued])}
            self._wait_for_customers(conn, ticket, queued, by_id, now)

    def _narrow_down(self, conn: QbdConnection, ticket: str, sent: list[dict], by_delivery: dict[int, dict],
                     code: int | None, problem: str, now: float) -> int:
        """QuickBooks refused a whole message: bisect it, so the request at fault is found and the others go.
        A parse error means nothing of it ran (the requests go again as they were); after any other hresult a
        transaction add is queried first."""
        if len(sent) == 1:
            r = sent[0]
            d = by_delivery[r["delivery_id"]]
            kind = ErrorKind.PERMANENT if code == PARSE_ERROR else ErrorKind.RETRYABLE
            err = TargetError(problem, kind, retry_after=conn.poll_minutes * 60)
            self._record(ticket, [(r, d, Outcome.failed(self._item(d), err), None)], now)
            log.warning("Web Connector: delivery %s: %s", d.id, problem)
            return self._percent(conn, ticket, now)
        half = (len(sent) + 1) // 2
        order = sorted(sent, key=lambda r: (by_delivery[r["delivery_id"]]["action"] != "customer", r["id"]))
        groups = [[r["delivery_id"] for r in order[:half]], [r["delivery_id"] for r in order[half:]]]
        self._isolate[ticket] = groups + self._isolate.get(ticket, [])
        again = [(r["delivery_id"], "query" if code != PARSE_ERROR and r["phase"] == "add"
                  and by_delivery[r["delivery_id"]].action != "customer" else r["phase"]) for r in sent]
        self.qb.queue(ticket, again, now, answered=[(r["id"], None) for r in sent])
        log.warning("Web Connector: %s; sending its %d requests in smaller messages to find the one at fault",
                    problem, len(sent))
        return self._percent(conn, ticket, now)

    def _interpret(self, row: dict, d: Any, resp: qbxml.Response,
                   conn: QbdConnection) -> tuple[Outcome | None, str | None]:
        """(outcome, None) when the delivery is decided, (None, next phase) when another request follows."""
        item = self._item(d)
        phase = row["phase"]
        if phase == "add":
            if resp.ok:
                return Outcome.sent(item, resp.ref(), status_code=resp.code), None
            if d.action == "customer" and resp.code == qbxml.NAME_IN_USE:
                return None, "lookup"
        elif phase == "query":
            if resp.ok or resp.code == qbxml.NO_MATCH:
                tag = qbxml.delivery_tag(d.idempotency_key)
                for ret in resp.rets:
                    if tag in (ret.get("Memo") or "") and ret.get("TxnID"):
                        return Outcome.sent(item, ret["TxnID"], found_existing=True), None
                return None, "add"
        elif phase == "lookup":
            if resp.ok and resp.ref():
                return Outcome.sent(item, resp.ref(), found_existing=True), None
            if resp.code == qbxml.NO_MATCH:
                return Outcome.failed(item, TargetError(
                    f"QuickBooks 3100: the name {d.payload.get('Name')!r} is already used by a vendor, "
                    "employee or other name, not a customer; rename one of them", ErrorKind.PERMANENT)), None
        err = qbxml.classify(resp)
        if resp.code in RETRY_CODES:
            err = TargetError(str(err), ErrorKind.RETRYABLE)
            err.retry_after = conn.poll_minutes * 60      # busy or in use: try again at the next poll
        return Outcome.failed(item, err), None

    def _record(self, ticket: str, results: list[tuple[dict, dict, Outcome, int | None]], now: float) -> None:
        if not results:
            return
        decisions = self.qb.record_outcomes([(d, o) for _, d, o, _ in results], now, worker=ticket)
        self.qb.record(ticket, [(r["id"], code) for r, _, _, code in results], now)
        for dec in decisions:
            if dec["state"] == "dead":
                log.warning("dead-letter: delivery %s (quickbooks_desktop): %s", dec["id"], clean(dec.get("error")))

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
        text = f"QuickBooks connection error {clean(hresult, 40)}: {clean(message)}".strip()
        if self._session(ticket) is not None:
            self._update_session(ticket, last_error=text)
            self._end(ticket, "closed", text)
        log.warning("Web Connector: %s", text)
        return "done"

    def get_last_error(self, ticket: str | None) -> str:
        session = self._session(ticket)
        if session is not None and session["state"] == "open":
            session = self._open_session(ticket) or self._session(ticket)
        if session is None:
            return self._errors.get(ticket or "", "ledgerflow: unknown Web Connector session")
        return session["last_error"] or ""

    def close(self, ticket: str | None) -> str:
        session = self._session(ticket)
        if session is None:
            return "OK"
        self._end(ticket, "closed", "the Web Connector closed the session before QuickBooks answered")
        s = self._session(ticket)
        unanswered = self._unanswered_in(ticket)
        text = f"OK: {s['done']} deliveries recorded in {s['round_trips']} round trips"
        if unanswered:
            text += (f"; QuickBooks did not answer {unanswered} request(s): they are queried and retried at the "
                     "next poll")
        return text

    # ---- sessions -------------------------------------------------------------------------

    def _abandon_open_sessions(self, conn: QbdConnection, now: float) -> None:
        """A new login ends the connection's earlier sessions (QBWC runs one at a time per application)."""
        for t in self.qb.open_tickets(conn.name):
            self._end(t, "abandoned", "the Web Connector session was broken off; QuickBooks may not have answered",
                      now)

    def _open_session(self, ticket: str | None) -> dict | None:
        """The session when it is open and not expired; else None (and getLastError says why)."""
        session = self._session(ticket)
        if session is None or session["state"] != "open":
            self._remember_error(ticket, "ledgerflow: unknown or finished Web Connector session; reconnect")
            return None
        now = self.clock()
        idle, age = now - (session["updated_at"] or 0), now - (session["created_at"] or 0)
        if idle > self.settings.session_idle_timeout or age > self.settings.session_max_age:
            text = ("ledgerflow: the Web Connector session expired (idle "
                    f"{int(idle)}s, {int(age)}s since login); reconnect")
            self._update_session(ticket, last_error=text)
            self._end(ticket, "expired", text)
            return None
        return session

    def _unanswered_in(self, ticket: str) -> int:
        return self.qb.unanswered_in(ticket, "QuickBooks returned no answer")

    def _end(self, ticket: str, state: str, why: str, now: float | None = None) -> None:
        """Close a session: queued requests are dropped, its claimed deliveries go back for the next poll.
        Requests sent but never answered stay "sent", so their deliveries are queried before a re-add."""
        self._isolate.pop(ticket, None)
        now = self.clock() if now is None else now
        held = self.qb.end_session(ticket, state, now)
        if held:
            self.qb.finish([{"id": i, "state": "retrying", "error": why, "kind": ErrorKind.RETRYABLE.value,
                                "next_attempt_at": now, "counted": False} for i in held], worker=ticket)

    def _session(self, ticket: str | None) -> dict | None:
        return self.qb.session(ticket)

    def _update_session(self, ticket: str, **values: Any) -> None:
        self.qb.update_session(ticket, **values, updated_at=self.clock())

    def _rows(self, ticket: str, state: str) -> list[dict]:
        return self.qb.requests(ticket, state)

    def _deliveries(self, ids: list[int]) -> list[Any]:
        return self.qb.find_deliveries(ids=ids) if ids else []

    def _due_count(self, conn: QbdConnection, now: float) -> int:
        return self.qb.due_count(conn.name, TYPE, now)

    @staticmethod
    def _item(d: Any):
        from connectors.base import Item
        return Item(d.id, d.idempotency_key, d.action, d.payload, d.attempts, d.target_ref)


__all__ = ["WebConnectorBackend", "QbdConnection", "connections_of", "OBJECTS"]
