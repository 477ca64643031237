"""The shipped Sage flows: preview and `ledgerflow run` (a real Prefect flow run) from Stripe's
example events, delivered to the Sage stand-in over loopback HTTP."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from cryptography.fernet import Fernet

from connectors.oauth import TokenSet, TokenStore
from runner.cli import main
from runner.store import open_store
from runner.store.tokens import TokenRows
from tests.standins.sage import SageStandIn
from tests.support.servers import serve_app

pytestmark = pytest.mark.prefect

BT = {"id": "txn_1PgaxNB7WZ01zgkWEV3TLf40", "object": "balance_transaction", "amount": 2500, "fee": 103,
      "fee_details": [{"amount": 103, "currency": "usd", "type": "stripe_fee"}], "net": 2397, "currency": "usd",
      "exchange_rate": None, "created": 1234567890, "type": "charge", "reporting_category": "charge"}
REFUND_BT = {"id": "txn_re", "object": "balance_transaction", "amount": -1000, "fee": 0, "net": -1000,
             "currency": "usd", "exchange_rate": None, "created": 1234567890, "type": "refund",
             "reporting_category": "refund"}
PAYOUT_BT = {"id": "txn_po", "object": "balance_transaction", "amount": -1100, "fee": 0, "net": -1100,
             "currency": "usd", "exchange_rate": None, "created": 1234567890, "type": "payout",
             "reporting_category": "payout"}
# Stripe's example charge is a destination charge; a plain platform charge has no transfer_data
CHARGE = {"transfer_data": None, "amount": 2500, "balance_transaction": BT}


@pytest.fixture
def sage():
    standin = SageStandIn()
    with serve_app(standin.app()) as server:
        standin.url = server.url
        yield standin


@pytest.fixture
def sage_project(project_dir, sage, store_url, monkeypatch):
    """The shipped project, its sage connection pointed at the stand-in, tokens as after `connect`."""
    cfg = project_dir / "ledgerflow.yaml"
    text = cfg.read_text()
    anchor = "  sage:"
    assert anchor in text
    text = text.replace("    client_secret: {env: SAGE_CLIENT_SECRET}\n",
                        "    client_secret: {env: SAGE_CLIENT_SECRET}\n"
                        f"    base_url: {sage.url}/v3.1\n    token_url: {sage.url}/token\n", 1)
    cfg.write_text(text)
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    monkeypatch.setenv("LEDGERFLOW_TOKEN_KEY", Fernet.generate_key().decode())
    monkeypatch.setenv("SAGE_CLIENT_ID", sage.client_id)
    monkeypatch.setenv("SAGE_CLIENT_SECRET", sage.client_secret)
    tokens = TokenSet.from_response(sage.seed_tokens())
    tokens.extra["business_id"] = sage.business_id      # what `ledgerflow connect sage` records
    TokenStore(TokenRows(open_store(store_url))).write("sage", tokens)
    return project_dir


def _event(tmp_path, event_type, name=None, **overrides):
    from runner.language.fixtures import event_from_fixture
    ev = event_from_fixture(event_type, overrides=overrides)
    path = tmp_path / f"{name or event_type}.json"
    path.write_text(json.dumps(ev, default=str))
    return str(path), ev


def test_preview_charge_shows_the_sage_operation(sage_project, capsys, stripe_fixtures, tmp_path):
    path, _ = _event(tmp_path, "charge.succeeded", customer="cus_QXg1o8vcGmoR32", **CHARGE)
    assert main(["preview", "sage-charges", "--event", path, "--json"]) == 0
    [op] = json.loads(capsys.readouterr().out)
    assert op["action"] == "sales_invoice_payment" and op["idempotency_key"] == "sage:charge:ch_1PgafuB7WZ01zgkWXYmPNZs8"
    assert op["payload"]["contact"] == {"reference": "cus_QXg1o8vcGmoR32", "name": "Jenny Rosen", "currency": "USD"}
    assert op["payload"]["payment"] == {"bank_account": "Stripe Clearing", "amount": 25.0}
    assert op["payload"]["fees"]["lines"][0]["amount"] == 1.03     # the fee travels with its sale
    assert "currency" not in op["payload"]                    # home currency: none sent


def test_preview_foreign_charge_single_currency_books_home_amounts(sage_project, capsys, stripe_fixtures, tmp_path):
    bt = {**BT, "amount": 2709, "fee": 109, "net": 2600, "exchange_rate": "1.0834",
          "fee_details": [{"amount": 109, "currency": "usd", "type": "stripe_fee"}]}
    path, _ = _event(tmp_path, "charge.succeeded", **{**CHARGE, "currency": "eur", "balance_transaction": bt})
    assert main(["preview", "sage-charges", "--event", path, "--json"]) == 0
    [op] = json.loads(capsys.readouterr().out)
    assert "currency" not in op["payload"] and "exchange_rate" not in op["payload"]
    assert op["payload"]["lines"][0]["unit_price"] == 27.09 and op["payload"]["contact"]["currency"] == "USD"


def test_preview_foreign_charge_multicurrency_carries_currency_and_sage_rate(sage_project, capsys, stripe_fixtures,
                                                                             tmp_path):
    cfg = sage_project / "ledgerflow.yaml"
    cfg.write_text(cfg.read_text().replace("    type: sage\n", "    type: sage\n    multicurrency: true\n", 1))
    bt = {**BT, "amount": 2709, "fee": 109, "net": 2600, "exchange_rate": "1.0834",
          "fee_details": [{"amount": 109, "currency": "usd", "type": "stripe_fee"}]}
    path, _ = _event(tmp_path, "charge.succeeded", **{**CHARGE, "currency": "eur", "balance_transaction": bt})
    assert main(["preview", "sage-charges", "--event", path, "--json"]) == 0
    [op] = json.loads(capsys.readouterr().out)
    p = op["payload"]
    assert p["currency"] == "EUR" and p["lines"][0]["unit_price"] == 25.0
    # Sage's exchange_rate: euros per dollar, so 25.00 / rate is the 27.09 Stripe settled
    assert (Decimal("25.00") / Decimal(str(p["exchange_rate"]))).quantize(Decimal("0.01")) == Decimal("27.09")
    assert p["contact"] == {"reference": "STRIPE-CUSTOMERS-EUR", "name": "Stripe Customers EUR", "currency": "EUR"}
    assert p["fees"]["lines"][0]["amount"] == 1.09                # fees stay in the base currency


def test_shipped_flows_run_end_to_end(prefect_api, sage_project, sage, capsys, stripe_fixtures, tmp_path, store_url):
    charge, _ = _event(tmp_path, "charge.succeeded", "charge", customer="cus_QXg1o8vcGmoR32", **CHARGE)
    refund, _ = _event(tmp_path, "refund.created", "refund", amount=1000, balance_transaction=REFUND_BT)
    payout, _ = _event(tmp_path, "payout.paid", "payout", balance_transaction=PAYOUT_BT)
    for flow, path in (("sage-charges", charge), ("sage-refunds", refund), ("sage-payouts", payout)):
        assert main(["run", flow, "--event", path]) == 0, capsys.readouterr()
        out = capsys.readouterr().out
        assert ": delivered [" in out, out
    [invoice] = sage.records("sales_invoices")
    assert invoice["total_amount"] == Decimal("25.00") and invoice["status"]["id"] == "PAID"
    [fee] = sage.records("other_payments")
    assert fee["total_amount"] == Decimal("1.03") and fee["bank_account"]["displayed_as"] == "Stripe Clearing (1210)"
    [note] = sage.records("sales_credit_notes")
    assert note["original_invoice_id"] == invoice["id"] and note["total_amount"] == Decimal("10.00")
    assert note["contact"]["id"] == invoice["contact"]["id"]      # the refunded charge's contact
    kinds = sorted(p["transaction_type"]["id"] for p in sage.records("contact_payments"))
    assert kinds == ["CUSTOMER_RECEIPT", "CUSTOMER_REFUND"]
    [transfer] = sage.records("bank_transfers")
    assert transfer["amount"] == Decimal("11.00")
    # a second run of the same events sends nothing again
    assert main(["run", "sage-charges", "--event", charge]) == 0
    assert "already delivered" in capsys.readouterr().out
    assert len(sage.records("sales_invoices")) == 1
    store = open_store(store_url)
    row = store.delivery_by_key("sage:charge:ch_1PgafuB7WZ01zgkWXYmPNZs8")
    assert row["state"] == "sent" and row["target_ref"].startswith(f"sales_invoice:{invoice['id']} contact_payment:")
    assert row["target_ref"].endswith(f"other_payment:{fee['id']}")
    assert store.attempts_of(row["id"])[0]["flow_run_id"]      # it ran inside a Prefect flow run
    tb = sage.trial_balance()
    assert not tb.errors and tb["Stripe Clearing"] == Decimal("25.00") - Decimal("1.03") - Decimal("10.00") - Decimal("11.00")


def test_summary_mode_books_a_journal_not_a_transfer(prefect_api, sage_project, sage, capsys, stripe_fixtures,
                                                     tmp_path):
    cfg = sage_project / "ledgerflow.yaml"
    cfg.write_text(cfg.read_text().replace("sage_payout_mode: transfer", "sage_payout_mode: summary"))
    payout, _ = _event(tmp_path, "payout.paid", "payout", balance_transaction=PAYOUT_BT)
    assert main(["run", "sage-payouts", "--event", payout]) == 0
    assert ": delivered [" in capsys.readouterr().out
    [journal] = sage.records("journals")
    assert journal["total"] == Decimal("11.00") and not sage.records("bank_transfers")


def test_rejected_document_is_dead_lettered_with_the_field(prefect_api, sage_project, sage, capsys,
                                                           stripe_fixtures, tmp_path, store_url):
    cfg = sage_project / "ledgerflow.yaml"
    cfg.write_text(cfg.read_text().replace("    sales: Sales\n", "    sales: Sales Typo\n"))   # accounting.accounts
    charge, _ = _event(tmp_path, "charge.succeeded", "charge", **CHARGE)
    assert main(["run", "sage-charges", "--event", charge]) == 1
    out = capsys.readouterr().out
    assert "dead-lettered" in out and "lines[0].ledger_account: no ledger account named or coded 'Sales Typo'" in out
    assert not sage.records("sales_invoices")


def test_throttled_charge_is_left_to_retry(prefect_api, sage_project, sage, capsys, stripe_fixtures, tmp_path,
                                           store_url):
    sage.fail("POST", "/sales_invoices", 429, retry_after=30)
    charge, _ = _event(tmp_path, "charge.succeeded", "charge", **CHARGE)
    assert main(["run", "sage-charges", "--event", charge]) == 0
    out = capsys.readouterr().out
    assert "will retry" in out and "HTTP 429" in out
    row = open_store(store_url).delivery_by_key("sage:charge:ch_1PgafuB7WZ01zgkWXYmPNZs8")
    assert row["state"] == "retrying" and row["attempts"] == 0      # a throttle is not a counted attempt
