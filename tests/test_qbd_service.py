"""The Web Connector SOAP service, driven over real HTTP by the QBWC stand-in (zeep and raw envelopes)."""

from __future__ import annotations

import dataclasses
import time

import httpx
import pytest
from lxml import etree
from starlette.applications import Starlette
from starlette.routing import Mount

from connectors import registry
from connectors.quickbooks_desktop.service import build_service
from connectors.quickbooks_desktop.webconnector import QbdConnection, WebConnectorBackend, connections_of
from runner.app import App
from runner.language.fixtures import event_from_fixture
from runner.language.planner import Operation
from runner.qbwc_queue import QbwcQueue
from runner.store.tables import deliveries, qbwc_requests
from tests.standins.web_connector import NS, WSDL_PATH, XSD_PATH, FakeQuickBooks, RawSoap, WebConnector, ZeepSoap
from tests.support.servers import serve_app

pytestmark = pytest.mark.skipif(not (XSD_PATH.exists() and WSDL_PATH.exists()),
                                reason=f"Intuit's qbXML schema / QBWC WSDL not found under {XSD_PATH.parents[1]} "
                                       "(shared/reference is beside the checkout in CI)")

PASSWORD = "correct horse battery staple"


@pytest.fixture
def app(project_dir, store_url, stripe_fixtures, monkeypatch):
    monkeypatch.setenv("QBWC_PASSWORD", PASSWORD)
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    a = App()
    yield a
    a.close()


def _bt(txn: str, source: str, amount: int, category: str) -> dict:
    """The balance transaction Stripe's API returns for a movement (webhooks carry only its id)."""
    return {"id": txn, "object": "balance_transaction", "amount": amount, "currency": "usd", "fee": 0,
            "fee_details": [], "net": amount, "exchange_rate": None, "reporting_category": category,
            "type": category, "created": 1234567890, "source": source}


def plan_backlog(app: App, charges: int = 6, refunds: int = 2, payouts: int = 2, customers: int = 3) -> list[int]:
    """Stripe-derived deliveries: fixture events planned through the shipped qbd flows (the accounting
    model: each movement's balance transaction pinned, fee-free so a charge is one sales receipt; the
    customer name varied per charge to exercise several customers)."""
    events = []
    for i in range(charges):
        cid = f"ch_3Test{i:06d}"
        flow = app.flow("qbd-charges")
        if customers:
            flow = dataclasses.replace(flow, vars={**flow.vars, "customer_name": f"cus_T{i % customers}"})
        events.append((flow, event_from_fixture("charge.succeeded", overrides={
            "id": cid, "amount": 1000 + i, "transfer_data": None, "balance_transaction": f"txn_{cid}"}),
            _bt(f"txn_{cid}", cid, 1000 + i, "charge")))
    for i in range(refunds):
        rid = f"re_3Refd{i:06d}"
        events.append((app.flow("qbd-refunds"), event_from_fixture("refund.created", overrides={
            "id": rid, "amount": 500 + i, "balance_transaction": f"txn_{rid}"}),
            _bt(f"txn_{rid}", rid, -(500 + i), "refund")))
    for i in range(payouts):
        pid, amount = f"po_3Test{i:06d}", (-1 if i % 2 else 1) * (20000 + i)
        events.append((app.flow("qbd-payouts"), event_from_fixture("payout.paid", overrides={
            "id": pid, "amount": amount, "balance_transaction": f"txn_{pid}"}),
            _bt(f"txn_{pid}", pid, -amount, "payout")))
    ids = []
    for flow, ev, txn in events:
        ops = app.plan_event(ev, flow, pinned_lookups={"balance_transaction": txn})
        ids += [did for did, _ in app.store.add_deliveries(ops)]
    return sorted(set(ids))


class Clock:
    def __init__(self):
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def backend_of(app: App, clock=None, **overrides) -> WebConnectorBackend:
    conns = [QbdConnection(**{**c.__dict__, **overrides}) for c in connections_of(app.project.connections)]
    return WebConnectorBackend(QbwcQueue(app.store), conns, app.secrets, clock=clock or time.time)


def mounted(backend: WebConnectorBackend) -> Starlette:
    return Starlette(routes=[Mount("/qbwc", app=build_service(backend))])


def rows(app: App, ids: list[int]) -> list[dict]:
    return app.store.deliveries_where(deliveries.c.id.in_(ids))


@pytest.fixture(params=["zeep", "raw"])
def transport(request):
    return request.param


def soap_client(kind: str, url: str):
    return ZeepSoap(url) if kind == "zeep" else RawSoap(url)


def test_quickbooks_desktop_is_a_pull_type():
    assert registry.is_pull("quickbooks_desktop")
    assert "quickbooks_desktop" in registry.TYPES


def test_a_session_drains_the_backlog_into_schema_valid_qbxml(app, transport):
    ids = plan_backlog(app)
    qb = FakeQuickBooks()
    backend = backend_of(app, requests_per_message=4)
    with serve_app(mounted(backend)) as srv:
        wc = WebConnector(soap_client(transport, srv.url + "/qbwc/"), qb)
        log = wc.run_session("ledgerflow", PASSWORD)
    assert log.auth[0] and log.auth[1] == ""                 # a ticket; "" = the open company file
    assert log.percents[-1] == 100 and log.percents == sorted(log.percents)
    assert max(log.requests_per_trip) == 4 and len(log.requests_per_trip) >= len(ids) // 4
    assert set(qb.versions) == {'version="13.0"'}
    got = rows(app, ids)
    assert [r["state"] for r in got] == ["sent"] * len(got)
    txn_ids = {t.txn_id for t in qb.txns}
    txn_rows = [r for r in got if r["action"] != "customer"]
    assert len(qb.txns) == len(txn_rows) == 10                # 6 receipts, 2 refund journals, 1 deposit, 1 journal
    assert {r["target_ref"] for r in txn_rows} == txn_ids     # every delivery's TxnID recorded
    assert {r["target_ref"] for r in got if r["action"] == "customer"} == set(qb.customers.values())
    assert sorted(qb.customers) == ["cus_T0", "cus_T1", "cus_T2"]
    assert sorted(t.kind for t in qb.txns) == ["Deposit"] + ["JournalEntry"] * 3 + ["SalesReceipt"] * 6
    assert log.closed.startswith("OK: 13 deliveries")


def test_bad_login_gets_nvu_and_no_work_gets_none(app, transport):
    backend = backend_of(app)
    with serve_app(mounted(backend)) as srv:
        wc = WebConnector(soap_client(transport, srv.url + "/qbwc/"), FakeQuickBooks())
        assert wc.run_session("ledgerflow", "wrong").auth[1] == "nvu"
        assert wc.run_session("someone-else", PASSWORD).auth[1] == "nvu"
        log = wc.run_session("ledgerflow", PASSWORD)
    assert log.auth[1] == "none" and log.requests_per_trip == []


def test_missing_password_secret_refuses_the_login(app, monkeypatch):
    monkeypatch.delenv("QBWC_PASSWORD")
    plan_backlog(app, 1, 0, 0)
    assert backend_of(app).authenticate("ledgerflow", PASSWORD) == ["", "nvu"]


def test_a_broken_off_session_resumes_without_duplicates(app, transport):
    ids = plan_backlog(app, charges=6, refunds=2, payouts=2)
    qb = FakeQuickBooks()
    backend = backend_of(app, requests_per_message=5)
    with serve_app(mounted(backend)) as srv:
        wc = WebConnector(soap_client(transport, srv.url + "/qbwc/"), qb)
        first = wc.run_session("ledgerflow", PASSWORD, break_after=2)   # QuickBooks ran 2 messages; 1 answer lost
        assert first.broken_off
        ran_before = len(qb.txns)
        assert ran_before > 0
        second = wc.run_session("ledgerflow", PASSWORD)
    assert second.percents[-1] == 100
    got = rows(app, ids)
    assert all(r["state"] == "sent" for r in got), [(r["id"], r["state"], r["last_error"]) for r in got]
    assert len(qb.txns) == 10                               # nothing added twice
    assert len({(t.kind, t.memo) for t in qb.txns}) == 10
    assert {r["target_ref"] for r in got if r["action"] != "customer"} == {t.txn_id for t in qb.txns}
    later = "".join(qb.documents[2:])
    assert "SalesReceiptQueryRq" in later                   # the unanswered adds were looked up first
    with app.store.engine.connect() as c:
        phases = {r.phase for r in c.execute(qbwc_requests.select())}
    assert "query" in phases


def test_customer_name_in_use_is_found_not_duplicated(app):
    ids = plan_backlog(app, charges=2, refunds=0, payouts=0, customers=1)
    qb = FakeQuickBooks(customers={"cus_T0": "8000ABCD-1600000000"})
    with serve_app(mounted(backend_of(app))) as srv:
        WebConnector(RawSoap(srv.url + "/qbwc/"), qb).run_session("ledgerflow", PASSWORD)
    got = {r["action"]: r for r in rows(app, ids)}
    assert got["customer"]["state"] == "sent" and got["customer"]["target_ref"] == "8000ABCD-1600000000"
    assert list(qb.customers) == ["cus_T0"]
    assert any("CustomerQueryRq" in d for d in qb.documents)


def test_a_name_taken_by_a_vendor_dead_letters_with_a_clear_message(app):
    ids = plan_backlog(app, charges=1, refunds=0, payouts=0, customers=1)
    qb = FakeQuickBooks(other_names={"cus_T0"})
    with serve_app(mounted(backend_of(app))) as srv:
        WebConnector(RawSoap(srv.url + "/qbwc/"), qb).run_session("ledgerflow", PASSWORD)
    by = {r["action"]: r for r in rows(app, ids)}
    assert by["customer"]["state"] == "dead"
    assert "'cus_T0' is already used by a vendor, employee or other name" in by["customer"]["last_error"]
    assert by["sales_receipt"]["state"] == "dead"             # QuickBooks: invalid reference to the customer
    assert 'invalid reference to QuickBooks Customer "cus_T0"' in by["sales_receipt"]["last_error"]


def test_data_errors_dead_letter_with_intuits_message(app):
    op = Operation(flow="qbd-payouts", route="deposit", connection="quickbooks_desktop",
                   connector_type="quickbooks_desktop", action="deposit", idempotency_key="k-missing-account",
                   payload={"TxnDate": "2024-01-02", "DepositToAccountRef": {"FullName": "No Such Bank"},
                            "DepositLineAdd": [{"AccountRef": {"FullName": "Stripe Clearing"}, "Amount": 5}]},
                   event_id="evt_x")
    [(did, _)] = app.store.add_deliveries([op])
    with serve_app(mounted(backend_of(app))) as srv:
        WebConnector(RawSoap(srv.url + "/qbwc/"), FakeQuickBooks()).run_session("ledgerflow", PASSWORD)
    row = app.store.delivery(did)
    assert row["state"] == "dead" and row["error_kind"] == "permanent"
    assert 'QuickBooks 3140 (Error): There is an invalid reference to QuickBooks Account "No Such Bank"' \
        in row["last_error"]


def test_busy_records_retry_at_the_next_poll_and_are_queried_before_a_re_add(app):
    ids = plan_backlog(app, charges=3, refunds=0, payouts=0, customers=1)
    qb = FakeQuickBooks(busy_requests=2)
    clock = Clock()
    backend = backend_of(app, clock=clock, poll_minutes=7)
    with serve_app(mounted(backend)) as srv:
        wc = WebConnector(RawSoap(srv.url + "/qbwc/"), qb)
        first = wc.run_session("ledgerflow", PASSWORD)
        assert first.percents[-1] == 100
        busy = [r for r in rows(app, ids) if r["state"] == "retrying"]
        assert len(busy) == 2 and all("QuickBooks 3175" in r["last_error"] for r in busy)
        assert all(r["next_attempt_at"] >= clock.now + 7 * 60 for r in busy)
        assert wc.run_session("ledgerflow", PASSWORD).auth[1] == "none"    # not before the next poll
        clock.now += 7 * 60 + 1
        second = wc.run_session("ledgerflow", PASSWORD)
    assert second.percents[-1] == 100
    assert all(r["state"] == "sent" for r in rows(app, ids))
    assert len(qb.txns) == 3
    assert "SalesReceiptQueryRq" in qb.documents[-2]        # attempts > 0: query first, then add
    assert "SalesReceiptAddRq" in qb.documents[-1]


def test_quickbooks_unavailable_gives_a_negative_percent_and_the_error(app, transport):
    ids = plan_backlog(app, charges=1, refunds=0, payouts=0)
    with serve_app(mounted(backend_of(app))) as srv:
        log = WebConnector(soap_client(transport, srv.url + "/qbwc/"), FakeQuickBooks()).run_session(
            "ledgerflow", PASSWORD, hresult_on_trip=0)
    assert log.percents == [-101]
    assert "0x80040408" in log.last_error and "Could not start QuickBooks" in log.last_error
    assert {r["state"] for r in rows(app, ids)} == {"retrying"}


def test_connection_error_and_unknown_tickets(app):
    plan_backlog(app, charges=1, refunds=0, payouts=0)
    backend = backend_of(app)
    with serve_app(mounted(backend)) as srv:
        soap = RawSoap(srv.url + "/qbwc/")
        ticket, status = soap.call("authenticate", strUserName="ledgerflow", strPassword=PASSWORD)
        assert status == ""
        assert soap.call("connectionError", ticket=ticket, hresult="0x80040418",
                         message="The company file is open in single-user mode") == "done"
        assert "single-user mode" in soap.call("getLastError", ticket=ticket)
        assert soap.call("sendRequestXML", ticket=ticket, strHCPResponse="", strCompanyFileName="",
                         qbXMLCountry="US", qbXMLMajorVers=13, qbXMLMinorVers=0) == ""
        assert soap.call("receiveResponseXML", ticket="nope", response="", hresult="", message="") < 0
        assert "unknown" in soap.call("getLastError", ticket="nope")
    assert app.store.count_deliveries("sending") == 0         # the claim went back for the next poll


def test_wsdl_is_served_and_matches_intuits(app):
    with serve_app(mounted(backend_of(app))) as srv:
        r = httpx.get(srv.url + "/qbwc/?wsdl")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/xml")
        ours, theirs = etree.fromstring(r.content), etree.parse(str(WSDL_PATH)).getroot()
        ns = {"w": "http://schemas.xmlsoap.org/wsdl/", "s": "http://schemas.xmlsoap.org/wsdl/soap/",
              "x": "http://www.w3.org/2001/XMLSchema"}

        def shape(root):
            ops = {o.get("name"): o.find("s:operation", ns).get("soapAction")
                   for o in root.findall("w:binding/w:operation", ns)}
            elements = {e.get("name"): [(c.get("name"), c.get("type"), c.get("minOccurs")) for c in
                                        e.findall("x:complexType/x:sequence/x:element", ns)]
                        for e in root.findall("w:types/x:schema/x:element", ns)}
            return ops, elements

        assert shape(ours) == shape(theirs)
        assert ours.find("w:service/w:port/s:address", ns).get("location") == srv.url + "/qbwc/"
        client = ZeepSoap(srv.url + "/qbwc/", wsdl=srv.url + "/qbwc/?wsdl")     # zeep from the served WSDL
        assert "ledgerflow" in client.call("serverVersion", strVersion="")
        assert client.call("clientVersion", strVersion="2.3.0.215") == ""


def test_soap_faults_name_what_was_wrong(app):
    with serve_app(mounted(backend_of(app))) as srv:
        url = srv.url + "/qbwc/"
        body = (f'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
                f'<closeConnection xmlns="{NS}"><ticket>x</ticket></closeConnection></soap:Body></soap:Envelope>')
        r = httpx.post(url, content=body, headers={"SOAPAction": f'"{NS}authenticate"', "Content-Type": "text/xml"})
        assert r.status_code == 400 and "does not match the operation closeConnection" in r.text
        r = httpx.post(url, content=body.replace("closeConnection", "dropTables"), headers={"Content-Type": "text/xml"})
        assert r.status_code == 400 and "unknown operation" in r.text and "dropTables" in r.text
        r = httpx.post(url, content=b"<soap:Envelope", headers={"Content-Type": "text/xml"})
        assert r.status_code == 400 and "not well-formed" in r.text
        r = httpx.post(url, content=body.replace("<ticket>x</ticket>", ""), headers={"Content-Type": "text/xml"})
        assert r.status_code == 200 and "<closeConnectionResult>OK</closeConnectionResult>" in r.text
