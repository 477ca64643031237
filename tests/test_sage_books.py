"""The shipped Sage flows keep books that balance: a month of Stripe movements (USD, EUR and JPY
charges, partial and repeated refunds, a dispute lost then won, Connect application fees, a
destination charge and its transfer, a connected account's own charge, a failed payout, duplicate
and out-of-order events) planned through every sage-* flow of the shipped project, delivered to
the Sage stand-in over loopback HTTP, and scored by the stand-in's base-currency ledger (Beancount
computes the trial balance). Both payout modes, single-currency and multicurrency businesses."""

from __future__ import annotations

from decimal import Decimal

import pytest
from cryptography.fernet import Fernet

from connectors.base import ErrorKind, Item
from connectors.oauth import TokenSet, TokenStore
from connectors.sage.actions import check_payload
from runner.core import jsonio
from runner.store import open_store
from runner.store.tokens import TokenRows
from tests.standins.sage import SageStandIn
from tests.support.servers import serve_app

D = Decimal
T = 1772400000          # 2026-03-01 21:20 UTC (16:20 in New York, the project's timezone)


# ---- the scenario: events and the balance transactions Stripe would return for them ------------

def bt(id_, amount, category, *, fee=0, rate=None, fee_type="stripe_fee", created=T, source=None):
    return {"id": id_, "object": "balance_transaction", "amount": amount, "currency": "usd", "fee": fee,
            "fee_details": [{"amount": fee, "currency": "usd", "type": fee_type}] if fee else [],
            "net": amount - fee, "exchange_rate": rate, "reporting_category": category,
            "type": {"charge": "charge", "refund": "refund", "dispute": "adjustment", "dispute_reversal": "adjustment",
                     "platform_earning": "application_fee", "platform_earning_refund": "application_fee_refund",
                     "transfer": "transfer", "payout": "payout", "payout_reversal": "payout_failure"}[category],
            "created": created, "source": source}


def charge(id_, amount, currency, bt_id, *, customer=None, **extra):
    return {"id": id_, "object": "charge", "amount": amount, "currency": currency, "customer": customer,
            "balance_transaction": bt_id, "paid": True, "status": "succeeded", "created": T, "description": None,
            "billing_details": {"name": "Ada Lovelace" if customer else None, "email": None},
            "amount_refunded": 0, "transfer_data": None, "application_fee_amount": None, **extra}


def refund(id_, amount, currency, charge_id, bt_id):
    return {"id": id_, "object": "refund", "amount": amount, "currency": currency, "charge": charge_id,
            "balance_transaction": bt_id, "status": "succeeded", "created": T + 86400}


def payout(id_, amount, bt_id, **extra):
    return {"id": id_, "object": "payout", "amount": amount, "currency": "usd", "balance_transaction": bt_id,
            "arrival_date": T + 3 * 86400, "created": T + 2 * 86400, "status": "paid", "automatic": True, **extra}


def scenario() -> list[tuple[str, dict, dict | None, str | None]]:
    """(event type, object, pinned balance transaction, connected account), in delivery order."""
    dp_out = bt("txn_dpC1", -3350, "dispute", fee=1500, rate="0.0067", source="dp_C")
    dp_back = bt("txn_dpC2", 3350, "dispute_reversal", rate="0.0067", created=T + 5 * 86400, source="dp_C")
    dispute = {"id": "dp_C", "object": "dispute", "amount": 5000, "currency": "jpy", "charge": "ch_C",
               "created": T + 86400, "balance_transactions": [dp_out]}
    fee_refund = {"id": "fr_X", "object": "fee_refund", "amount": 200, "currency": "usd", "created": T + 86400,
                  "balance_transaction": "txn_frX", "fee": "fee_X"}
    return [
        # a refund that arrives before its charge: booked on the shared contact, still balanced
        ("refund.created", refund("re_A2", 2000, "usd", "ch_A", "txn_reA2"), bt("txn_reA2", -2000, "refund"), None),
        ("charge.succeeded", charge("ch_A", 10000, "usd", "txn_A", customer="cus_A"),
         bt("txn_A", 10000, "charge", fee=320), None),
        ("charge.succeeded", charge("ch_A", 10000, "usd", "txn_A", customer="cus_A"),       # Stripe retried it
         bt("txn_A", 10000, "charge", fee=320), None),
        ("charge.succeeded", charge("ch_B", 5000, "eur", "txn_B"),
         bt("txn_B", 5417, "charge", fee=187, rate="1.0834"), None),
        ("charge.succeeded", charge("ch_C", 5000, "jpy", "txn_C", customer="cus_C"),
         bt("txn_C", 3350, "charge", fee=127, rate="0.0067"), None),
        # a connected account's direct charge: its books, not the platform's; the platform books its fee
        ("charge.succeeded", charge("ch_X", 8000, "usd", "txn_X", application_fee_amount=500),
         {**bt("txn_X", 8000, "charge", fee=532), "fee_details": [
             {"amount": 32 + 500 - 500, "currency": "usd", "type": "stripe_fee"},
             {"amount": 500, "currency": "usd", "type": "application_fee"}]}, "acct_X"),
        ("application_fee.created", {"id": "fee_X", "object": "application_fee", "amount": 500, "currency": "usd",
                                     "account": "acct_X", "charge": "ch_X", "balance_transaction": "txn_feeX",
                                     "created": T, "refunds": {"object": "list", "data": []}},
         bt("txn_feeX", 500, "platform_earning"), None),
        ("application_fee.refunded", {"id": "fee_X", "object": "application_fee", "amount": 500, "currency": "usd",
                                      "account": "acct_X", "charge": "ch_X", "balance_transaction": "txn_feeX",
                                      "amount_refunded": 200, "created": T,
                                      "refunds": {"object": "list", "data": [fee_refund]}},
         bt("txn_frX", -200, "platform_earning_refund"), None),
        # a destination charge (agent, transfer_data[amount] form): the transfer to the connected account
        # is not revenue; what the platform keeps is
        ("charge.succeeded", charge("ch_D", 20000, "usd", "txn_D", transfer_data={"destination": "acct_Y",
                                                                                  "amount": 18000}),
         bt("txn_D", 20000, "charge", fee=610), None),
        ("transfer.created", {"id": "tr_D", "object": "transfer", "amount": 18000, "currency": "usd",
                              "destination": "acct_Y", "balance_transaction": "txn_trD", "created": T},
         bt("txn_trD", -18000, "transfer"), None),
        ("refund.created", refund("re_A1", 3000, "usd", "ch_A", "txn_reA1"), bt("txn_reA1", -3000, "refund"), None),
        ("refund.updated", refund("re_A1", 3000, "usd", "ch_A", "txn_reA1"), bt("txn_reA1", -3000, "refund"), None),
        ("charge.refunded", {**charge("ch_A", 10000, "usd", "txn_A", customer="cus_A"), "amount_refunded": 5000},
         None, None),                                    # cumulative: no flow books it
        ("refund.created", refund("re_B1", 1000, "eur", "ch_B", "txn_reB1"),
         bt("txn_reB1", -1090, "refund", rate="1.09"), None),
        ("charge.dispute.funds_withdrawn", dispute, None, None),
        ("charge.dispute.funds_reinstated", {**dispute, "balance_transactions": [dp_out, dp_back]}, None, None),
        ("payout.paid", payout("po_1", 11233, "txn_po1"), bt("txn_po1", -11233, "payout"), None),
        ("payout.paid", payout("po_2", 1000, "txn_po2"), bt("txn_po2", -1000, "payout"), None),
        ("payout.failed", payout("po_2", 1000, "txn_po2", status="failed", failure_balance_transaction="txn_po2f"),
         bt("txn_po2f", 1000, "payout_reversal"), None),
        ("payout.paid", payout("po_3", 1000, "txn_po3"), bt("txn_po3", -1000, "payout"), None),
    ]


# What Stripe's balance transactions say, in USD (computed by hand from the scenario above).
CLEARING_BEFORE_PAYOUTS = (D("96.80") + D("52.30") + D("32.23") + D("193.90") - D("180.00") + D("5.00") - D("2.00")
                           - D("30.00") - D("20.00") - D("10.90") - D("48.50") + D("33.50"))
EXPECTED = {
    "Stripe Clearing": D("0.00"),                       # every payout nets clearing to zero
    "Operating Bank": D("122.33"),
    "Sales": -(D("100.00") + D("54.17") + D("33.50")),
    "Sales Refunds": D("30.00") + D("20.00") + D("10.90"),
    "Stripe Fees": D("3.20") + D("1.87") + D("1.27") + D("6.10"),
    "Chargebacks": D("0.00"),                           # lost, then won
    "Dispute Fees": D("15.00"),
    "Application Fee Revenue": -(D("20.00") + D("5.00") - D("2.00")),
    "Connected Accounts Payable": D("0.00"),
    "Debtors Control": D("0.00"),
    "FX Gain/Loss": D("0.00"),                          # documents carry Stripe's own rate
}


# ---- the harness ------------------------------------------------------------------------------

@pytest.fixture
def books(project_dir, tmp_path, monkeypatch):
    """Make a project + stand-in pair: payout mode and multicurrency chosen per test."""
    made = []

    def make(*, mode: str = "transfer", multicurrency: bool = False):
        standin = SageStandIn(multicurrency=multicurrency)
        server = serve_app(standin.app())
        srv = server.__enter__()
        made.append(server)
        cfg = project_dir / "ledgerflow.yaml"
        text = cfg.read_text()
        text = text.replace("    client_secret: {env: SAGE_CLIENT_SECRET}\n",
                            "    client_secret: {env: SAGE_CLIENT_SECRET}\n"
                            f"    base_url: {srv.url}/v3.1\n    token_url: {srv.url}/token\n"
                            f"    multicurrency: {'true' if multicurrency else 'false'}\n", 1)
        text = text.replace("sage_payout_mode: transfer", f"sage_payout_mode: {mode}")
        cfg.write_text(text)
        store_url = f"sqlite:///{tmp_path / 'store.db'}"
        monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
        monkeypatch.setenv("LEDGERFLOW_TOKEN_KEY", Fernet.generate_key().decode())
        monkeypatch.setenv("SAGE_CLIENT_ID", standin.client_id)
        monkeypatch.setenv("SAGE_CLIENT_SECRET", standin.client_secret)
        tokens = TokenSet.from_response(standin.seed_tokens())
        tokens.extra["business_id"] = standin.business_id
        TokenStore(TokenRows(open_store(store_url))).write("sage", tokens)
        from runner.app import App
        from runner.language.spec import load_project
        return standin, App(load_project(cfg))
    yield make
    for server in made:
        server.__exit__(None, None, None)


def plan_all(app, events) -> list:
    """Every operation the sage-* flows plan for these events, in order."""
    ops = []
    for i, (etype, obj, pinned, account) in enumerate(events):
        event = {"id": f"evt_{i:03d}", "object": "event", "type": etype, "created": T, "data": {"object": obj}}
        if account:
            event["account"] = account
        for flow in app.flows_for(etype):
            if flow.name.startswith("sage-"):
                ops.extend(app.plan_event(event, flow, pinned_lookups={"balance_transaction": pinned}
                                          if pinned else None))
    return ops


def deliver(app, ops) -> list:
    """As the store would: one delivery per idempotency key, its payload stored as JSON."""
    seen, outcomes = set(), []
    conn = app.connector("sage")
    for n, op in enumerate(ops):
        if op.idempotency_key in seen:
            continue
        seen.add(op.idempotency_key)
        payload = jsonio.loads(jsonio.dumps(op.payload))
        [out] = conn.deliver([Item(n + 1, op.idempotency_key, op.action, payload, created_at=float(T))])
        assert out.ok, (op.idempotency_key, out.error)
        outcomes.append(out)
    return outcomes


def check_books(standin) -> dict:
    tb = standin.trial_balance()
    assert tb.errors == []
    assert sum(tb.balances.values(), D(0)) == 0                     # debits = credits
    got = {acc: tb[acc] for acc in EXPECTED}
    assert got == EXPECTED
    assert CLEARING_BEFORE_PAYOUTS == D("122.33")
    return tb.balances


# ---- the books ---------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["transfer", "summary"])
def test_single_currency_books_balance_in_home_currency(books, mode):
    standin, app = books(mode=mode)
    ops = plan_all(app, scenario())
    keys = [op.idempotency_key for op in ops]
    # the connected account's charge is skipped; charge.refunded books nothing; duplicates share a key
    assert not any("ch_X" in k for k in keys)
    assert keys.count("sage:charge:ch_A") == 2 and keys.count("sage:refund:re_A1") == 2
    deliver(app, ops)
    check_books(standin)
    # single-currency books never receive a foreign amount
    for resource in ("sales_invoices", "sales_credit_notes", "contact_payments", "other_payments", "contacts"):
        assert {r["currency"]["id"] for r in standin.records(resource)} <= {"USD"}, resource
    assert len(standin.records("sales_invoices")) == 3 and len(standin.records("sales_credit_notes")) == 3
    journals = standin.records("journals")
    # destination charge, transfer, application fee and its refund, dispute out and back (+ 4 payouts in summary)
    assert len(journals) == (6 if mode == "transfer" else 10)
    assert len(standin.records("bank_transfers")) == (4 if mode == "transfer" else 0)
    # refunds go on the refunded charge's contact once its invoice is there
    invoices = {i["notes"].split()[2]: i for i in standin.records("sales_invoices")}
    notes = {n["notes"].split()[2]: n for n in standin.records("sales_credit_notes")}
    assert notes["re_A1"]["contact"]["id"] == invoices["ch_A"]["contact"]["id"]
    assert notes["re_A1"]["original_invoice_id"] == invoices["ch_A"]["id"]
    assert "original_invoice_id" not in notes["re_A2"]         # it came before its charge


@pytest.mark.parametrize("mode", ["transfer", "summary"])
def test_multicurrency_books_take_presentment_currency_and_balance(books, mode):
    standin, app = books(mode=mode, multicurrency=True)
    deliver(app, plan_all(app, scenario()))
    check_books(standin)
    contacts = {c["reference"]: c["currency"]["id"] for c in standin.records("contacts")}
    assert contacts == {"STRIPE-CUSTOMERS": "USD", "cus_A": "USD", "STRIPE-CUSTOMERS-EUR": "EUR", "cus_C-JPY": "JPY"}
    invoices = {i["notes"].split()[2]: i for i in standin.records("sales_invoices")}
    eur, jpy = invoices["ch_B"], invoices["ch_C"]
    assert (eur["currency"]["id"], eur["total_amount"], eur["base_currency_total_amount"]) == ("EUR", D("50.00"),
                                                                                              D("54.17"))
    assert (jpy["currency"]["id"], jpy["total_amount"], jpy["base_currency_total_amount"]) == ("JPY", D("5000"),
                                                                                              D("33.50"))
    # Sage's exchange_rate is foreign units per base unit
    assert D("0.92") < eur["exchange_rate"] < D("0.93") and D("149") < jpy["exchange_rate"] < D("150")
    notes = {n["notes"].split()[2]: n for n in standin.records("sales_credit_notes")}
    refund_b = notes["re_B1"]
    assert refund_b["contact"]["id"] == eur["contact"]["id"] and refund_b["currency"]["id"] == "EUR"
    assert (refund_b["total_amount"], refund_b["base_currency_total_amount"]) == (D("10.00"), D("10.90"))
    # fees and journals stay in the base currency
    assert {p["currency"]["id"] for p in standin.records("other_payments")} == {"USD"}


def test_replaying_every_operation_books_nothing_twice(books):
    standin, app = books()
    ops = plan_all(app, scenario())
    deliver(app, ops)
    before = {r: len(standin.records(r)) for r in ("contacts", "sales_invoices", "sales_credit_notes",
                                                   "contact_payments", "other_payments", "journals",
                                                   "bank_transfers")}
    fresh = app.connector("sage")
    fresh._contacts.clear()                       # another worker, after lost responses
    outs = deliver(app, ops)
    assert all(o.detail.get("duplicate") for o in outs)
    assert {r: len(standin.records(r)) for r in before} == before
    check_books(standin)


def test_fee_never_books_without_its_sale(books):
    """The fee travels in the sale's operation: a sale Sage refuses books no fee either."""
    standin, app = books()
    events = [e for e in scenario() if e[0] == "charge.succeeded" and e[1]["id"] == "ch_A"][:1]
    [op] = plan_all(app, events)
    assert op.action == "sales_invoice_payment" and op.payload["fees"]["lines"][0]["amount"] == D("3.20")
    standin.fail("POST", "/sales_invoices", 422)
    [out] = app.connector("sage").deliver([Item(1, op.idempotency_key, op.action,
                                                jsonio.loads(jsonio.dumps(op.payload)))])
    assert not out.ok
    assert standin.records("other_payments") == [] and standin.trial_balance().balances.get("Stripe Clearing",
                                                                                            D(0)) == 0


# ---- currency rules at plan time and in the connector --------------------------------------------

def test_a_foreign_currency_for_single_currency_books_fails_at_plan_time():
    payload = {"contact": {"reference": "X", "name": "X", "currency": "EUR"}, "currency": "EUR"}
    [problem] = check_payload("sales_invoice_payment", payload, {"type": "sage"}, {"home_currency": "USD"})
    assert "EUR is not the business's base currency USD" in problem
    assert check_payload("sales_invoice_payment", payload, {"type": "sage", "multicurrency": True},
                         {"home_currency": "USD"}) == []
    assert check_payload("sales_invoice_payment", {"contact": {"currency": "USD"}}, {"type": "sage"},
                         {"home_currency": "USD"}) == []


def test_a_contact_found_in_another_currency_is_refused_not_used(books):
    standin, app = books(multicurrency=True)
    conn = app.connector("sage")
    conn.contact_id({"reference": "cus_Z", "name": "Zed", "currency": "USD"})
    conn._contacts.clear()
    from connectors.base import TargetError
    with pytest.raises(TargetError) as err:
        conn.contact_id({"reference": "cus_Z", "name": "Zed", "currency": "EUR"})
    assert err.value.kind == ErrorKind.PERMANENT and "is a USD contact" in str(err.value)


def test_destination_charge_with_transfer_amount_nets_the_payable(books):
    standin, app = books()
    events = [
        ("charge.succeeded", charge("ch_E", 10000, "usd", "txn_E", transfer_data={"destination": "acct_Y",
                                                                                  "amount": 8500}),
         bt("txn_E", 10000, "charge", fee=320), None),
        ("transfer.created", {"id": "tr_E", "object": "transfer", "amount": 8500, "currency": "usd",
                              "destination": "acct_Y", "balance_transaction": "txn_trE", "created": T},
         bt("txn_trE", -8500, "transfer"), None),
    ]
    deliver(app, plan_all(app, events))
    tb = standin.trial_balance()
    assert tb.errors == [] and tb["Stripe Clearing"] == D("11.80")
    assert tb["Connected Accounts Payable"] == 0 and tb["Application Fee Revenue"] == D("-15.00")
