"""The shipped QuickBooks Online flows keep books that balance (ACCOUNTING.md, issue #12).

A seeded month of Stripe activity (tests/books/scenario.py: platform sales in six
currencies, destination and direct Connect charges, application fees and their
refunds, partial/full refunds, disputes lost and won, an adjustment, weekly payouts,
one failed; events duplicated and out of order) goes through every ``qbo-*`` flow,
is delivered to the QuickBooks Online stand-in, and the stand-in's own ledger (the
postings QBO makes for each document it accepted, in home currency, scored by
Beancount) is checked against Stripe's balance transactions:

* debits = credits, every document balances;
* Stripe Clearing = the Stripe balance (less what no event books: the adjustment);
* every movement's booked clearing amount = its balance transaction's net, so each
  paid payout nets clearing to zero (residue: exactly the unbooked adjustment);
* revenue, refunds, Stripe fees, chargebacks, dispute fees, application fees, bank
  = what the balance transactions say; no movement booked twice;
* single-currency books receive home amounts only; multicurrency books receive the
  presentment currency with a rate and a customer per currency, and end with the
  same home-currency balances.
"""

from __future__ import annotations

import re
from collections import defaultdict
from decimal import Decimal
from typing import Mapping

import pytest
import yaml

from runner.language.posting.events import movement_of
from tests.books.scenario import generate
from tests.qbo_support import qbo  # noqa: F401 - fixture
from tests.standins.qbo import ITEMS


def seed_chart(company) -> None:
    """The stand-in's chart (Refunds item, Dispute Fees, Connected Accounts Payable, ...), and each
    item's income account (tests/qbo_support.py seeds some items before their accounts exist)."""
    company.seed_chart()
    for item in company.all("Item"):
        account = company.find("Account", ITEMS.get(item["Name"], ""))
        if account is not None and "IncomeAccountRef" not in item:
            item.update(Type="Service", IncomeAccountRef={"value": account["Id"], "name": account["Name"]})

FLOWS = ["qbo-charges", "qbo-refunds", "qbo-disputes", "qbo-application-fees", "qbo-transfers", "qbo-payouts"]
BOOKED_BY_NO_EVENT = {"other_adjustment"}      # Stripe sends no event for a balance adjustment


def _usd(minor: int) -> Decimal:
    return Decimal(minor).scaleb(-2)


@pytest.fixture
def app(qbo, project_dir, stripe_fixtures, monkeypatch):   # noqa: F811
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", qbo.store_url)
    seed_chart(qbo.company)
    path = project_dir / "ledgerflow.yaml"
    data = yaml.safe_load(path.read_text())
    data["connections"]["quickbooks_online"].update(base_url=qbo.url, token_url=qbo.url + "/oauth2/v1/tokens/bearer")
    # connected accounts' EUR balances are converted when their postings are built (then skipped): no network
    data["settings"].update(fx_provider="fixed", fx_rates={"EUR/USD": "1.0842"})
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    from runner.app import App
    a = App()
    yield a
    a.close()


def deliver(app, ops) -> list[dict]:
    from runner.deliver.delivery import deliver_rows
    ids = sorted({did for did, _ in app.store.add_deliveries(ops)})
    rows = app.store.claim("test-worker", ids=ids, limit=len(ids) + 1)
    deliver_rows(app, rows, worker="test-worker")
    return [app.store.delivery(i) for i in ids]


def book(app, sc, events=None) -> tuple[list, list[dict]]:
    """Plan every event through every qbo flow (balance transactions as Stripe holds them), deliver."""
    flows = [app.flow(f"flows/{name}.yaml") for name in FLOWS]
    ops = []
    for ev in events if events is not None else sc.events:
        for flow in flows:
            if not flow.matches(ev["type"]):
                continue
            mv = movement_of(ev)
            pinned = None if isinstance(mv.bt, Mapping) else sc.balance_transactions[mv.bt_id][0]
            ops += app.plan_event(ev, flow, pinned_lookups={"balance_transaction": pinned} if pinned else None)
    rows = deliver(app, ops)
    return ops, rows


def movement_key(bt: dict) -> str:
    """The id of what moved the money (ACCOUNTING.md): the source, or for disputes and payout
    failures the balance transaction itself."""
    if bt["reporting_category"] in ("dispute", "dispute_reversal", "payout_reversal"):
        return bt["id"]
    return bt["source"]


def expected_balances(sc) -> dict[str, Decimal]:
    """The platform's books from its balance transactions alone (USD settlement = home)."""
    charges = {obj["id"]: obj for obj, acct, _ in sc.objects if obj["object"] == "charge" and acct is None}
    out: dict[str, Decimal] = defaultdict(Decimal)
    for bt, acct in sc.balance_transactions.values():
        if acct is not None:
            continue
        cat = bt["reporting_category"]
        if cat in BOOKED_BY_NO_EVENT:
            continue
        amount, fee = _usd(bt["amount"]), _usd(bt["fee"])
        out["Stripe Clearing"] += _usd(bt["net"])
        if cat == "charge":
            dest = (charges[bt["source"]].get("transfer_data") or {}).get("destination")
            out["Connect (payable + fee revenue)" if dest else "Sales"] -= amount
            out["Stripe Fees"] += fee
        elif cat in ("refund", "refund_failure"):
            out["Sales Refunds"] -= amount
            out["Stripe Fees"] += fee
        elif cat in ("dispute", "dispute_reversal"):
            out["Chargebacks"] -= amount
            out["Dispute Fees"] += fee
        elif cat in ("platform_earning", "platform_earning_refund"):
            out["Connect (payable + fee revenue)"] -= amount
            out["Stripe Fees"] += fee
        elif cat in ("transfer", "transfer_reversal"):
            out["Connect (payable + fee revenue)"] -= amount
        elif cat in ("payout", "payout_reversal"):
            out["Operating Bank"] -= amount
        else:
            raise AssertionError(f"unexpected category {cat}")
    return dict(out)


def actual_balances(tb) -> dict[str, Decimal]:
    out = {k: v for k, v in tb.balances.items() if v}
    connect = out.pop("Connected Accounts Payable", Decimal(0)) + out.pop("Application Fee Revenue", Decimal(0))
    if connect:
        out["Connect (payable + fee revenue)"] = connect
    return out


def booked_clearing_by_movement(qbo, ops, rows) -> dict[str, Decimal]:   # noqa: F811
    """Clearing postings per movement key, through the delivery rows (idempotency key -> document)."""
    keys = {r["idempotency_key"]: r["target_ref"] for r in rows}
    doc_of = {ref: key.split(":", 1)[1] for key, ref in keys.items() if ref}
    out: dict[str, Decimal] = defaultdict(Decimal)
    for txn in qbo.company.journal():
        ref = f"{txn.doc_type}:{txn.id}"
        assert ref in doc_of, f"{ref} in the books was not delivered by a qbo flow"
        out[doc_of[ref]] += sum((p.amount for p in txn.postings if p.account == "Stripe Clearing"), Decimal(0))
    return dict(out)


@pytest.mark.parametrize("seed", [0, 7])
def test_a_month_in_single_currency_books(app, qbo, seed):   # noqa: F811
    sc = generate(seed)
    ops, rows = book(app, sc)
    assert [r["last_error"] for r in rows if r["state"] != "sent"] == []
    tb = qbo.company.trial_balance()
    assert tb.errors == []
    assert sum(tb.balances.values(), Decimal(0)) == 0                      # debits = credits
    assert actual_balances(tb) == {k: v for k, v in expected_balances(sc).items() if v}
    truth = sc.truth(None)
    adjustments = truth["net"].get("other_adjustment", Decimal(0))
    assert tb["Stripe Clearing"] == truth["balance"] - adjustments
    # single-currency books never receive a foreign amount
    for entity in ("SalesReceipt", "RefundReceipt", "Purchase", "JournalEntry", "Transfer"):
        assert {d["CurrencyRef"]["value"] for d in qbo.company.all(entity)} <= {"USD"}
    assert all(p.currency is None for t in qbo.company.journal() for p in t.postings)
    # one home-currency customer for sales and refunds, one per connected account for its application fees
    customers = {c["DisplayName"]: c["CurrencyRef"]["value"] for c in qbo.company.all("Customer")}
    assert customers == {"Stripe Customers": "USD", **{f"Connect {a}": "USD" for a in sc.accounts}}

    # every movement booked once, at its balance transaction's net; each paid payout nets clearing to zero
    booked = booked_clearing_by_movement(qbo, ops, rows)
    platform = {tid: bt for tid, (bt, acct) in sc.balance_transactions.items() if acct is None}
    for tid, bt in platform.items():
        if bt["reporting_category"] not in BOOKED_BY_NO_EVENT:
            assert booked.get(movement_key(bt), Decimal(0)) == _usd(bt["net"]), (tid, bt["reporting_category"])
    paid = [po for po, acct in sc.payouts if acct is None and po["status"] == "paid"]
    assert paid
    for po in paid:
        txns = sc.payout_transactions(po["id"]) + [platform[po["balance_transaction"]]]
        residue = sum((booked.get(movement_key(t), Decimal(0)) for t in txns), Decimal(0))
        unbooked = sum((_usd(t["net"]) for t in txns if t["reporting_category"] in BOOKED_BY_NO_EVENT), Decimal(0))
        assert residue == -unbooked, po["id"]

    # the same events again (a replay, a catch-up): nothing new is booked
    count = len(qbo.company.journal())
    _, again = book(app, sc, sc.chronological())
    assert all(r["state"] == "sent" for r in again) and len(qbo.company.journal()) == count


def test_a_month_in_multicurrency_books(app, qbo):   # noqa: F811
    sc = generate(0)
    app.project.connections["quickbooks_online"]["multicurrency"] = True
    qbo.company.multicurrency = True
    ops, rows = book(app, sc)
    assert [r["last_error"] for r in rows if r["state"] != "sent"] == []
    tb = qbo.company.trial_balance()
    assert tb.errors == [] and sum(tb.balances.values(), Decimal(0)) == 0
    # the same home-currency books as single-currency: Stripe's settled amounts, to the cent
    assert actual_balances(tb) == {k: v for k, v in expected_balances(sc).items() if v}

    # sales and refunds in their presentment currency, with a rate and a customer in that currency
    customers = {c["Id"]: c for c in qbo.company.all("Customer")}
    foreign = set()
    for entity in ("SalesReceipt", "RefundReceipt"):
        for doc in qbo.company.all(entity):
            cur = doc["CurrencyRef"]["value"]
            customer = customers[doc["CustomerRef"]["value"]]
            assert customer["CurrencyRef"]["value"] == cur
            if cur != "USD":
                foreign.add(cur)
                assert customer["DisplayName"].endswith(f" {cur}") and doc["ExchangeRate"] > 0
    assert {"EUR", "GBP", "JPY"} <= foreign
    # fees, disputes, transfers and payouts stay in the home currency
    for entity in ("Purchase", "JournalEntry", "Transfer"):
        assert {d["CurrencyRef"]["value"] for d in qbo.company.all(entity)} == {"USD"}


def test_a_refund_and_its_update_book_once_and_partial_refunds_each_once(app, qbo):   # noqa: F811
    sc = generate(0)
    refunds = [e for e in sc.events if e["type"] in ("refund.created", "refund.updated", "charge.refunded")
               and "account" not in e]
    ops, rows = book(app, sc, refunds + refunds)
    succeeded = {e["data"]["object"]["id"] for e in refunds if e["type"] == "refund.updated"}
    assert {re.sub(r"^.*:", "", r["idempotency_key"]) for r in rows if r["flow"] == "qbo-refunds"} == succeeded
    assert len(qbo.company.all("RefundReceipt")) == len(succeeded)


def test_destination_charges_leave_nothing_payable_once_transferred(app, qbo):   # noqa: F811
    sc = generate(0)
    book(app, sc)
    tb = qbo.company.trial_balance()
    assert tb["Connected Accounts Payable"] == 0 and tb["Application Fee Revenue"] < 0
