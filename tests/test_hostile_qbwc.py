"""The Web Connector endpoint (/qbwc) under hostile and odd input (issue #14), over real HTTP on loopback.

First one regression test per numbered item (each failed before the fix), then a bounded
property-based fuzz of the SOAP endpoint: envelopes, tickets, responses, hresults. Every request
must get a 2xx or a 4xx with a reason, nothing unauthenticated may be stored, the service must keep
answering a real session meanwhile, and log lines must carry no bodies, secrets or control characters.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import threading
import time
from xml.sax.saxutils import escape

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from connectors.quickbooks_desktop.webconnector import LoginGuard, ServiceSettings, clean
from runner.language.planner import Operation
from runner.operate.server.limits import Limits
from runner.store.tables import deliveries, qbwc_requests, qbwc_sessions
from tests.standins.web_connector import NS, SOAP_ENV, FakeQuickBooks, RawSoap, WebConnector
from tests.support.servers import free_port, serve_app
from tests.test_qbd_service import PASSWORD, XSD_PATH, Clock, app, backend_of, mounted, plan_backlog, rows  # noqa: F401

pytestmark = pytest.mark.skipif(not XSD_PATH.exists(), reason="Intuit's qbXML schema not found (shared/reference)")

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def quiet(app, clock=None, **overrides):
    """A backend without the refused-login delay (tests of lockout still count the failures)."""
    b = backend_of(app, clock=clock, **overrides)
    b.settings = ServiceSettings(login_failure_delay=0.0)
    return b


class BusyCustomers(FakeQuickBooks):
    """QuickBooks where the next N customer adds answer 3175 (the customer list is in use)."""

    def __init__(self, busy_customers: int = 1, code: int = 3175, **kw):
        super().__init__(**kw)
        self.busy_customers = busy_customers
        self.code = code

    def _customer_add(self, rq) -> str:
        if self.busy_customers > 0:
            self.busy_customers -= 1
            return self._rs(rq, self.code, "There was an error when saving a Customers list element. "
                                           "This record is being used by another user.")
        return super()._customer_add(rq)


class InUse(FakeQuickBooks):
    """The next N transaction adds answer 3170 (in use by another user)."""

    def __init__(self, n: int = 1, **kw):
        super().__init__(**kw)
        self.n = n

    def _txn_add(self, rq) -> str:
        if self.n > 0:
            self.n -= 1
            return self._rs(rq, 3170, "There was an error when modifying a SalesReceipt. QuickBooks error message: "
                                      "This list has been modified by another user.")
        return super()._txn_add(rq)


class DropsAnswers(FakeQuickBooks):
    """Leaves the answer to the n-th request of the next message out."""

    def __init__(self, drop_index: int = 1, **kw):
        super().__init__(**kw)
        self.drop_index = drop_index

    def process(self, request_xml: str) -> str:
        body = super().process(request_xml)
        if self.drop_index is None:
            return body
        root = etree.fromstring(body.encode())
        msgs = root.find("QBXMLMsgsRs")
        msgs.remove(msgs[self.drop_index])
        self.drop_index = None
        return '<?xml version="1.0" ?>' + etree.tostring(root, encoding="unicode")


def deposit_op(n: int, memo: str = "") -> Operation:
    return Operation(flow="qbd-payouts", route="deposit", connection="quickbooks_desktop",
                     connector_type="quickbooks_desktop", action="deposit", idempotency_key=f"k-dep-{n}",
                     payload={"TxnDate": "2024-01-02", "DepositToAccountRef": {"FullName": "Operating Bank"},
                              "Memo": memo or f"payout {n}",
                              "DepositLineAdd": [{"AccountRef": {"FullName": "Stripe Clearing"}, "Amount": 5 + n}]},
                     event_id=f"evt_dep_{n}")


def drive(soap: RawSoap, qb: FakeQuickBooks, *, poison: str | None = None, max_trips: int = 200) -> dict:
    """A Web Connector session where a message carrying ``poison`` gets QuickBooks' parse-error hresult."""
    out = {"trips": 0, "percents": [], "sizes": []}
    ticket, status = soap.call("authenticate", strUserName="ledgerflow", strPassword=PASSWORD)
    out["auth"] = status
    if status in ("nvu", "none"):
        return out
    for _ in range(max_trips):
        xml = soap.call("sendRequestXML", ticket=ticket, strHCPResponse="", strCompanyFileName="",
                        qbXMLCountry="US", qbXMLMajorVers=13, qbXMLMinorVers=0)
        if not xml:
            out["last_error"] = soap.call("getLastError", ticket=ticket)
            break
        out["trips"] += 1
        out["sizes"].append(len(etree.fromstring(xml.encode()).find("QBXMLMsgsRq")))
        if poison and poison in xml:
            pct = soap.call("receiveResponseXML", ticket=ticket, response="", hresult="0x80040400",
                            message="QuickBooks found an error when parsing the provided XML text stream.")
        else:
            pct = soap.call("receiveResponseXML", ticket=ticket, response=qb.process(xml), hresult="", message="")
        out["percents"].append(pct)
        if pct < 0:
            out["last_error"] = soap.call("getLastError", ticket=ticket)
            break
        if pct >= 100:
            break
    out["closed"] = soap.call("closeConnection", ticket=ticket)
    return out


# ---- 1. recovery after a broken-off session -----------------------------------------------------------

def test_after_a_broken_off_session_the_next_login_has_work(app):
    ids = plan_backlog(app, charges=3, refunds=0, payouts=0, customers=1)
    qb = FakeQuickBooks()
    with serve_app(mounted(quiet(app))) as srv:                 # the real clock: readings differ
        wc = WebConnector(RawSoap(srv.url + "/qbwc/"), qb)
        first = wc.run_session("ledgerflow", PASSWORD, break_after=1)
        assert first.broken_off
        second = wc.run_session("ledgerflow", PASSWORD)
    assert second.auth[1] == "", second.auth            # not "none": the held deliveries are due again
    assert second.percents[-1] == 100
    assert all(r["state"] == "sent" for r in rows(app, ids))
    assert len(qb.txns) == 3 and list(qb.customers) == ["cus_T0"]


# ---- 2. a transaction waits for the customer it names ----------------------------------------------------

def test_a_receipt_waits_for_its_busy_customer_instead_of_dead_lettering(app):
    ids = plan_backlog(app, charges=2, refunds=0, payouts=0, customers=1)
    qb = BusyCustomers(1)
    clock = Clock()
    with serve_app(mounted(quiet(app, clock=clock, poll_minutes=5))) as srv:
        wc = WebConnector(RawSoap(srv.url + "/qbwc/"), qb)
        first = wc.run_session("ledgerflow", PASSWORD)
        assert first.percents[-1] == 100
        by = {r["id"]: r for r in rows(app, ids)}
        receipts = [r for r in by.values() if r["action"] == "sales_receipt"]
        assert all(r["state"] == "retrying" and r["attempts"] == 0 for r in receipts), receipts
        assert all("waiting for the customer" in r["last_error"] for r in receipts)
        assert not any("SalesReceiptAddRq" in d for d in qb.documents)      # never sent beside a failed customer
        clock.now += 5 * 60 + 1
        second = wc.run_session("ledgerflow", PASSWORD)
    assert second.percents[-1] == 100
    assert [r["state"] for r in rows(app, ids)] == ["sent"] * len(ids)
    assert len(qb.txns) == 2
    assert not any("CustomerAddRq" in d and "SalesReceiptAddRq" in d for d in qb.documents)


# ---- 3. one request QuickBooks cannot parse does not fail the others -------------------------------------

def test_a_parse_error_hresult_is_narrowed_down_to_the_request_at_fault(app):
    ops = [deposit_op(i) for i in range(7)] + [deposit_op(7, memo="POISON payout")]
    ids = [did for did, _ in app.store.add_deliveries(ops)]
    qb = FakeQuickBooks()
    with serve_app(mounted(quiet(app))) as srv:
        log = drive(RawSoap(srv.url + "/qbwc/"), qb, poison="POISON")
    by = {r["idempotency_key"]: r for r in rows(app, ids)}
    assert by["k-dep-7"]["state"] == "dead" and "0x80040400" in by["k-dep-7"]["last_error"]
    assert all(by[f"k-dep-{i}"]["state"] == "sent" for i in range(7)), [(k, r["state"]) for k, r in by.items()]
    assert len(qb.txns) == 7
    assert log["trips"] <= 2 * 8 and log["sizes"][0] == 8 and min(log["sizes"]) == 1


# ---- 4. 3170 retries ----------------------------------------------------------------------------------------

def test_in_use_by_another_user_3170_is_retried_not_dead_lettered(app):
    ids = plan_backlog(app, charges=1, refunds=0, payouts=0, customers=1)
    clock = Clock()
    qb = InUse(1)
    with serve_app(mounted(quiet(app, clock=clock, poll_minutes=5))) as srv:
        wc = WebConnector(RawSoap(srv.url + "/qbwc/"), qb)
        wc.run_session("ledgerflow", PASSWORD)
        receipt = next(r for r in rows(app, ids) if r["action"] == "sales_receipt")
        assert receipt["state"] == "retrying" and "QuickBooks 3170" in receipt["last_error"]
        clock.now += 5 * 60 + 1
        wc.run_session("ledgerflow", PASSWORD)
    assert [r["state"] for r in rows(app, ids)] == ["sent", "sent"]
    assert len(qb.txns) == 1


# ---- 5. missing answers are reported and retried ---------------------------------------------------------

def test_requests_quickbooks_did_not_answer_are_reported_and_retried(app, caplog):
    caplog.set_level(logging.WARNING, logger="ledgerflow.qbwc")
    ops = [deposit_op(i) for i in range(3)]
    ids = [did for did, _ in app.store.add_deliveries(ops)]
    clock = Clock()
    qb = DropsAnswers(1)
    with serve_app(mounted(quiet(app, clock=clock, poll_minutes=5))) as srv:
        wc = WebConnector(RawSoap(srv.url + "/qbwc/"), qb)
        first = wc.run_session("ledgerflow", PASSWORD)
        assert first.percents[-1] < 0                                     # not 100 %
        assert "no answer for 1 of 3 request(s)" in first.last_error
        assert "did not answer 1 request(s)" in first.closed
        assert "no answer for 1 of 3" in caplog.text
        states = sorted(r["state"] for r in rows(app, ids))
        assert states == ["retrying", "sent", "sent"]
        clock.now += 5 * 60 + 1
        second = wc.run_session("ledgerflow", PASSWORD)
    assert second.percents[-1] == 100
    assert [r["state"] for r in rows(app, ids)] == ["sent"] * 3
    assert len(qb.txns) == 3                                   # the dropped one had been added: found, not re-added
    assert "DepositQueryRq" in "".join(qb.documents[1:])


# ---- 6. login throttling, lockout, constant-time checks, ticket expiry -------------------------------------

def test_repeated_wrong_passwords_lock_the_address_out_even_for_the_right_one(app):
    plan_backlog(app, charges=1, refunds=0, payouts=0)
    clock = Clock()
    backend = quiet(app, clock=clock)
    with serve_app(mounted(backend)) as srv:
        soap = RawSoap(srv.url + "/qbwc/")
        for i in range(5):
            assert soap.call("authenticate", strUserName="ledgerflow", strPassword=f"guess{i}") == ["", "nvu"]
        assert soap.call("authenticate", strUserName="ledgerflow", strPassword=PASSWORD) == ["", "nvu"]
        clock.now += 301
        ticket, status = soap.call("authenticate", strUserName="ledgerflow", strPassword=PASSWORD)
    assert ticket and status == ""
    assert backend.counters["lockouts"] == 1 and backend.counters["logins_locked"] == 1


def test_a_refused_login_is_answered_late_without_holding_up_others(app):
    plan_backlog(app, charges=1, refunds=0, payouts=0)
    backend = backend_of(app)
    backend.settings = ServiceSettings(login_failure_delay=1.0)
    with serve_app(mounted(backend)) as srv:
        soap = RawSoap(srv.url + "/qbwc/")
        t0 = time.monotonic()
        assert soap.call("authenticate", strUserName="ledgerflow", strPassword="nope") == ["", "nvu"]
        assert time.monotonic() - t0 >= 1.0
        # many refused logins at once hold no worker thread: a real login is answered meanwhile
        async def burst():
            async with httpx.AsyncClient(timeout=60) as ac:
                env = _envelope("authenticate", strUserName="x", strPassword="y")
                return await asyncio.gather(*(ac.post(srv.url + "/qbwc/", content=env, headers={
                    "Content-Type": "text/xml", "X-Forwarded-For": "203.0.113.7"}) for _ in range(60)))
        th = threading.Thread(target=lambda: asyncio.run(burst()))
        th.start()
        ticket, status = soap.call("authenticate", strUserName="ledgerflow", strPassword=PASSWORD)
        th.join(120)
    assert ticket


class CountingSecrets:
    def __init__(self, real):
        self.real, self.calls = real, 0

    def resolve(self, ref, what):
        self.calls += 1
        return self.real.resolve(ref, what)


def test_unknown_users_resolve_and_compare_the_secret_too(app):
    backend = quiet(app)
    backend.secrets = CountingSecrets(app.secrets)
    assert backend.authenticate("nobody", "whatever", "192.0.2.1") == ["", "nvu"]
    assert backend.secrets.calls == 1                  # the same work as for the right user name
    assert backend.authenticate("ledgerflow", "wrong", "192.0.2.1") == ["", "nvu"]
    assert backend.secrets.calls == 2


def test_tickets_expire(app):
    ids = plan_backlog(app, charges=1, refunds=0, payouts=0)
    clock = Clock()
    backend = quiet(app, clock=clock)
    ticket, status = backend.authenticate("ledgerflow", PASSWORD, "127.0.0.1")
    assert status == ""
    assert backend.send_request(ticket, "", "", "US", 13, 0)           # claims the work
    clock.now += ServiceSettings().session_idle_timeout + 1
    assert backend.send_request(ticket, "", "", "US", 13, 0) == ""
    assert "expired" in backend.get_last_error(ticket)
    assert backend.receive_response(ticket, "<QBXML/>", "", "") < 0
    assert app.store.count_deliveries("sending") == 0                   # the claim went back
    assert {r["state"] for r in rows(app, ids)} == {"retrying"}
    backend.settings = ServiceSettings(login_failure_delay=0.0, session_max_age=100)   # an absolute limit too
    fresh, _ = backend.authenticate("ledgerflow", PASSWORD, "127.0.0.1")
    clock.now += 60
    assert backend.send_request(fresh, "", "", "US", 13, 0)
    clock.now += 60                                                      # idle 60 s only, but 120 s since login
    assert backend.send_request(fresh, "", "", "US", 13, 0) == ""
    assert "expired" in backend.get_last_error(fresh)


def test_login_guard_memory_is_bounded_and_user_lockout_counts_all_addresses():
    g = LoginGuard(max_failures=2, lockout=60)
    g.MAX_KEYS = 100
    for i in range(1000):
        g.failed(g.keys(f"10.0.{i // 250}.{i % 250}", f"user{i}"), 1000.0)
    assert len(g._fails) <= 100 and len(g._locked) <= 100
    g2 = LoginGuard(max_failures=2, lockout=60)
    for i in range(8):                                           # 8 addresses, one failure each
        g2.failed(g2.keys(f"10.1.0.{i}", "ledgerflow"), 1000.0)
    assert g2.locked_until(g2.keys("10.9.9.9", "ledgerflow"), 1001.0) is not None


# ---- 7. bodies: Content-Length first, streamed with a cap; clean logs -----------------------------------------

def _raw_exchange(port: int, data: bytes, timeout: float = 60.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while b"\r\n\r\n" not in out:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        return out


def test_an_oversized_content_length_is_refused_before_the_body_is_read(app):
    with serve_app(mounted(quiet(app))) as srv:
        head = (b"POST /qbwc/ HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
                b"Content-Length: 62914560\r\n\r\n<soap:Envelope")      # 60 MiB announced, a few bytes sent
        answer = _raw_exchange(srv.port, head)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
        # and without a Content-Length (chunked), reading stops at the cap
        backend = quiet(app)
        backend.settings = ServiceSettings(login_failure_delay=0.0, max_body_bytes=64 * 1024)
    with serve_app(mounted(backend)) as srv:
        r = httpx.post(srv.url + "/qbwc/", content=iter([b"<a>" + b"x" * 40_000] * 4),
                       headers={"Content-Type": "text/xml"}, timeout=60)
        assert r.status_code == 413 and "larger than 65536 bytes" in r.text


def test_connection_error_messages_cannot_forge_log_lines(app, caplog):
    caplog.set_level(logging.INFO, logger="ledgerflow.qbwc")
    plan_backlog(app, charges=1, refunds=0, payouts=0)
    with serve_app(mounted(quiet(app))) as srv:
        soap = RawSoap(srv.url + "/qbwc/")
        ticket, _ = soap.call("authenticate", strUserName="ledgerflow", strPassword=PASSWORD)
        forged = "file in use\n2026-01-01 00:00:00 INFO ledgerflow.qbwc: login ok for admin\r\t\u0085\u2028x"
        assert soap.call("connectionError", ticket=ticket, hresult="0x8004\n0418", message=forged) == "done"
        assert soap.call("connectionError", ticket="made-up", hresult="x", message=forged) == "done"
    lines = [r.getMessage() for r in caplog.records if r.name == "ledgerflow.qbwc"]
    assert lines and all(not CONTROL.search(m) and "\n" not in m for m in lines), lines
    assert clean("a\nb\x00c\u2028d") == "a b c d"


# ---- 12. a listener of its own ---------------------------------------------------------------------------

def test_the_web_connector_can_listen_apart_from_the_webhooks(app, monkeypatch):
    from runner.operate.server.limits import Listener
    from runner.operate.server.listeners import build_servers, serve_all
    from tests.webhook_helpers import set_secrets
    set_secrets(monkeypatch)
    app.project.raw["stripe"] = {"endpoints": {"platform": {"secrets": [{"env": "LF_TEST_WHSEC_NEW"}]}}}
    web_port, qbwc_port = free_port(), free_port()
    servers = build_servers(app, "127.0.0.1", web_port, background=False, log_level="warning",
                            qbwc=Listener("127.0.0.1", qbwc_port))
    assert len(servers) == 2
    loop = asyncio.new_event_loop()
    th = threading.Thread(target=lambda: loop.run_until_complete(serve_all(servers)), daemon=True)
    th.start()
    try:
        deadline = time.monotonic() + 60
        while not all(s.started for s in servers):
            assert time.monotonic() < deadline and th.is_alive(), "servers did not start"
            time.sleep(0.05)
        with httpx.Client(timeout=30) as c:
            assert c.get(f"http://127.0.0.1:{qbwc_port}/qbwc/?wsdl").status_code == 200
            assert c.get(f"http://127.0.0.1:{web_port}/qbwc/?wsdl").status_code == 404
            assert c.get(f"http://127.0.0.1:{qbwc_port}/healthz").status_code == 404
            assert c.post(f"http://127.0.0.1:{qbwc_port}/webhooks/stripe", content=b"{}").status_code == 404
            health = c.get(f"http://127.0.0.1:{web_port}/healthz").json()
        assert set(health) == {"status", "accepted", "duplicate", "unavailable", "rejected", "batches", "services",
                               "process"}
        assert servers[0].config.limit_concurrency == 1000 and servers[0].config.timeout_keep_alive == 5
        assert servers[0].config.h11_max_incomplete_event_size == 65536
    finally:
        for s in servers:
            s.should_exit = True
        th.join(60)
    assert not th.is_alive()


# ---- the standing fuzz: envelopes, tickets, responses, hresults ---------------------------------------------

def _envelope(op: str, **params) -> bytes:
    inner = "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in params.items() if v is not None)
    return (f'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{SOAP_ENV}"><soap:Body>'
            f'<{op} xmlns="{NS}">{inner}</{op}></soap:Body></soap:Envelope>').encode()


xml_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=200) \
    .filter(lambda t: all(c in "\t\n\r" or ord(c) >= 0x20 for c in t) and "\ufffe" not in t and "\uffff" not in t)
ops = st.sampled_from(["serverVersion", "clientVersion", "authenticate", "sendRequestXML", "receiveResponseXML",
                       "connectionError", "getLastError", "closeConnection", "dropTables"])
hresults = st.one_of(st.just(""), st.sampled_from(["0x80040400", "0x80040408", "-2147220480", "0xFFFFFFFF", "zz"]),
                     xml_text)
responses = st.one_of(
    xml_text,
    st.just('<?xml version="1.0"?><QBXML><QBXMLMsgsRs><DepositAddRs requestID="1" statusCode="0"/></QBXMLMsgsRs></QBXML>'),
    st.builds(lambda rid, code: f'<QBXML><QBXMLMsgsRs><CustomerAddRs requestID="{escape(rid)}" statusCode="{code}" '
                                f'statusMessage="m"/></QBXMLMsgsRs></QBXML>', xml_text, st.integers(-5, 10**12)),
    st.just("<!DOCTYPE x [<!ENTITY a 'aaaa'><!ENTITY b '&a;&a;&a;&a;'>]><QBXML>&b;</QBXML>"),
)
envelopes = st.one_of(
    st.builds(lambda op, t, r, h, m, u, p: _envelope(op, ticket=t, response=r, hresult=h, message=m,
                                                      strUserName=u, strPassword=p),
              ops, st.one_of(st.none(), xml_text), st.one_of(st.none(), responses), st.one_of(st.none(), hresults),
              st.one_of(st.none(), xml_text), st.one_of(st.none(), st.just("ledgerflow"), xml_text),
              st.one_of(st.none(), xml_text)),
    st.binary(max_size=400),
    st.builds(lambda n: b"<a>" * n + b"</a>" * n, st.integers(1, 5000)),
    st.builds(lambda b: b.encode("utf-16"), xml_text),
    st.just(b'<?xml version="1.0"?><!DOCTYPE x SYSTEM "file:///etc/passwd"><x/>'),
)
soap_actions = st.one_of(st.none(), st.just('""'), xml_text.map(lambda t: t.replace("\n", " ").replace("\r", " ")),
                         ops.map(lambda op: f'"{NS}{op}"'))


@pytest.fixture
def fuzz_target(app, caplog):
    """One service for the whole fuzz run (sqlite only, to keep it bounded), a real session beside it."""
    if not str(app.store.engine.url).startswith("sqlite"):
        pytest.skip("the fuzz runs on SQLite; the PostgreSQL-specific cases are regression tests above")
    caplog.set_level(logging.DEBUG, logger="ledgerflow")
    plan_backlog(app, charges=2, refunds=0, payouts=0, customers=1)
    backend = quiet(app)
    with serve_app(mounted(backend), **Limits().uvicorn_options()) as srv, httpx.Client(timeout=60) as client:
        yield srv, client, app, caplog


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(body=envelopes, action=soap_actions)
def test_fuzz_soap_endpoint(fuzz_target, body, action):
    srv, client, app, caplog = fuzz_target
    headers = {"Content-Type": "text/xml; charset=utf-8"}
    if action is not None:
        headers["SOAPAction"] = action.strip(" \t").encode("utf-8")      # httpx refuses padded values
    r = client.post(srv.url + "/qbwc/", content=body, headers=headers)
    assert 200 <= r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        if r.headers.get("content-type", "").startswith("text/xml"):
            fault = etree.fromstring(r.content).find(f"{{{SOAP_ENV}}}Body/{{{SOAP_ENV}}}Fault")
            assert fault is not None and (fault.findtext("faultstring") or "").strip()
        else:                                   # refused by the HTTP layer (a header h11 will not take)
            assert r.text.strip()
    with app.store.engine.connect() as c:                      # nothing without a login: no session, no request
        assert c.execute(qbwc_sessions.select()).first() is None
        assert c.execute(qbwc_requests.select()).first() is None
        assert c.execute(deliveries.select().where(deliveries.c.state != "pending")).first() is None
    for rec in caplog.records:
        m = rec.getMessage()
        assert not CONTROL.search(m) and PASSWORD not in m, m


def test_fuzz_soap_session_stays_answered_alongside_garbage(app, caplog):
    """A real session runs while another client sends garbage; afterwards the logs are clean."""
    caplog.set_level(logging.DEBUG, logger="ledgerflow")
    ids = plan_backlog(app, charges=4, refunds=1, payouts=1, customers=2)
    qb = FakeQuickBooks()
    stop = threading.Event()
    statuses: list[int] = []
    with serve_app(mounted(quiet(app)), **Limits().uvicorn_options()) as srv:
        def garbage():
            with httpx.Client(timeout=60) as c:
                i = 0
                while not stop.is_set():
                    i += 1
                    body = [b"\x00\xff" * i, b"<a>" * 3000, _envelope("receiveResponseXML", ticket=f"t{i}",
                                                                       response="<QBXML>", hresult="0x80040400"),
                            _envelope("authenticate", strUserName="intruder", strPassword=f"x{i}\n")][i % 4]
                    statuses.append(c.post(srv.url + "/qbwc/", content=body,
                                           headers={"X-Forwarded-For": "198.51.100.9"}).status_code)
        th = threading.Thread(target=garbage)
        th.start()
        try:
            log = WebConnector(RawSoap(srv.url + "/qbwc/"), qb).run_session("ledgerflow", PASSWORD)
        finally:
            stop.set()
            th.join(60)
    assert log.percents[-1] == 100
    assert [r["state"] for r in rows(app, ids)] == ["sent"] * len(ids)
    assert statuses and all(200 <= s < 500 for s in statuses)
    for rec in caplog.records:
        m = rec.getMessage()
        assert not CONTROL.search(m) and PASSWORD not in m and "\\x00" not in m, m
