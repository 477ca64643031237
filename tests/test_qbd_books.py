"""The shipped QuickBooks Desktop flows, end to end, keep books that balance.

A small Stripe scenario (USD, EUR, GBP and JPY charges with Stripe's fees, partial refunds
announced twice, a dispute lost and one won, a destination charge and its transfer, an
application fee and its refund, a connected account's own charge, a negative and a failed
payout, duplicated events) is planned through every shipped ``qbd-*`` flow, with each
movement's balance transaction pinned as Stripe's API would return it, delivered through the
Web Connector SOAP service to the QuickBooks stand-in (``tests/standins/web_connector.py``),
and the company file's trial balance is checked against the balance transactions themselves:
debits = credits, the clearing account nets to zero once the payout is booked, revenue,
refunds, fees, disputes and application fees equal Stripe's numbers in dollars, nothing is
booked twice. In a single-currency company file nothing foreign arrives; in a multicurrency
one the sales are in the presentment currency with the exchange rate, for a customer per
currency.
"""

from __future__ import annotations

import shutil
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from connectors.quickbooks_desktop.service import build_service
from connectors.quickbooks_desktop.webconnector import QbdConnection, WebConnectorBackend, connections_of
from runner.app import App
from runner.language.fixtures import event_from_fixture
from runner.qbwc_queue import QbwcQueue
from tests.standins.web_connector import WSDL_PATH, XSD_PATH, FakeQuickBooks, RawSoap, WebConnector
from tests.support.servers import serve_app

pytestmark = pytest.mark.skipif(not (XSD_PATH.exists() and WSDL_PATH.exists()),
                                reason="Intuit's qbXML schema / QBWC WSDL not found (shared/reference)")

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "qbd books"
ACCT = "acct_1PgafTB7WZ01zgkW"
CREATED = 1767225600            # 2026-01-01 00:00 UTC


def bt(txn: str, source: str, amount: int, category: str, *, fee: int = 0, rate: str | None = None,
       fee_type: str = "stripe_fee", type_: str | None = None) -> dict:
    return {"id": txn, "object": "balance_transaction", "amount": amount, "currency": "usd", "fee": fee,
            "fee_details": [{"amount": fee, "currency": "usd", "type": fee_type}] if fee else [],
            "net": amount - fee, "exchange_rate": rate, "reporting_category": category,
            "type": type_ or category, "created": CREATED, "source": source}


def charge(cid: str, amount: int, currency: str, txn: str, **extra) -> dict:
    return {"id": cid, "amount": amount, "currency": currency, "balance_transaction": txn, "paid": True,
            "status": "succeeded", "captured": True, "transfer_data": None, "created": CREATED, **extra}


def scenario() -> list[tuple[dict, dict | None]]:
    """(event, the balance transaction Stripe's API returns for its id) in delivery order."""
    out: list[tuple[dict, dict | None]] = []

    def ev(etype: str, obj: dict, txn: dict | None, account: str | None = None, resource: str | None = None):
        out.append((event_from_fixture(etype, overrides=obj, account=account, resource=resource), txn))

    # charges: USD, EUR, GBP, JPY (Stripe's rate and fee, settled in dollars)
    ev("charge.succeeded", charge("ch_3UsdA0000000000000001", 10000, "usd", "txn_chA"),
       bt("txn_chA", "ch_3UsdA0000000000000001", 10000, "charge", fee=320))
    ev("charge.succeeded", charge("ch_3EurB0000000000000002", 5000, "eur", "txn_chB"),
       bt("txn_chB", "ch_3EurB0000000000000002", 5417, "charge", fee=187, rate="1.0834"))
    ev("charge.succeeded", charge("ch_3GbpC0000000000000003", 3333, "gbp", "txn_chC"),
       bt("txn_chC", "ch_3GbpC0000000000000003", 4217, "charge", fee=152, rate="1.26523"))
    ev("charge.succeeded", charge("ch_3JpyD0000000000000004", 3000, "jpy", "txn_chD"),
       bt("txn_chD", "ch_3JpyD0000000000000004", 2010, "charge", fee=88, rate="0.0067"))
    # the same USD charge announced again (and through charge.captured): booked once
    ev("charge.captured", charge("ch_3UsdA0000000000000001", 10000, "usd", "txn_chA"),
       bt("txn_chA", "ch_3UsdA0000000000000001", 10000, "charge", fee=320))
    # a destination charge (agent, transfer_data[amount] form): the platform keeps the 20.00 it does not transfer
    ev("charge.succeeded", charge("ch_3DestE000000000000005", 20000, "usd", "txn_chE",
                                  transfer_data={"destination": ACCT, "amount": 18000}),
       bt("txn_chE", "ch_3DestE000000000000005", 20000, "charge", fee=610))
    ev("transfer.created", {"id": "tr_3DestE000000000000005", "amount": 18000, "currency": "usd",
                            "balance_transaction": "txn_trE", "destination": ACCT},
       bt("txn_trE", "tr_3DestE000000000000005", -18000, "transfer"))
    # a connected account's direct charge: its books, not the platform's; the platform's fee is
    ev("charge.succeeded", charge("ch_3DirectF00000000000006", 5000, "usd", "txn_chF", application_fee_amount=200),
       {**bt("txn_chF", "ch_3DirectF00000000000006", 5000, "charge", fee=345),
        "fee_details": [{"amount": 145, "currency": "usd", "type": "stripe_fee"},
                        {"amount": 200, "currency": "usd", "type": "application_fee"}]}, account=ACCT)
    ev("application_fee.created", {"id": "fee_3DirectF0000000000006", "amount": 200, "currency": "usd",
                                   "balance_transaction": "txn_feeF", "account": ACCT},
       bt("txn_feeF", "fee_3DirectF0000000000006", 200, "platform_earning", type_="application_fee"))
    ev("application_fee.refunded", {"id": "fee_3DirectF0000000000006", "amount": 200, "currency": "usd",
                                    "amount_refunded": 50, "refunds": {"object": "list", "has_more": False, "data": [
                                        {"id": "fr_3DirectF0000000000006", "object": "fee_refund", "amount": 50,
                                         "currency": "usd", "created": CREATED, "balance_transaction": "txn_frF",
                                         "fee": "fee_3DirectF0000000000006", "metadata": {}}]}},
       bt("txn_frF", "fr_3DirectF0000000000006", -50, "platform_earning_refund", type_="application_fee_refund"))
    # partial refunds: 25.00 of the USD charge (created, then updated: one refund), 10.00 EUR of the EUR one
    for etype in ("refund.created", "refund.updated", "charge.refund.updated"):
        ev(etype, {"id": "re_3UsdA0000000000000001", "amount": 2500, "currency": "usd", "status": "succeeded",
                   "charge": "ch_3UsdA0000000000000001", "balance_transaction": "txn_reA"},
           bt("txn_reA", "re_3UsdA0000000000000001", -2500, "refund"))
    ev("refund.created", {"id": "re_3EurB0000000000000002", "amount": 1000, "currency": "eur", "status": "succeeded",
                          "charge": "ch_3EurB0000000000000002", "balance_transaction": "txn_reB"},
       bt("txn_reB", "re_3EurB0000000000000002", -1083, "refund", rate="1.083"))
    # a charge.refunded (cumulative amount_refunded) books nothing: no shipped qbd flow takes it
    ev("charge.refunded", charge("ch_3UsdA0000000000000001", 10000, "usd", "txn_chA", amount_refunded=2500), None)
    # the JPY charge disputed and lost; the GBP one disputed and won
    ev("charge.dispute.funds_withdrawn", {"id": "du_3JpyD0000000000000004", "amount": 3000, "currency": "jpy",
                                          "charge": "ch_3JpyD0000000000000004", "balance_transactions": [
                                              bt("txn_duD", "du_3JpyD0000000000000004", -2010, "dispute", fee=1500,
                                                 rate="0.0067", type_="adjustment")]}, None)
    withdrawn = bt("txn_duC", "du_3GbpC0000000000000003", -4217, "dispute", fee=1500, rate="1.26523",
                   type_="adjustment")
    reinstated = bt("txn_drC", "du_3GbpC0000000000000003", 4217, "dispute_reversal", fee=-1500, rate="1.26523",
                    type_="adjustment")
    ev("charge.dispute.funds_withdrawn", {"id": "du_3GbpC0000000000000003", "amount": 3333, "currency": "gbp",
                                          "charge": "ch_3GbpC0000000000000003",
                                          "balance_transactions": [withdrawn]}, None)
    ev("charge.dispute.funds_reinstated", {"id": "du_3GbpC0000000000000003", "amount": 3333, "currency": "gbp",
                                           "charge": "ch_3GbpC0000000000000003",
                                           "balance_transactions": [withdrawn, reinstated]}, None)
    # a payout that failed (paid, then returned), and a negative payout (Stripe debits the bank)
    ev("payout.paid", {"id": "po_3Failed00000000000001", "amount": 5000, "currency": "usd",
                       "balance_transaction": "txn_poX"}, bt("txn_poX", "po_3Failed00000000000001", -5000, "payout"))
    ev("payout.failed", {"id": "po_3Failed00000000000001", "amount": 5000, "currency": "usd", "status": "failed",
                         "balance_transaction": "txn_poX", "failure_balance_transaction": "txn_pfX"},
       bt("txn_pfX", "po_3Failed00000000000001", 5000, "payout_reversal", type_="payout_failure"))
    ev("payout.paid", {"id": "po_3Negative000000000002", "amount": -700, "currency": "usd",
                       "balance_transaction": "txn_poN"}, bt("txn_poN", "po_3Negative000000000002", 700, "payout"))
    return out


def platform_truth(events: list[tuple[dict, dict | None]]) -> tuple[dict[str, Decimal], Decimal]:
    """Per reporting category, what the platform's balance transactions say (dollars, signed as
    Stripe signs them), each balance transaction once; and the balance left for the final payout."""
    seen: dict[str, dict] = {}
    for event, txn in events:
        if event.get("account") or event["type"] == "charge.refunded":
            continue
        obj = event["data"]["object"]
        for b in [txn] + [b for b in obj.get("balance_transactions") or []]:
            if b is not None:
                seen[b["id"]] = b
    by = defaultdict(Decimal)
    balance = Decimal(0)
    for b in seen.values():
        by[b["reporting_category"]] += Decimal(b["amount"]) / 100
        by["fee:" + b["reporting_category"]] += Decimal(b["fee"]) / 100
        balance += Decimal(b["net"]) / 100
    return dict(by), balance


@pytest.fixture
def project(tmp_path, monkeypatch, stripe_fixtures):
    dest = tmp_path / "project"
    (dest / "flows").mkdir(parents=True)
    (dest / "mappings").mkdir()
    shutil.copy(ROOT / "ledgerflow.yaml", dest / "ledgerflow.yaml")
    for f in (ROOT / "flows").glob("qbd-*.yaml"):
        shutil.copy(f, dest / "flows" / f.name)
    shutil.copytree(ROOT / "mappings" / "quickbooks_desktop", dest / "mappings" / "quickbooks_desktop")
    monkeypatch.chdir(dest)
    monkeypatch.setenv("LEDGERFLOW_PROJECT", str(dest / "ledgerflow.yaml"))
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", f"sqlite:///{tmp_path / 'store.db'}")
    monkeypatch.setenv("QBWC_PASSWORD", PASSWORD)
    return dest


def books(project: Path, *, multicurrency: bool) -> tuple[App, FakeQuickBooks, list[tuple[dict, dict | None]]]:
    """Plan the scenario through every shipped qbd flow and let one Web Connector session deliver it."""
    cfg = project / "ledgerflow.yaml"
    text = cfg.read_text()
    assert "    type: quickbooks_desktop\n" in text
    cfg.write_text(text.replace("    type: quickbooks_desktop\n",
                                f"    type: quickbooks_desktop\n    multicurrency: {str(multicurrency).lower()}\n"))
    app = App()
    events = scenario()
    for event, txn in events:
        for flow in app.flows_for(event["type"]):
            pinned = {"balance_transaction": txn} if txn is not None else None
            app.store.add_deliveries(app.plan_event(event, flow, pinned_lookups=pinned))
    qb = FakeQuickBooks(multicurrency=multicurrency)
    conns = [QbdConnection(**{**c.__dict__, "requests_per_message": 7})
             for c in connections_of(app.project.connections)]
    backend = WebConnectorBackend(QbwcQueue(app.store), conns, app.secrets, clock=time.time)
    with serve_app(Starlette(routes=[Mount("/qbwc", app=build_service(backend))])) as srv:
        log = WebConnector(RawSoap(srv.url + "/qbwc/"), qb).run_session("ledgerflow", PASSWORD)
    assert log.percents and log.percents[-1] == 100, log
    rows = app.store.deliveries_where()
    assert {r["state"] for r in rows} == {"sent"}, [(r["route"], r["state"], r["last_error"]) for r in rows]
    return app, qb, events


@pytest.mark.parametrize("multicurrency", [False, True], ids=["single-currency", "multicurrency"])
def test_the_company_file_balances_and_equals_stripe(project, multicurrency):
    app, qb, events = books(project, multicurrency=multicurrency)
    tb = qb.trial_balance()
    assert tb.errors == []
    assert sum(tb.balances.values(), Decimal(0)) == 0                 # debits = credits
    truth, left = platform_truth(events)
    fees = sum((v for k, v in truth.items() if k.startswith("fee:") and not k.startswith("fee:dispute")), Decimal(0))
    dispute_fees = truth["fee:dispute"] + truth["fee:dispute_reversal"]
    assert tb["Sales"] == -(Decimal("100.00") + Decimal("54.17") + Decimal("42.17") + Decimal("20.10"))
    assert tb["Sales Refunds"] == -truth["refund"] == Decimal("35.83")
    assert tb["Stripe Fees"] == fees == Decimal("13.57")
    assert tb["Chargebacks"] == -(truth["dispute"] + truth["dispute_reversal"]) == Decimal("20.10")
    assert tb["Dispute Fees"] == dispute_fees == Decimal("15.00")
    assert tb["Application Fee Revenue"] == -(Decimal("20.00") + truth["platform_earning"]
                                              + truth["platform_earning_refund"]) == Decimal("-21.50")
    assert tb["Connected Accounts Payable"] == 0                      # 180.00 owed, 180.00 transferred
    assert tb["Platform Fees"] == 0                                   # the connected account's own books
    # the clearing account holds exactly what the Stripe balance holds; booking the payout of it
    # leaves zero behind
    assert tb["Stripe Clearing"] == left
    assert tb["Operating Bank"] == truth["payout"] * -1 - truth["payout_reversal"]

    # nothing booked twice: one transaction per movement (the duplicates share a key)
    kinds = sorted(t.kind for t in qb.txns)
    assert kinds.count("SalesReceipt") == 4                           # USD, EUR, GBP, JPY; not the destination charge
    assert kinds.count("Deposit") == 1 and kinds.count("CreditMemo") == 0
    assert kinds.count("JournalEntry") == 4 + 1 + 1 + 2 + 2 + 3 + 2  # fees, destination, transfer, app fee + refund,
    #                                                                  refunds, disputes, failed + negative payout
    assert len({t.memo for t in qb.txns}) == len(qb.txns)

    if multicurrency:
        assert qb.customer_currency == {"Stripe Customers EUR": "EUR", "Stripe Customers GBP": "GBP",
                                        "Stripe Customers JPY": "JPY"}
        receipts = {t.customer: t for t in qb.txns if t.kind == "SalesReceipt"}
        assert receipts["Stripe Customers EUR"].currency == "EUR" and receipts["Stripe Customers EUR"].total == 50
        assert receipts["Stripe Customers JPY"].total == 3000
        assert receipts["Stripe Customers GBP"].total == Decimal("33.33")
        assert receipts["Stripe Customers"].currency == "USD"
        foreign = [p for t in qb.journal() for p in t.postings if p.currency]
        assert {p.currency for p in foreign} == {"EUR", "GBP", "JPY"}
        assert any("<CurrencyRef><FullName>Euro</FullName></CurrencyRef>" in d for d in qb.documents)
        assert any("<ExchangeRate>" in d for d in qb.documents)
    else:
        assert set(qb.customers) == {"Stripe Customers"} and qb.customer_currency == {}
        assert all(t.currency in (None, "USD") and t.exchange_rate == 1 for t in qb.txns)
        assert all(p.currency is None for t in qb.journal() for p in t.postings)
        assert not any("CurrencyRef" in d or "ExchangeRate" in d for d in qb.documents)
    app.close()


def test_a_paid_payout_nets_the_clearing_account_to_zero(project):
    """Every movement of a payout booked once, and the payout moves clearing to the bank."""
    events = scenario()
    _, left = platform_truth(events)
    payout = int(left * 100)
    events.append((event_from_fixture("payout.paid", overrides={
        "id": "po_3Sweep0000000000000003", "amount": payout, "currency": "usd", "balance_transaction": "txn_poS"}),
        bt("txn_poS", "po_3Sweep0000000000000003", -payout, "payout")))
    app, qb = App(), FakeQuickBooks()
    for event, txn in events:
        for flow in app.flows_for(event["type"]):
            pinned = {"balance_transaction": txn} if txn is not None else None
            app.store.add_deliveries(app.plan_event(event, flow, pinned_lookups=pinned))
    backend = WebConnectorBackend(QbwcQueue(app.store), connections_of(app.project.connections), app.secrets)
    with serve_app(Starlette(routes=[Mount("/qbwc", app=build_service(backend))])) as srv:
        WebConnector(RawSoap(srv.url + "/qbwc/"), qb).run_session("ledgerflow", PASSWORD)
    tb = qb.trial_balance()
    assert tb.errors == [] and tb["Stripe Clearing"] == 0
    assert tb["Operating Bank"] == left - Decimal("7.00")     # the sweep, less the negative payout (the failed one: 0)
    deposits = [t for t in qb.txns if t.kind == "Deposit"]
    assert sorted(t.total for t in deposits) == sorted([Decimal("50.00"), left])
    app.close()


def test_single_currency_company_files_get_no_foreign_document_at_plan_time(project):
    """A mapping that sends a foreign currency to a single-currency company file fails at plan time."""
    from runner.core.errors import RenderError
    app = App()
    flow = app.flow("qbd-charges")
    event = event_from_fixture("charge.succeeded", overrides={"id": "ch_3EurZ", "amount": 5000, "currency": "eur",
                                                              "transfer_data": None})
    txn = bt("txn_z", "ch_3EurZ", 5417, "charge", fee=187, rate="1.0834")
    ops = app.plan_event(event, flow, pinned_lookups={"balance_transaction": txn})
    assert [op.payload.get("CurrencyRef") for op in ops if op.action == "customer"] == [None]
    receipt = next(op for op in ops if op.action == "sales_receipt")
    assert receipt.payload["SalesReceiptLineAdd"][0]["Amount"] == Decimal("54.17")
    assert "ExchangeRate" not in receipt.payload
    from runner.language.planner import check_for_connection
    with pytest.raises(RenderError):
        check_for_connection({"Name": "x", "CurrencyRef": {"FullName": "EUR"}}, "quickbooks_desktop",
                             flow.routes[0], app.context())
    app.close()


def test_three_decimal_currencies_stay_in_home_amounts_in_a_multicurrency_file(project):
    """QuickBooks amounts have two decimals: a BHD sale is booked in dollars (Stripe's conversion) for
    the home-currency customer, even when the company file is multicurrency; a EUR sale is in euros."""
    cfg = project / "ledgerflow.yaml"
    cfg.write_text(cfg.read_text().replace("    type: quickbooks_desktop\n",
                                           "    type: quickbooks_desktop\n    multicurrency: true\n"))
    app = App()
    flow = app.flow("qbd-charges")
    bhd = event_from_fixture("charge.succeeded", overrides={"id": "ch_3Bhd", "amount": 12345, "currency": "bhd",
                                                            "transfer_data": None, "balance_transaction": "txn_b"})
    ops = {op.route: op for op in app.plan_event(bhd, flow, pinned_lookups={
        "balance_transaction": bt("txn_b", "ch_3Bhd", 3283, "charge", fee=125, rate="2.659643")})}
    assert ops["customer"].payload == {"Name": "Stripe Customers", "Notes": "Stripe sales in USD"}
    assert ops["receipt"].payload["CustomerRef"] == {"FullName": "Stripe Customers"}
    assert ops["receipt"].payload["SalesReceiptLineAdd"][0]["Amount"] == Decimal("32.83")
    assert "ExchangeRate" not in ops["receipt"].payload
    eur = event_from_fixture("charge.succeeded", overrides={"id": "ch_3Eur", "amount": 5000, "currency": "eur",
                                                            "transfer_data": None, "balance_transaction": "txn_e"})
    ops = {op.route: op for op in app.plan_event(eur, flow, pinned_lookups={
        "balance_transaction": bt("txn_e", "ch_3Eur", 5417, "charge", fee=187, rate="1.0834")})}
    assert ops["customer"].payload["CurrencyRef"] == {"FullName": "EUR"}
    assert ops["customer"].idempotency_key == "qbd:customer:Stripe Customers EUR"
    assert ops["receipt"].payload["ExchangeRate"] == Decimal("1.0834")
    assert ops["receipt"].payload["SalesReceiptLineAdd"][0]["Amount"] == Decimal("50.00")
    app.close()
