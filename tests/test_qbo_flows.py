"""The shipped QuickBooks Online flows, end to end from Stripe example events to the stand-in.

Each event's balance transaction is pinned (webhooks carry only its id; production fetches it)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
import yaml

from runner.language.fixtures import event_from_fixture
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


def bt(amount: int, *, fee: int = 0, category: str, rate: str | None = None, bid: str = "txn_1FlowTestBt00000000001",
       source: str | None = None) -> dict:
    return {"id": bid, "object": "balance_transaction", "amount": amount, "currency": "usd", "fee": fee,
            "fee_details": [{"amount": fee, "currency": "usd", "type": "stripe_fee"}] if fee else [],
            "net": amount - fee, "exchange_rate": rate, "reporting_category": category, "type": category,
            "created": 1234567890, "source": source}


DISPUTE_BT = {**bt(-100, fee=1500, category="dispute", bid="txn_1FlowTestDispute00001"), "type": "adjustment"}
CASES = [
    ("qbo-charges", "charge.succeeded", {"status": "succeeded", "paid": True, "transfer_data": None},
     bt(100, fee=59, category="charge"), {"SalesReceipt": Decimal("1.00"), "Purchase": Decimal("0.59")}),
    ("qbo-refunds", "refund.created", {"status": "succeeded", "balance_transaction": "txn_1FlowTestBt00000000001"},
     bt(-100, category="refund"), {"RefundReceipt": Decimal("1.00")}),
    ("qbo-disputes", "charge.dispute.funds_withdrawn", {"balance_transactions": [DISPUTE_BT]}, None,
     {"JournalEntry": None}),
    ("qbo-payouts", "payout.paid", {"status": "paid"}, bt(-1100, category="payout"), {"Transfer": Decimal("11.00")}),
    ("qbo-application-fees", "application_fee.created", {}, bt(100, category="platform_earning"),
     {"SalesReceipt": Decimal("1.00")}),
    ("qbo-transfers", "transfer.created", {}, bt(-1100, category="transfer"), {"JournalEntry": None}),
]


@pytest.fixture
def app(qbo, project_dir, stripe_fixtures, monkeypatch):   # noqa: F811
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", qbo.store_url)
    seed_chart(qbo.company)          # Refunds item, Dispute Fees, Connected Accounts Payable, ...
    path = project_dir / "ledgerflow.yaml"
    data = yaml.safe_load(path.read_text())
    data["connections"]["quickbooks_online"].update(base_url=qbo.url, token_url=qbo.url + "/oauth2/v1/tokens/bearer")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    from runner.app import App
    a = App()
    yield a
    a.close()


def deliver(app, ops):
    from runner.deliver.delivery import deliver_rows
    ids = [did for did, _ in app.store.add_deliveries(ops)]
    rows = app.store.claim("test-worker", ids=ids)
    deliver_rows(app, rows, worker="test-worker")
    return [app.store.delivery(i) for i in ids]


def plan(app, flow, event, pinned):
    return app.plan_event(event, flow, pinned_lookups={"balance_transaction": pinned} if pinned else None)


@pytest.mark.parametrize("flow_name,event_type,overrides,pinned,expected", CASES, ids=[c[0] for c in CASES])
def test_shipped_flow_previews_and_delivers(app, qbo, flow_name, event_type, overrides, pinned,  # noqa: F811
                                            expected):
    flow = app.flow(f"flows/{flow_name}.yaml")
    event = event_from_fixture(event_type, overrides=overrides)
    ops = plan(app, flow, event, pinned)
    assert {op.action for op in ops} and all(op.connection == "quickbooks_online" for op in ops)
    rows = deliver(app, ops)
    assert [r["state"] for r in rows] == ["sent"] * len(ops), [r["last_error"] for r in rows]
    for entity, amount in expected.items():
        [doc] = qbo.company.all(entity)[-1:]
        assert any(r["target_ref"] == f"{entity}:{doc['Id']}" for r in rows)
        if amount is not None:
            total = doc.get("TotalAmt", doc.get("Amount"))
            assert Decimal(str(total)) == amount
    assert qbo.company.trial_balance().errors == []
    # a duplicate webhook (another event id, same object) books nothing new
    again = event_from_fixture(event_type, overrides={**overrides, "metadata": {"dup": "1"}})
    count = sum(len(qbo.company.all(e)) for e in expected)
    rows = deliver(app, plan(app, flow, again, pinned))
    assert all(r["state"] == "sent" for r in rows) and sum(len(qbo.company.all(e)) for e in expected) == count


def test_foreign_charge_in_single_currency_company_books_the_settled_home_amount(app, qbo):  # noqa: F811
    flow = app.flow("flows/qbo-charges.yaml")
    event = event_from_fixture("charge.succeeded", overrides={"status": "succeeded", "paid": True, "currency": "eur",
                                                              "amount": 10000, "transfer_data": None})
    ops = plan(app, flow, event, bt(10834, fee=344, category="charge", rate="1.0834"))
    assert [r["state"] for r in deliver(app, ops)] == ["sent", "sent"]
    [doc] = qbo.company.all("SalesReceipt")
    assert doc["CurrencyRef"] == {"value": "USD"} and doc["TotalAmt"] == Decimal("108.34")
    assert "EUR 100.00 at 1.0834" in doc["PrivateNote"]
    tb = qbo.company.trial_balance()
    assert tb["Stripe Clearing"] == Decimal("104.90") and tb["Sales"] == Decimal("-108.34")


@pytest.mark.one_store
def test_foreign_currency_ref_refused_at_preview_when_company_has_no_multicurrency(app, project_dir):
    """A user's mapping that sends a foreign CurrencyRef fails at preview, naming the mapping."""
    from runner.core.errors import RenderError
    (project_dir / "mappings" / "quickbooks_online" / "charge_in_presentment.yaml").write_text(
        (project_dir / "mappings" / "quickbooks_online" / "charge_sales_receipt.yaml").read_text()
        .replace("{{ doc.currency }}", "{{ posting.presentment_currency }}"))
    flow_text = (project_dir / "flows" / "qbo-charges.yaml").read_text().replace(
        "charge_sales_receipt.yaml", "charge_in_presentment.yaml").replace("name: qbo-charges", "name: my-charges")
    (project_dir / "flows" / "my-charges.yaml").write_text(flow_text)
    flow = app.flow("flows/my-charges.yaml")
    event = event_from_fixture("charge.succeeded", overrides={"status": "succeeded", "paid": True, "currency": "eur",
                                                              "transfer_data": None})
    with pytest.raises(RenderError) as exc:
        plan(app, flow, event, bt(108, category="charge", rate="1.0834"))
    msg = str(exc.value)
    assert "charge_in_presentment.yaml" in msg and "EUR" in msg and "multicurrency: false" in msg


def test_foreign_currency_with_multicurrency_sends_rate_and_currency_customer(app, qbo):  # noqa: F811
    app.project.connections["quickbooks_online"]["multicurrency"] = True
    qbo.company.multicurrency = True
    flow = app.flow("flows/qbo-charges.yaml")
    event = event_from_fixture("charge.succeeded", overrides={"status": "succeeded", "paid": True, "currency": "eur",
                                                              "amount": 110, "transfer_data": None})
    receipt, fee = plan(app, flow, event, bt(121, fee=30, category="charge", rate="1.1"))
    assert receipt.payload["ExchangeRate"] == Decimal("1.1")     # 1.10 EUR x 1.1 = 1.21 USD: Stripe's amount
    assert receipt.payload["CustomerRef"] == {"name": "Stripe Customers EUR", "currency": "EUR"}
    assert fee.payload["CurrencyRef"] == {"value": "USD"}
    assert [r["state"] for r in deliver(app, [receipt, fee])] == ["sent", "sent"]
    doc = qbo.company.all("SalesReceipt")[-1]
    assert doc["CurrencyRef"] == {"value": "EUR"} and doc["ExchangeRate"] == Decimal("1.1")
    assert doc["HomeTotalAmt"] == Decimal("1.21")
    assert qbo.company.find("Customer", "Stripe Customers EUR")["CurrencyRef"] == {"value": "EUR"}
    assert qbo.company.trial_balance()["Stripe Clearing"] == Decimal("0.91")


def test_run_command_path_through_prefect(app, qbo, prefect_api, monkeypatch):  # noqa: F811
    from runner.core import jsonio
    from runner.deliver.run import run_event
    flow = app.flow("flows/qbo-payouts.yaml")
    event = event_from_fixture("payout.paid", overrides={"status": "paid"})
    # the payout's balance transaction, as the fetch (or its cache) gives it
    from runner.language.posting import source
    real = source.PostingSource.for_event
    monkeypatch.setattr(source.PostingSource, "for_event",
                        lambda self, ev, pinned_bt=None: real(self, ev, bt(-1100, category="payout")))
    result = run_event(app, flow, event, jsonio.dumps(event))
    assert [r["state"] for r in result.rows] == ["sent"] and len(qbo.company.all("Transfer")) == 1
    assert "delivered" in result.lines()[0] and "Transfer:" in result.lines()[0]
    json.dumps(result.lines())
