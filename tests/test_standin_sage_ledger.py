"""The Sage stand-in's books: currency rules and the base-currency ledger every stored document
posts, driven over loopback HTTP the way ledgerflow talks to Sage, checked by Beancount."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from runner.core import jsonio
from tests.standins.sage import SageStandIn
from tests.support.servers import serve_app

D = Decimal


class Api:
    """A bare Sage v3.1 client: Bearer token, X-Business, JSON with exact Decimals."""

    def __init__(self, standin: SageStandIn, url: str, business: str | None = None):
        self.standin, self.url = standin, url
        token = standin.seed_tokens()["access_token"]
        self.http = httpx.Client(base_url=f"{url}/v3.1", timeout=10, headers={
            "Authorization": f"Bearer {token}", "X-Business": business or standin.business_id,
            "Content-Type": "application/json"})

    def get(self, path: str, **params) -> httpx.Response:
        return self.http.get(path, params=params)

    def post(self, resource: str, wrapper: str, doc: dict) -> httpx.Response:
        return self.http.post(f"/{resource}", content=jsonio.dumps({wrapper: doc}))

    def ok(self, resource: str, wrapper: str, doc: dict) -> dict:
        r = self.post(resource, wrapper, doc)
        assert r.status_code == 201, r.text
        return jsonio.loads(r.text)

    def error(self, resource: str, wrapper: str, doc: dict) -> dict:
        r = self.post(resource, wrapper, doc)
        assert r.status_code == 422, r.text
        [err] = jsonio.loads(r.text)
        assert set(err) == {"$severity", "$dataCode", "$message", "$source"}
        assert err["$severity"] == "error" and err["$dataCode"] == "RecordInvalid"
        return err

    # ids by name ------------------------------------------------------------------------
    def ledger(self, name: str) -> str:
        return next(la["id"] for la in self.standin.records("ledger_accounts") if la["name"] == name)

    def bank(self, name: str) -> str:
        return next(b["id"] for b in self.standin.records("bank_accounts")
                    if b["bank_account_details"]["account_name"] == name)

    # documents ----------------------------------------------------------------------------
    def contact(self, name: str = "Jenny Rosen", currency: str | None = None) -> dict:
        doc = {"name": name, "contact_type_ids": ["CUSTOMER"], "reference": name.upper()[:10].replace(" ", "")}
        if currency:
            doc["currency_id"] = currency
        return self.ok("contacts", "contact", doc)

    def invoice_doc(self, contact: dict, amount: str, *, account: str = "Sales", tax: str | None = None,
                    **extra) -> dict:
        line = {"description": "Stripe charge", "ledger_account_id": self.ledger(account), "quantity": 1,
                "unit_price": D(amount)}
        if tax:
            line["tax_rate_id"] = tax
        return {"contact_id": contact["id"], "date": "2026-03-02", "invoice_lines": [line], **extra}

    def invoice(self, contact: dict, amount: str, **kw) -> dict:
        return self.ok("sales_invoices", "sales_invoice", self.invoice_doc(contact, amount, **kw))

    def credit_note(self, contact: dict, amount: str, **extra) -> dict:
        return self.ok("sales_credit_notes", "sales_credit_note", {
            "contact_id": contact["id"], "date": "2026-03-05", **extra,
            "credit_note_lines": [{"description": "Refund", "ledger_account_id": self.ledger("Sales Refunds"),
                                   "quantity": 1, "unit_price": D(amount)}]})

    def payment_doc(self, kind: str, contact: dict, artefact: dict | None, amount: str,
                    bank: str = "Stripe Clearing", **extra) -> dict:
        doc = {"transaction_type_id": kind, "contact_id": contact["id"], "bank_account_id": self.bank(bank),
               "date": "2026-03-03", "total_amount": D(amount), **extra}
        if artefact:
            doc["allocated_artefacts"] = [{"artefact_id": artefact["id"], "amount": D(amount)}]
        return doc

    def receipt(self, contact: dict, invoice: dict | None, amount: str, **kw) -> dict:
        return self.ok("contact_payments", "contact_payment",
                       self.payment_doc("CUSTOMER_RECEIPT", contact, invoice, amount, **kw))


@pytest.fixture
def make():
    servers = []

    def make(**settings) -> Api:
        standin = SageStandIn(**settings)
        cm = serve_app(standin.app())
        server = cm.__enter__()
        servers.append(cm)
        return Api(standin, server.url)
    yield make
    for cm in servers:
        cm.__exit__(None, None, None)


def balances(api: Api) -> dict[str, Decimal]:
    tb = api.standin.trial_balance()
    assert tb.errors == []
    assert sum(tb.balances.values(), D(0)) == 0
    return {k: v for k, v in tb.balances.items() if v != 0}


# ---- settings and chart ---------------------------------------------------------------------------

def test_financial_settings_and_the_seeded_chart(make):
    api = make()
    fs = jsonio.loads(api.get("/financial_settings").text)
    assert fs["base_currency"]["id"] == "USD" and fs["multi_currency_enabled"] is False
    listed = jsonio.loads(api.get("/ledger_accounts", items_per_page=200, attributes="name").text)["$items"]
    names = {la["name"] for la in listed}
    for name in ("Stripe Clearing", "Operating Bank", "Sales", "Sales Refunds", "Stripe Fees", "Chargebacks",
                 "Dispute Fees", "Application Fee Revenue", "Platform Fees", "Connected Accounts Payable",
                 "Stripe Adjustments", "FX Gain/Loss", "Debtors Control", "Sales Tax Control"):
        assert name in names, name
    page = jsonio.loads(api.get("/ledger_accounts", items_per_page=7).text)
    assert page["$total"] == 31 and page["$next"].startswith("/ledger_accounts?") and page["$back"] is None
    for b in api.standin.records("bank_accounts"):
        assert b["currency"]["id"] == "USD"
        ledger = next(la for la in api.standin.records("ledger_accounts") if la["id"] == b["ledger_account"]["id"])
        assert ledger["name"] == b["bank_account_details"]["account_name"]
    assert api.standin.journal() == [] and api.standin.trial_balance().balances == {}


def test_a_gbp_business_with_foreign_currencies(make):
    api = make(base_currency="GBP", multicurrency=True, exchange_rates={"EUR": "1.17"})
    fs = jsonio.loads(api.get("/financial_settings").text)
    assert fs["base_currency"]["id"] == "GBP" and fs["multi_currency_enabled"] is True
    assert {b["currency"]["id"] for b in api.standin.records("bank_accounts")} == {"GBP"}
    assert api.contact()["currency"]["id"] == "GBP"
    eur = api.contact("Hans Muster", currency="EUR")
    inv = api.invoice(eur, "117.00")                   # no rate given: the business rate, 1 GBP = 1.17 EUR
    assert inv["exchange_rate"] == D("1.17") and inv["base_currency_total_amount"] == D("100.00")
    assert balances(api) == {"Debtors Control": D("100.00"), "Sales": D("-100.00")}


def test_base_currency_changes_only_before_anything_posts(make):
    api = make()
    api.standin.configure(base_currency="EUR")
    assert {b["currency"]["id"] for b in api.standin.records("bank_accounts")} == {"EUR"}
    api.invoice(api.contact(), "10")
    with pytest.raises(ValueError):
        api.standin.configure(base_currency="USD")


# ---- home-currency postings --------------------------------------------------------------------------

def test_invoice_with_tax_and_allocated_receipt(make):
    api = make()
    c = api.contact()
    inv = api.invoice(c, "100.00", tax="US_STANDARD")
    assert inv["total_amount"] == D("108.25") and inv["exchange_rate"] == 1
    api.receipt(c, inv, "108.25")
    [ti, tr] = api.standin.journal()
    assert ti.doc_type == "SALES_INVOICE" and tr.doc_type == "CUSTOMER_RECEIPT"
    assert {(p.account, p.amount) for p in ti.postings} == {
        ("Debtors Control", D("108.25")), ("Sales", D("-100.00")), ("Sales Tax Control", D("-8.25"))}
    assert all(p.currency is None for t in (ti, tr) for p in t.postings)
    assert balances(api) == {"Stripe Clearing": D("108.25"), "Sales": D("-100.00"), "Sales Tax Control": D("-8.25")}


def test_credit_note_and_refund_reverse_the_sale(make):
    api = make()
    c = api.contact()
    inv = api.invoice(c, "50.00")
    api.receipt(c, inv, "50.00")
    note = api.credit_note(c, "20.00", original_invoice_id=inv["id"])
    api.ok("contact_payments", "contact_payment", api.payment_doc("CUSTOMER_REFUND", c, note, "20.00"))
    assert [t.doc_type for t in api.standin.journal()] == [
        "SALES_INVOICE", "CUSTOMER_RECEIPT", "SALES_CREDIT_NOTE", "CUSTOMER_REFUND"]
    assert balances(api) == {"Stripe Clearing": D("30.00"), "Sales": D("-50.00"), "Sales Refunds": D("20.00")}


def test_receipt_on_account_leaves_a_credit_on_debtors(make):
    api = make()
    c = api.contact()
    inv = api.invoice(c, "40.00")
    doc = api.payment_doc("CUSTOMER_RECEIPT", c, None, "100.00")
    doc["allocated_artefacts"] = [{"artefact_id": inv["id"], "amount": D("40.00")}]
    api.ok("contact_payments", "contact_payment", doc)
    assert balances(api) == {"Stripe Clearing": D("100.00"), "Sales": D("-40.00"), "Debtors Control": D("-60.00")}


def test_other_payment_and_receipt(make):
    api = make()
    fee = {"transaction_type_id": "OTHER_PAYMENT", "bank_account_id": api.bank("Stripe Clearing"), "date": "2026-03-02",
           "total_amount": D("3.20"), "payment_lines": [{"ledger_account_id": api.ledger("Stripe Fees"),
                                                         "total_amount": D("3.20"), "details": "fee"}]}
    api.ok("other_payments", "other_payment", fee)
    income = {**fee, "transaction_type_id": "OTHER_RECEIPT", "total_amount": D("7.00"),
              "payment_lines": [{"ledger_account_id": api.ledger("Application Fee Revenue"), "total_amount": D("7.00")}]}
    api.ok("other_payments", "other_payment", income)
    assert [t.doc_type for t in api.standin.journal()] == ["OTHER_PAYMENT", "OTHER_RECEIPT"]
    assert balances(api) == {"Stripe Fees": D("3.20"), "Application Fee Revenue": D("-7.00"),
                             "Stripe Clearing": D("3.80")}
    bad = {**fee, "total_amount": D("3.30")}
    assert api.error("other_payments", "other_payment", bad)["$source"] == "total_amount"


def test_journal_posts_its_lines_and_must_balance(make):
    api = make()
    lines = [{"ledger_account_id": api.ledger("Operating Bank"), "debit": D("11.00"), "credit": 0},
             {"ledger_account_id": api.ledger("Stripe Clearing"), "debit": 0, "credit": D("11.00")}]
    api.ok("journals", "journal", {"date": "2026-03-06", "reference": "po_1", "journal_lines": lines})
    lopsided = [lines[0], {**lines[1], "credit": D("10.99")}]
    err = api.error("journals", "journal", {"date": "2026-03-06", "reference": "po_2", "journal_lines": lopsided})
    assert err["$source"] == "journal_lines" and "debits must equal" in err["$message"]
    err = api.error("journals", "journal", {"date": "2026-03-06", "reference": "po_3", "currency_id": "EUR",
                                            "journal_lines": lines})
    assert err["$source"] == "currency_id"
    assert len(api.standin.records("journals")) == 1
    assert balances(api) == {"Operating Bank": D("11.00"), "Stripe Clearing": D("-11.00")}


def test_bank_transfer_moves_between_bank_ledger_accounts(make):
    api = make()
    api.ok("bank_transfers", "bank_transfer", {"from_bank_account_id": api.bank("Stripe Clearing"),
                                               "to_bank_account_id": api.bank("Operating Bank"),
                                               "date": "2026-03-06", "amount": D("11.00")})
    [t] = api.standin.journal()
    assert t.doc_type == "BANK_TRANSFER"
    assert balances(api) == {"Operating Bank": D("11.00"), "Stripe Clearing": D("-11.00")}


def test_a_lost_response_still_posted(make):
    api = make()
    c = api.contact()
    api.standin.lose_response("POST", "/sales_invoices", status=502)
    r = api.post("sales_invoices", "sales_invoice", api.invoice_doc(c, "9.99"))
    assert r.status_code == 502
    assert balances(api) == {"Debtors Control": D("9.99"), "Sales": D("-9.99")}


# ---- currency rules ----------------------------------------------------------------------------------

def test_foreign_currency_needs_multicurrency(make):
    api = make()
    err = api.error("contacts", "contact", {"name": "Hans", "contact_type_ids": ["CUSTOMER"], "currency_id": "EUR"})
    assert err["$source"] == "currency_id" and "not enabled" in err["$message"]
    c = api.contact()
    err = api.error("sales_invoices", "sales_invoice",
                    api.invoice_doc(c, "10", currency_id="EUR", exchange_rate=D("0.92")))
    assert err["$source"] == "currency_id"
    assert api.standin.journal() == []


def test_documents_must_be_in_the_contacts_currency(make):
    api = make(multicurrency=True)
    usd, eur = api.contact(), api.contact("Hans Muster", currency="EUR")
    err = api.error("sales_invoices", "sales_invoice",
                    api.invoice_doc(usd, "10", currency_id="EUR", exchange_rate=D("0.92")))
    assert err["$source"] == "currency_id" and "contact's currency (USD)" in err["$message"]
    err = api.error("sales_invoices", "sales_invoice", api.invoice_doc(eur, "10", currency_id="USD"))
    assert err["$source"] == "currency_id"
    inv = api.invoice(eur, "92.00", exchange_rate=D("0.92"))
    assert inv["currency"]["id"] == "EUR"                     # defaulted from the contact
    err = api.error("contact_payments", "contact_payment",
                    api.payment_doc("CUSTOMER_RECEIPT", eur, inv, "92.00", currency_id="USD"))
    assert err["$source"] == "currency_id"
    err = api.error("sales_credit_notes", "sales_credit_note", {
        "contact_id": usd["id"], "date": "2026-03-05", "currency_id": "EUR", "exchange_rate": D("0.92"),
        "credit_note_lines": [{"description": "x", "ledger_account_id": api.ledger("Sales Refunds"), "unit_price": 1}]})
    assert err["$source"] == "currency_id"


def test_foreign_documents_need_an_exchange_rate(make):
    api = make(multicurrency=True)
    eur = api.contact("Hans Muster", currency="EUR")
    err = api.error("sales_invoices", "sales_invoice", api.invoice_doc(eur, "10"))
    assert err["$source"] == "exchange_rate"
    for bad in (D("0"), D("-1"), "abc"):
        assert api.error("sales_invoices", "sales_invoice",
                         api.invoice_doc(eur, "10", exchange_rate=bad))["$source"] == "exchange_rate"
    api.standin.configure(exchange_rates={"EUR": "0.92"})
    assert api.invoice(eur, "92.00")["base_currency_total_amount"] == D("100.00")


def test_exchange_rate_is_foreign_units_per_base_unit(make):
    api = make(multicurrency=True)
    eur = api.contact("Hans Muster", currency="EUR")
    inv = api.invoice(eur, "92.00", exchange_rate=D("0.92"))
    assert inv["total_amount"] == D("92.00") and inv["base_currency_total_amount"] == D("100.00")
    assert inv["inverse_exchange_rate"] == D("1.086957")
    [t] = api.standin.journal()
    debtors = next(p for p in t.postings if p.account == "Debtors Control")
    assert (debtors.amount, debtors.currency, debtors.foreign_amount) == (D("100.00"), "EUR", D("92.00"))


def test_zero_and_three_decimal_currencies_round_half_up_per_line(make):
    api = make(multicurrency=True)
    jpy, bhd = api.contact("Taro", currency="JPY"), api.contact("Ali", currency="BHD")
    assert api.invoice(jpy, "5000", exchange_rate=D("149.25"))["base_currency_total_amount"] == D("33.50")
    assert api.invoice(bhd, "12.34", exchange_rate=D("0.376"))["base_currency_total_amount"] == D("32.82")
    two_lines = api.invoice_doc(jpy, "1000", exchange_rate=D("3"))
    two_lines["invoice_lines"].append({**two_lines["invoice_lines"][0], "unit_price": D("1000")})
    inv = api.ok("sales_invoices", "sales_invoice", two_lines)
    assert inv["base_currency_total_amount"] == D("666.66")    # 333.33 + 333.33, not round(2000 / 3)
    balances(api)                                              # every document balanced


def test_a_receipt_at_another_rate_books_the_exchange_difference(make):
    api = make(multicurrency=True)
    eur = api.contact("Hans Muster", currency="EUR")
    inv = api.invoice(eur, "92.00", exchange_rate=D("0.92"))               # 100.00 USD
    pay = api.receipt(eur, inv, "92.00", exchange_rate=D("0.90"))          # 102.22 USD
    assert pay["base_currency_total_amount"] == D("102.22")
    stored = api.standin.records("sales_invoices")[0]
    assert stored["status"]["id"] == "PAID" and stored["base_currency_outstanding_amount"] == 0
    assert balances(api) == {"Stripe Clearing": D("102.22"), "Sales": D("-100.00"), "FX Gain/Loss": D("-2.22")}


def test_a_refund_at_another_rate_books_the_exchange_difference(make):
    api = make(multicurrency=True, fx_account="FX Gains and Losses")
    eur = api.contact("Hans Muster", currency="EUR")
    note = api.credit_note(eur, "46.00", exchange_rate=D("0.92"))          # 50.00 USD
    api.ok("contact_payments", "contact_payment",
           api.payment_doc("CUSTOMER_REFUND", eur, note, "46.00", exchange_rate=D("0.95")))   # 48.42 USD
    assert balances(api) == {"Sales Refunds": D("50.00"), "Stripe Clearing": D("-48.42"),
                             "FX Gains and Losses": D("-1.58")}


def test_bank_accounts_take_their_own_currency_or_any_when_base(make):
    api = make(multicurrency=True, exchange_rates={"EUR": "0.92", "GBP": "0.79"})
    api.standin.add_bank_account("Stripe EUR", "1220", currency="EUR")
    usd, eur, gbp = api.contact(), api.contact("Hans", currency="EUR"), api.contact("Liz", currency="GBP")
    inv_usd, inv_gbp = api.invoice(usd, "10"), api.invoice(gbp, "7.90")
    err = api.error("contact_payments", "contact_payment",
                    api.payment_doc("CUSTOMER_RECEIPT", usd, inv_usd, "10", bank="Stripe EUR"))
    assert err["$source"] == "bank_account_id" and "EUR bank account" in err["$message"]
    assert api.error("contact_payments", "contact_payment", api.payment_doc(
        "CUSTOMER_RECEIPT", gbp, inv_gbp, "7.90", bank="Stripe EUR"))["$source"] == "bank_account_id"
    api.receipt(gbp, inv_gbp, "7.90")                         # a GBP receipt into the USD clearing account
    inv_eur = api.invoice(eur, "92.00")
    api.receipt(eur, inv_eur, "92.00", bank="Stripe EUR")
    fee = {"transaction_type_id": "OTHER_PAYMENT", "bank_account_id": api.bank("Stripe EUR"), "date": "2026-03-02",
           "total_amount": D("0.92"), "payment_lines": [{"ledger_account_id": api.ledger("Stripe Fees"),
                                                         "total_amount": D("0.92")}]}
    api.ok("other_payments", "other_payment", fee)            # in the account's currency, EUR
    assert api.error("other_payments", "other_payment", {**fee, "currency_id": "USD"})["$source"] == "currency_id"
    err = api.error("bank_transfers", "bank_transfer", {"from_bank_account_id": api.bank("Stripe EUR"),
                                                        "to_bank_account_id": api.bank("Operating Bank"),
                                                        "date": "2026-03-06", "amount": D("10")})
    assert err["$source"] == "to_bank_account_id"
    assert balances(api) == {"Sales": D("-120.00"), "Debtors Control": D("10.00"), "Stripe Clearing": D("10.00"),
                             "Stripe EUR": D("99.00"), "Stripe Fees": D("1.00")}


def test_the_other_business_keeps_its_own_books(make):
    api = make()
    other = Api(api.standin, api.url, business="bizB0002")
    assert jsonio.loads(other.get("/ledger_accounts").text)["$total"] == 0
    api.invoice(api.contact(), "5")
    assert api.standin.journal("bizB0002") == [] and len(api.standin.journal()) == 1
