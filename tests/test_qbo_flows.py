"""The shipped QuickBooks Online flows, end to end from Stripe example events to the stand-in."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
import yaml

from runner.fixtures import event_from_fixture
from tests.qbo_support import qbo  # noqa: F401 - fixture

CASES = [
    ("qbo-charges", "charge.succeeded", {"status": "succeeded", "paid": True,
                                         "balance_transaction": {"id": "txn_1", "object": "balance_transaction",
                                                                 "amount": 100, "fee": 59, "currency": "usd",
                                                                 "exchange_rate": None}},
     {"SalesReceipt": Decimal("1.00"), "Purchase": Decimal("0.59")}),
    ("qbo-refunds", "refund.created", {"status": "succeeded"}, {"RefundReceipt": Decimal("1.00")}),
    ("qbo-disputes", "charge.dispute.closed", {"status": "lost"}, {"JournalEntry": None}),
    ("qbo-payouts", "payout.paid", {}, {"Transfer": Decimal("11.00")}),
    ("qbo-application-fees", "application_fee.created", {}, {"SalesReceipt": Decimal("1.00")}),
]


@pytest.fixture
def app(qbo, project_dir, stripe_fixtures, monkeypatch):   # noqa: F811
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", qbo.store_url)
    path = project_dir / "ledgerflow.yaml"
    data = yaml.safe_load(path.read_text())
    data["connections"]["quickbooks_online"].update(base_url=qbo.url, token_url=qbo.url + "/oauth2/v1/tokens/bearer")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    from runner.app import App
    a = App()
    yield a
    a.close()


def deliver(app, ops):
    from runner.delivery import deliver_rows
    ids = [did for did, _ in app.store.add_deliveries(ops)]
    rows = app.store.claim("test-worker", ids=ids)
    deliver_rows(app, rows, worker="test-worker")
    return [app.store.delivery(i) for i in ids]


@pytest.mark.parametrize("flow_name,event_type,overrides,expected", CASES, ids=[c[0] for c in CASES])
def test_shipped_flow_previews_and_delivers(app, qbo, flow_name, event_type, overrides, expected):  # noqa: F811
    flow = app.flow(f"flows/{flow_name}.yaml")
    event = event_from_fixture(event_type, overrides=overrides)
    ops = app.plan_event(event, flow)
    assert {op.action for op in ops} and all(op.connection == "quickbooks_online" for op in ops)
    rows = deliver(app, ops)
    assert [r["state"] for r in rows] == ["sent"] * len(ops), [r["last_error"] for r in rows]
    for entity, amount in expected.items():
        [doc] = qbo.company.all(entity)[-1:]
        assert any(r["target_ref"] == f"{entity}:{doc['Id']}" for r in rows)
        if amount is not None:
            total = doc.get("TotalAmt", doc.get("Amount"))
            assert Decimal(str(total)) == amount
    # a duplicate webhook (another event id, same object) books nothing new
    again = event_from_fixture(event_type, overrides={**overrides, "metadata": {"dup": "1"}})
    count = sum(len(qbo.company.all(e)) for e in expected)
    rows = deliver(app, app.plan_event(again, flow))
    assert all(r["state"] == "sent" for r in rows) and sum(len(qbo.company.all(e)) for e in expected) == count


def test_foreign_currency_refused_at_preview_when_company_has_no_multicurrency(app):
    from runner.errors import RenderError
    flow = app.flow("flows/qbo-charges.yaml")
    event = event_from_fixture("charge.succeeded", overrides={"status": "succeeded", "paid": True, "currency": "eur"})
    with pytest.raises(RenderError) as exc:
        app.plan_event(event, flow)
    msg = str(exc.value)
    assert "charge_sales_receipt.yaml" in msg and "CurrencyRef EUR" in msg and "multicurrency: false" in msg


def test_foreign_currency_with_multicurrency_sends_rate(app, qbo, project_dir):  # noqa: F811
    app.project.connections["quickbooks_online"]["multicurrency"] = True
    qbo.company.multicurrency = True
    flow = app.flow("flows/qbo-charges.yaml")
    bt = {"id": "txn_2", "amount": 110, "fee": 0, "currency": "usd", "exchange_rate": "1.1"}
    event = event_from_fixture("charge.succeeded", overrides={"status": "succeeded", "paid": True, "currency": "eur",
                                                              "balance_transaction": bt})
    [op] = app.plan_event(event, flow)
    assert op.payload["ExchangeRate"] == Decimal("1.1")    # Stripe's applied rate wins
    assert deliver(app, [op])[0]["state"] == "sent"
    doc = qbo.company.all("SalesReceipt")[-1]
    assert doc["CurrencyRef"] == {"value": "EUR"} and doc["ExchangeRate"] == Decimal("1.1")


def test_run_command_path_through_prefect(app, qbo, prefect_api):  # noqa: F811
    from runner import jsonio
    from runner.run import run_event
    flow = app.flow("flows/qbo-payouts.yaml")
    event = event_from_fixture("payout.paid")
    result = run_event(app, flow, event, jsonio.dumps(event))
    assert [r["state"] for r in result.rows] == ["sent"] and len(qbo.company.all("Transfer")) == 1
    assert "delivered" in result.lines()[0] and "Transfer:" in result.lines()[0]
    json.dumps(result.lines())
