"""The Sage connector against the Sage stand-in over loopback HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

import pytest
from cryptography.fernet import Fernet

from connectors.base import ErrorKind, Item
from connectors.oauth import TokenSet
from connectors.sage.connector import SageConnector
from connectors.sage.references import short_reference
from runner.connector_runtime import connector_runtime
from runner.core.secrets import SecretResolver
from tests.standins.sage import SageStandIn, connection_config
from tests.support.servers import serve_app


@pytest.fixture
def sage():
    standin = SageStandIn()
    with serve_app(standin.app()) as server:
        standin.url = server.url
        yield standin


@pytest.fixture
def make_connector(sage, store, tmp_path, monkeypatch):
    monkeypatch.setenv("LEDGERFLOW_TOKEN_KEY", Fernet.generate_key().decode())
    env = {"SAGE_CLIENT_ID": sage.client_id, "SAGE_CLIENT_SECRET": sage.client_secret}
    made = []

    def make(name: str = "sage", seed: bool = True, **extra) -> SageConnector:
        cfg = connection_config(sage.url, **{"business_id": sage.business_id, **extra})
        runtime = connector_runtime(tmp_path, {}, SecretResolver(env), store)
        conn = SageConnector(name, cfg, runtime)
        if seed:
            conn.client.session.save(TokenSet.from_response(sage.seed_tokens()))
        made.append(conn)
        return conn
    yield make
    for c in made:
        c.close()


def item(action: str, payload: dict, key: str = "flow:route:evt_1", did: int = 1) -> Item:
    return Item(did, key, action, payload)


CONTACT = {"name": "Jenny Rosen", "reference": "cus_QXg1o8vcGmoR32"}


def charge(amount: str = "100.00", **extra) -> dict:
    return {"date": "2026-03-02", "contact": CONTACT,
            "lines": [{"description": "Stripe charge ch_1", "ledger_account": "Sales", "tax_rate": "No Tax",
                       "unit_price": Decimal(amount)}],
            "payment": {"bank_account": "Stripe Clearing", "amount": Decimal(amount)}, **extra}


def test_charge_creates_contact_invoice_and_allocated_receipt(sage, make_connector):
    conn = make_connector()
    [out] = conn.deliver([item("sales_invoice_payment", charge("25.50"))])
    assert out.ok, out.error
    [contact] = sage.records("contacts")
    assert contact["reference"] == "cus_QXg1o8vcGmoR32"
    [invoice] = sage.records("sales_invoices")
    [payment] = sage.records("contact_payments")
    assert invoice["reference"] == short_reference("flow:route:evt_1", "invoice")
    assert len(invoice["reference"]) <= 25
    assert invoice["total_amount"] == Decimal("25.50") and invoice["status"]["id"] == "PAID"
    assert payment["transaction_type"]["id"] == "CUSTOMER_RECEIPT"
    assert payment["bank_account"]["displayed_as"] == "Stripe Clearing (1210)"
    assert payment["allocated_artefacts"] == [{"artefact": {"id": invoice["id"]}, "amount": Decimal("25.50")}]
    assert out.target_ref == f"sales_invoice:{invoice['id']} contact_payment:{payment['id']}"


def test_contact_is_found_not_created_twice(sage, make_connector):
    conn = make_connector()
    outs = conn.deliver([item("sales_invoice_payment", charge(), key="k1", did=1),
                         item("sales_invoice_payment", charge(), key="k2", did=2)])
    assert all(o.ok for o in outs)
    fresh = make_connector(name="sage2")          # another worker: no in-process memory of the contact
    fresh.client.session.save(TokenSet.from_response(sage.seed_tokens()))
    [o] = fresh.deliver([item("contact", CONTACT)])
    assert o.ok
    assert len(sage.records("contacts")) == 1
    assert len(sage.records("sales_invoices")) == 2
    assert o.target_ref == f"contact:{sage.records('contacts')[0]['id']}"


def test_repeat_of_a_delivered_charge_creates_nothing(sage, make_connector):
    conn = make_connector()
    first = conn.deliver([item("sales_invoice_payment", charge())])[0]
    again = make_connector(name="other").deliver([item("sales_invoice_payment", charge())])[0]
    assert first.ok and again.ok and again.detail["duplicate"] is True
    assert again.target_ref == first.target_ref
    assert len(sage.records("sales_invoices")) == 1 and len(sage.records("contact_payments")) == 1


def test_lost_response_on_the_receipt_is_not_duplicated_on_retry(sage, make_connector):
    conn = make_connector()
    sage.lose_response("POST", "/contact_payments", status=502)
    first = conn.deliver([item("sales_invoice_payment", charge())])[0]
    assert not first.ok and first.error.kind == ErrorKind.RETRYABLE
    assert len(sage.records("contact_payments")) == 1          # Sage did create it
    second = conn.deliver([item("sales_invoice_payment", charge())])[0]
    assert second.ok, second.error
    assert len(sage.records("sales_invoices")) == 1 and len(sage.records("contact_payments")) == 1
    assert sage.count("POST", "/contact_payments") == 1 and sage.count("POST", "/sales_invoices") == 1


def test_timeout_after_create_is_retryable_and_the_repeat_finds_the_invoice(sage, make_connector):
    conn = make_connector(timeout=0.5)
    sage.lose_response("POST", "/sales_invoices", delay=1.5)
    first = conn.deliver([item("sales_invoice_payment", charge())])[0]
    assert not first.ok and first.error.kind == ErrorKind.RETRYABLE and "timed out" in str(first.error)
    second = conn.deliver([item("sales_invoice_payment", charge())])[0]
    assert second.ok, second.error
    assert len(sage.records("sales_invoices")) == 1 and len(sage.records("contact_payments")) == 1


def test_partial_failure_completes_on_retry(sage, make_connector):
    conn = make_connector()
    sage.fail("POST", "/contact_payments", 503)
    first = conn.deliver([item("sales_invoice_payment", charge())])[0]
    assert first.error.kind == ErrorKind.RETRYABLE and "HTTP 503" in str(first.error)
    assert len(sage.records("sales_invoices")) == 1 and not sage.records("contact_payments")
    second = conn.deliver([item("sales_invoice_payment", charge())])[0]
    assert second.ok and second.detail["duplicate"] is False
    assert len(sage.records("sales_invoices")) == 1 and len(sage.records("contact_payments")) == 1


def test_429_is_throttled_with_retry_after(sage, make_connector):
    conn = make_connector()
    sage.fail("POST", "/sales_invoices", 429, retry_after=17)
    [out] = conn.deliver([item("sales_invoice_payment", charge())])
    assert out.error.kind == ErrorKind.THROTTLED and out.error.retry_after == 17.0


def test_validation_error_is_permanent_and_names_the_field(sage, make_connector):
    conn = make_connector()
    bad = charge()
    bad["payment"]["amount"] = Decimal("100.00")
    bad["lines"][0]["unit_price"] = Decimal("40.00")     # receipt more than the invoice: Sage refuses
    [out] = conn.deliver([item("sales_invoice_payment", bad)])
    assert out.error.kind == ErrorKind.PERMANENT
    assert out.error.field == "allocated_artefacts.0.amount"
    assert "allocated_artefacts.0.amount: is more than the outstanding amount [RecordInvalid]" in str(out.error)
    assert "POST /contact_payments" in str(out.error)


def test_unknown_ledger_account_is_permanent_naming_the_mapping_field(sage, make_connector):
    conn = make_connector()
    bad = charge()
    bad["lines"][0]["ledger_account"] = "Salez"
    [out] = conn.deliver([item("sales_invoice_payment", bad)])
    assert out.error.kind == ErrorKind.PERMANENT and out.error.field == "lines[0].ledger_account"
    assert "no ledger account named or coded 'Salez'" in str(out.error)
    assert not sage.records("sales_invoices")


def test_missing_x_business_is_a_clear_permanent_error(sage, make_connector):
    conn = make_connector(business_id=None)
    [out] = conn.deliver([item("bank_transfer", {"date": "2026-03-02", "from_bank_account": "Stripe Clearing",
                                                 "to_bank_account": "Operating Bank", "amount": Decimal("5")})])
    assert out.error.kind == ErrorKind.PERMANENT and out.error.field == "X-Business"
    assert "X-Business: the X-Business header is required" in str(out.error)


def test_expired_access_token_is_refreshed_once_and_the_call_repeated(sage, make_connector):
    conn = make_connector()
    sage.expire_access_tokens()                    # Sage says 401; our clock still thinks it is fresh
    [out] = conn.deliver([item("bank_transfer", {"date": "2026-03-02", "from_bank_account": "1210",
                                                 "to_bank_account": "Operating Bank", "amount": Decimal("5")})])
    assert out.ok, out.error
    assert sage.authority.refresh_calls == 1
    assert any(status == 401 for _, _, status in sage.calls)


def test_401_after_refresh_is_auth(sage, make_connector, monkeypatch):
    conn = make_connector()
    monkeypatch.setattr(sage.authority, "valid_access", lambda token: False)
    [out] = conn.deliver([item("contact", CONTACT)])
    assert out.error.kind == ErrorKind.AUTH and "HTTP 401" in str(out.error)
    assert sage.authority.refresh_calls == 1


def test_spent_refresh_token_is_auth_with_reconnect_hint(sage, make_connector):
    conn = make_connector()
    tokens = TokenSet.from_response(sage.seed_tokens())
    tokens.expires_at = 0
    sage.authority.refresh[tokens.refresh_token] = False      # already used elsewhere: Sage rotated it
    conn.client.session.save(tokens)
    [out] = conn.deliver([item("contact", CONTACT)])
    assert out.error.kind == ErrorKind.AUTH
    assert "invalid_grant" in str(out.error) and "ledgerflow connect sage" in str(out.error)


def test_other_payment_for_fees_against_clearing(sage, make_connector):
    conn = make_connector()
    fee = {"date": "2026-03-02", "bank_account": "Stripe Clearing", "total_amount": Decimal("3.20"),
           "lines": [{"ledger_account": "7900", "amount": Decimal("3.20"), "details": "Stripe fee ch_1"}]}
    outs = conn.deliver([item("other_payment", fee, key="fees:txn_1"), item("other_payment", fee, key="fees:txn_1")])
    assert all(o.ok for o in outs) and outs[1].detail["duplicate"] is True
    [p] = sage.records("other_payments")
    assert p["transaction_type"]["id"] == "OTHER_PAYMENT" and p["total_amount"] == Decimal("3.20")
    assert p["reference"] == "fees:txn_1"          # short keys are used as they are


def test_refund_credit_note_linked_to_original_invoice_and_refund_payment(sage, make_connector):
    conn = make_connector()
    assert conn.deliver([item("sales_invoice_payment", charge("50.00"), key="sage:charge:ch_1")])[0].ok
    refund = {"date": "2026-03-05", "contact": CONTACT, "original_invoice_key": "sage:charge:ch_1",
              "lines": [{"description": "Refund re_1", "ledger_account": "Sales Refunds", "unit_price": Decimal("20")}],
              "refund": {"bank_account": "Stripe Clearing", "amount": Decimal("20")}}
    [out] = conn.deliver([item("credit_note_refund", refund, key="sage:refund:re_1")])
    assert out.ok, out.error
    [note] = sage.records("sales_credit_notes")
    assert note["original_invoice_id"] == sage.records("sales_invoices")[0]["id"]
    assert note["status"]["id"] == "PAID" and out.detail["linked_invoice"] is True
    refunds = [p for p in sage.records("contact_payments") if p["transaction_type"]["id"] == "CUSTOMER_REFUND"]
    assert len(refunds) == 1 and refunds[0]["total_amount"] == Decimal("20.00")


def test_journal_and_bank_transfer_idempotent(sage, make_connector):
    conn = make_connector()
    journal = {"date": "2026-03-06", "description": "Stripe payout po_1",
               "lines": [{"ledger_account": "Operating Bank", "debit": Decimal("11"), "credit": 0},
                         {"ledger_account": "Stripe Clearing", "debit": 0, "credit": Decimal("11")}]}
    transfer = {"date": "2026-03-06", "from_bank_account": "Stripe Clearing", "to_bank_account": "Operating Bank",
                "amount": Decimal("11.00"), "description": "Stripe payout po_1"}
    long_key = "stripe-payouts-to-sage:transfer:evt_0123456789abcdef012345"
    for _ in range(2):
        outs = conn.deliver([item("journal", journal, key="journal:" + long_key), item("bank_transfer", transfer, key=long_key)])
        assert all(o.ok for o in outs), [o.error for o in outs]
    [j] = sage.records("journals")
    [t] = sage.records("bank_transfers")
    assert j["reference"].startswith("LF-") and len(j["reference"]) == 25
    assert t["reference"] == short_reference(long_key) and t["amount"] == Decimal("11.00")


def test_lookups_are_cached_across_connectors_in_the_store(sage, make_connector):
    transfer = {"date": "2026-03-06", "from_bank_account": "Stripe Clearing", "to_bank_account": "Operating Bank",
                "amount": Decimal("1")}
    a = make_connector()
    assert a.deliver([item("bank_transfer", transfer, key="t1")])[0].ok
    b = make_connector(name="sage")               # same connection, new process memory: reads kv_cache
    assert b.deliver([item("bank_transfer", transfer, key="t2")])[0].ok
    assert a.lookups.fetches == 1 and b.lookups.fetches == 0
    assert sage.count("GET", "/bank_accounts") == 1


def test_ledger_accounts_paged_with_next(sage, make_connector):
    conn = make_connector(page_size=7)           # 31 ledger accounts: five pages through $next
    assert conn.lookups.resolve("ledger_accounts", "FX Gains and Losses", "x")
    assert sage.count("GET", "/ledger_accounts") == 5
    assert len(conn.lookups.index("ledger_accounts")) == 31


def test_unknown_action_is_permanent(make_connector):
    [out] = make_connector().deliver([item("purchase_invoice", {})])
    assert out.error.kind == ErrorKind.PERMANENT and "no action 'purchase_invoice'" in str(out.error)


def test_a_journal_retried_after_the_lookback_window_is_still_found(sage, make_connector):
    """Sage searches journals by date only: the search reaches back to when the operation was planned."""
    import time as _time
    journal = {"date": "2026-03-06", "description": "Stripe payout po_9",
               "lines": [{"ledger_account": "Operating Bank", "debit": Decimal("11"), "credit": 0},
                         {"ledger_account": "Stripe Clearing", "debit": 0, "credit": Decimal("11")}]}
    planned = _time.time() - 60 * 86400                        # planned 60 days ago ...
    first = item("journal", journal, key="journal:po_9")
    first.created_at = planned
    assert make_connector().deliver([first])[0].ok
    [j] = sage.records("journals")
    from datetime import datetime as _dt
    from datetime import timezone as _tz
    j["updated_at"] = j["created_at"] = _dt.fromtimestamp(planned, _tz.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    # ... and created back then, beyond the 35-day default window
    again = item("journal", journal, key="journal:po_9")
    again.created_at, again.attempts = planned, 3
    [out] = make_connector().deliver([again])
    assert out.ok and out.detail.get("duplicate") is True
    assert len(sage.records("journals")) == 1
