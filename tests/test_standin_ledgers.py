"""The vendor stand-ins as books: what they accept is posted the way the vendor posts it, the
currency rules and faults are the vendor's, and the trial balance (computed by Beancount)
comes out of the postings. Driven directly: HTTP for QuickBooks Online, qbXML for Desktop."""

from __future__ import annotations

from decimal import Decimal

import pytest
from starlette.testclient import TestClient

from runner.core import jsonio
from tests.standins.qbo import CHART, QboStandin

REALM = "4620816365000001"
D = Decimal


# ---- QuickBooks Online ---------------------------------------------------------------------

class Qbo:
    def __init__(self, **company):
        self.standin = QboStandin()
        self.co = self.standin.company(REALM, chart=True, **company)
        self.http = TestClient(self.standin.app())
        self.token = self.standin.connect(REALM)["access_token"]

    def acc(self, name: str) -> dict:
        return {"value": self.co.find("Account", name)["Id"]}

    def item(self, name: str) -> dict:
        return {"value": self.co.find("Item", name)["Id"]}

    def post(self, resource: str, body: dict) -> tuple[int, dict]:
        r = self.http.post(f"/v3/company/{REALM}/{resource.lower()}?minorversion=75",
                           content=jsonio.dumps(body), headers={"Authorization": f"Bearer {self.token}",
                                                                "Content-Type": "application/json"})
        return r.status_code, jsonio.loads(r.text)

    def create(self, resource: str, body: dict) -> dict:
        status, out = self.post(resource, body)
        assert status == 200, out
        return out[resource]

    def fault(self, resource: str, body: dict) -> dict:
        status, out = self.post(resource, body)
        assert status == 400, out
        return out["Fault"]["Error"][0]

    def customer(self, name: str, currency: str | None = None) -> dict:
        body = {"DisplayName": name, **({"CurrencyRef": {"value": currency}} if currency else {})}
        return {"value": self.create("Customer", body)["Id"]}


def sales_line(amount: str, item: dict) -> dict:
    return {"Amount": D(amount), "DetailType": "SalesItemLineDetail", "SalesItemLineDetail": {"ItemRef": item}}


def deposit_line(amount: str, acc: dict) -> dict:
    return {"Amount": D(amount), "DetailType": "DepositLineDetail", "DepositLineDetail": {"AccountRef": acc}}


def je_line(amount: str, posting: str, acc: dict, **detail) -> dict:
    return {"Amount": D(amount), "DetailType": "JournalEntryLineDetail",
            "JournalEntryLineDetail": {"PostingType": posting, "AccountRef": acc, **detail}}


@pytest.fixture
def qbo() -> Qbo:
    return Qbo()


def postings(txn) -> dict[str, Decimal]:
    return {p.account: p.amount for p in txn.postings}


def test_qbo_chart_is_seeded_with_types_and_home_currency(qbo):
    accounts = {a["Name"]: a for a in qbo.co.all("Account")}
    assert set(CHART) <= set(accounts)
    assert accounts["Stripe Clearing"]["AccountType"] == "Bank"
    assert accounts["Connected Accounts Payable"]["AccountType"] == "Other Current Liability"
    assert all(a["CurrencyRef"] == {"value": "USD"} for a in accounts.values())
    sales = qbo.co.find("Item", "Stripe Sales")
    assert sales["IncomeAccountRef"]["value"] == accounts["Sales"]["Id"]
    qbo.co.seed_chart()                                          # idempotent: nothing twice
    assert len(qbo.co.all("Account")) == len(accounts)


def test_qbo_every_entity_posts_as_quickbooks_posts_it(qbo):
    cus = qbo.customer("Stripe Customers")
    sr = qbo.create("SalesReceipt", {"TxnDate": "2024-05-01", "CustomerRef": cus,
                                     "DepositToAccountRef": qbo.acc("Stripe Clearing"),
                                     "Line": [sales_line("100.00", qbo.item("Stripe Sales")),
                                              sales_line("20.00", qbo.item("Application Fees"))]})
    assert sr["TotalAmt"] == D("120.00") and "HomeTotalAmt" not in sr     # multicurrency off
    qbo.create("RefundReceipt", {"TxnDate": "2024-05-02", "CustomerRef": cus,
                                 "DepositToAccountRef": qbo.acc("Stripe Clearing"),
                                 "Line": [sales_line("30.00", qbo.item("Stripe Sales"))]})
    qbo.create("CreditMemo", {"TxnDate": "2024-05-02", "CustomerRef": cus,
                              "Line": [sales_line("5.00", qbo.item("Refunds"))]})
    qbo.create("Purchase", {"TxnDate": "2024-05-03", "PaymentType": "Cash", "AccountRef": qbo.acc("Stripe Clearing"),
                            "Line": [{"Amount": D("3.78"), "DetailType": "AccountBasedExpenseLineDetail",
                                      "AccountBasedExpenseLineDetail": {"AccountRef": qbo.acc("Stripe Fees")}}]})
    qbo.create("JournalEntry", {"TxnDate": "2024-05-04", "Line": [
        je_line("15.00", "Debit", qbo.acc("Chargebacks")), je_line("15.00", "Debit", qbo.acc("Dispute Fees")),
        je_line("30.00", "Credit", qbo.acc("Stripe Clearing"))]})
    qbo.create("Deposit", {"TxnDate": "2024-05-05", "DepositToAccountRef": qbo.acc("Operating Bank"),
                           "Line": [deposit_line("50.00", qbo.acc("Stripe Clearing"))]})
    qbo.create("Transfer", {"TxnDate": "2024-05-06", "FromAccountRef": qbo.acc("Stripe Clearing"),
                            "ToAccountRef": qbo.acc("Operating Bank"), "Amount": D("6.22")})

    journal = qbo.standin.journal()
    assert [t.doc_type for t in journal] == ["SalesReceipt", "RefundReceipt", "CreditMemo", "Purchase",
                                             "JournalEntry", "Deposit", "Transfer"]
    assert postings(journal[0]) == {"Stripe Clearing": D("120.00"), "Sales": D("-100.00"),
                                    "Application Fee Revenue": D("-20.00")}
    assert postings(journal[1]) == {"Stripe Clearing": D("-30.00"), "Sales": D("30.00")}
    assert postings(journal[2]) == {"Accounts Receivable": D("-5.00"), "Sales Refunds": D("5.00")}
    assert postings(journal[3]) == {"Stripe Clearing": D("-3.78"), "Stripe Fees": D("3.78")}
    assert postings(journal[5]) == {"Operating Bank": D("50.00"), "Stripe Clearing": D("-50.00")}
    assert postings(journal[6]) == {"Operating Bank": D("6.22"), "Stripe Clearing": D("-6.22")}
    tb = qbo.standin.trial_balance()
    assert tb.errors == []
    assert tb["Stripe Clearing"] == D("120.00") - 30 - D("3.78") - 30 - 50 - D("6.22")
    assert tb["Operating Bank"] == D("56.22") and tb["Sales"] == D("-70.00")
    assert sum(tb.balances.values()) == 0


def test_qbo_sales_receipt_without_deposit_account_goes_to_undeposited_funds(qbo):
    qbo.create("SalesReceipt", {"TxnDate": "2024-05-01", "Line": [sales_line("9.99", qbo.item("Stripe Sales"))]})
    assert postings(qbo.co.journal()[0]) == {"Undeposited Funds": D("9.99"), "Sales": D("-9.99")}


def test_qbo_unbalanced_journal_entry_is_refused_and_not_booked(qbo):
    err = qbo.fault("JournalEntry", {"TxnDate": "2024-05-04", "Line": [
        je_line("15.00", "Debit", qbo.acc("Chargebacks")), je_line("14.99", "Credit", qbo.acc("Stripe Clearing"))]})
    assert err["code"] == "6000" and "balanced" in err["Detail"]
    assert qbo.co.all("JournalEntry") == [] and qbo.co.journal() == []


def test_qbo_journal_line_on_receivables_needs_a_customer(qbo):
    err = qbo.fault("JournalEntry", {"TxnDate": "2024-05-04", "Line": [
        je_line("5.00", "Debit", qbo.acc("Stripe Clearing")), je_line("5.00", "Credit", qbo.acc("Accounts Receivable"))]})
    assert err["code"] == "6000" and "customer" in err["Detail"]
    cus = qbo.customer("C1")
    qbo.create("JournalEntry", {"TxnDate": "2024-05-04", "Line": [
        je_line("5.00", "Debit", qbo.acc("Stripe Clearing")),
        je_line("5.00", "Credit", qbo.acc("Accounts Receivable"), Entity={"Type": "Customer", "EntityRef": cus})]})


def test_qbo_foreign_currency_refused_without_multicurrency(qbo):
    err = qbo.fault("SalesReceipt", {"TxnDate": "2024-05-01", "CurrencyRef": {"value": "EUR"},
                                     "ExchangeRate": D("1.08"), "Line": [sales_line("10", qbo.item("Stripe Sales"))]})
    assert err["code"] == "6000" and err["element"] == "CurrencyRef"
    err = qbo.fault("Customer", {"DisplayName": "Euro Buyer", "CurrencyRef": {"value": "EUR"}})
    assert err["code"] == "6000"
    assert qbo.co.journal() == [] and qbo.co.find("Customer", "Euro Buyer") is None


def test_qbo_multicurrency_posts_home_amounts_and_keeps_the_foreign_ones():
    q = Qbo(multicurrency=True)
    cus = q.customer("Euro Buyer", "EUR")
    sr = q.create("SalesReceipt", {"TxnDate": "2024-05-01", "CustomerRef": cus, "CurrencyRef": {"value": "EUR"},
                                   "ExchangeRate": D("1.0834"), "DepositToAccountRef": q.acc("Stripe Clearing"),
                                   "Line": [sales_line("10.00", q.item("Stripe Sales"))]})
    assert sr["HomeTotalAmt"] == D("10.83") and sr["ExchangeRate"] == D("1.0834")
    [txn] = q.co.journal()
    assert postings(txn) == {"Stripe Clearing": D("10.83"), "Sales": D("-10.83")}
    assert {p.account: (p.currency, p.foreign_amount) for p in txn.postings} == {
        "Stripe Clearing": ("EUR", D("10.00")), "Sales": ("EUR", D("-10.00"))}
    # a home-currency document in a multicurrency company: rate 1
    usd = q.customer("Dollar Buyer")
    doc = q.create("SalesReceipt", {"TxnDate": "2024-05-01", "CustomerRef": usd,
                                    "Line": [sales_line("4.00", q.item("Stripe Sales"))]})
    assert doc["CurrencyRef"] == {"value": "USD"} and doc["ExchangeRate"] == 1 and doc["HomeTotalAmt"] == D("4.00")


@pytest.mark.parametrize("rounding, clearing, lines", [
    ("total", D("0.05"), [D("-0.02"), D("-0.02"), D("-0.01")]),   # round(0.03 x 1.5 = 0.045) = 0.05; a line absorbs
    ("line", D("0.06"), [D("-0.02"), D("-0.02"), D("-0.02")]),    # each 0.015 -> 0.02; the header takes the sum
])
def test_qbo_home_rounding_total_or_per_line(rounding, clearing, lines):
    q = Qbo(multicurrency=True, rounding=rounding)
    cus = q.customer("Euro Buyer", "EUR")
    sr = q.create("SalesReceipt", {"TxnDate": "2024-05-01", "CustomerRef": cus, "CurrencyRef": {"value": "EUR"},
                                   "ExchangeRate": D("1.5"), "DepositToAccountRef": q.acc("Stripe Clearing"),
                                   "Line": [sales_line("0.01", q.item("Stripe Sales")),
                                            sales_line("0.01", q.item("Stripe Sales")),
                                            sales_line("0.01", q.item("Application Fees"))]})
    [txn] = q.co.journal()
    assert txn.total() == 0 and txn.postings[0].amount == clearing == sr["HomeTotalAmt"]
    assert sorted(p.amount for p in txn.postings[1:]) == sorted(lines)
    tb = q.co.trial_balance()
    assert tb.errors == [] and tb["Stripe Clearing"] == clearing
    assert tb["Sales"] + tb["Application Fee Revenue"] == -clearing


def test_qbo_transaction_currency_must_be_the_customers():
    q = Qbo(multicurrency=True)
    usd = q.customer("Stripe Customers")                       # created without a currency: home (USD)
    err = q.fault("SalesReceipt", {"TxnDate": "2024-05-01", "CustomerRef": usd, "CurrencyRef": {"value": "EUR"},
                                   "ExchangeRate": D("1.08"), "Line": [sales_line("10", q.item("Stripe Sales"))]})
    assert err["code"] == "6000" and err["element"] == "CurrencyRef" and "USD" in err["Detail"]
    eur = q.customer("Euro Buyer", "EUR")
    doc = q.create("SalesReceipt", {"TxnDate": "2024-05-01", "CustomerRef": eur, "ExchangeRate": D("1.1"),
                                    "Line": [sales_line("10", q.item("Stripe Sales"))]})
    assert doc["CurrencyRef"] == {"value": "EUR"}                # no CurrencyRef: the customer's currency


def test_qbo_account_must_be_home_or_transaction_currency():
    q = Qbo(multicurrency=True)
    q.co.seed_account("Stripe Clearing GBP", "Bank", currency="GBP")
    with pytest.raises(ValueError):
        q.co.seed_account("Euro Sales", "Income", currency="EUR")       # income accounts are home-currency only
    eur = q.customer("Euro Buyer", "EUR")
    err = q.fault("SalesReceipt", {"TxnDate": "2024-05-01", "CustomerRef": eur, "ExchangeRate": D("1.1"),
                                   "DepositToAccountRef": q.acc("Stripe Clearing GBP"),
                                   "Line": [sales_line("10", q.item("Stripe Sales"))]})
    assert err["code"] == "6000" and "home currency or the transaction currency" in err["Detail"]
    assert err["element"] == "DepositToAccountRef"
    q.co.seed_account("Stripe Clearing EUR", "Bank", currency="EUR")
    q.create("SalesReceipt", {"TxnDate": "2024-05-01", "CustomerRef": eur, "ExchangeRate": D("1.1"),
                              "DepositToAccountRef": q.acc("Stripe Clearing EUR"),
                              "Line": [sales_line("10", q.item("Stripe Sales"))]})
    assert q.co.trial_balance()["Stripe Clearing EUR"] == D("11.00")


def test_qbo_missing_exchange_rate_uses_the_companys_rate_for_the_date_else_1():
    q = Qbo(multicurrency=True)
    q.co.exchange_rates[("EUR", "2024-04-30")] = D("1.07")
    q.co.exchange_rates[("EUR", "2024-05-03")] = D("1.09")
    eur = q.customer("Euro Buyer", "EUR")
    a = q.create("SalesReceipt", {"TxnDate": "2024-05-01", "CustomerRef": eur,
                                  "Line": [sales_line("100", q.item("Stripe Sales"))]})
    assert a["ExchangeRate"] == D("1.07") and a["HomeTotalAmt"] == D("107.00")
    q.create("Customer", {"DisplayName": "Pound Buyer", "CurrencyRef": {"value": "GBP"}})
    b = q.create("SalesReceipt", {"TxnDate": "2024-05-01", "CustomerRef": {"value": q.co.find("Customer", "Pound Buyer")["Id"]},
                                  "Line": [sales_line("100", q.item("Stripe Sales"))]})
    assert b["ExchangeRate"] == 1 and b["HomeTotalAmt"] == D("100.00")


def test_qbo_batch_items_post_too(qbo):
    r = qbo.http.post(f"/v3/company/{REALM}/batch", headers={"Authorization": f"Bearer {qbo.token}"},
                      content=jsonio.dumps({"BatchItemRequest": [
                          {"bId": "1", "operation": "create", "Transfer": {
                              "TxnDate": "2024-05-06", "FromAccountRef": qbo.acc("Stripe Clearing"),
                              "ToAccountRef": qbo.acc("Operating Bank"), "Amount": D("1.00")}},
                          {"bId": "2", "operation": "create", "JournalEntry": {"TxnDate": "2024-05-06", "Line": [
                              je_line("1.00", "Debit", qbo.acc("Stripe Fees"))]}}]}))
    out = {i["bId"]: i for i in jsonio.loads(r.text)["BatchItemResponse"]}
    assert "Transfer" in out["1"] and out["2"]["Fault"]["Error"][0]["code"] == "6000"
    assert [t.doc_type for t in qbo.co.journal()] == ["Transfer"]


# ---- QuickBooks Desktop (qbXML) ----------------------------------------------------------------

from lxml import etree  # noqa: E402

from tests.standins.web_connector import XSD_PATH, FakeQuickBooks  # noqa: E402

needs_xsd = pytest.mark.skipif(not XSD_PATH.exists(), reason=f"Intuit's qbXML schema not found at {XSD_PATH}")


def ref(tag: str, name: str) -> str:
    return f"<{tag}><FullName>{name}</FullName></{tag}>"


def run(qb: FakeQuickBooks, *adds: str) -> list[tuple[int, str, str | None]]:
    """Send one document of <XAdd> bodies; (statusCode, statusMessage, TxnID/ListID) per request."""
    rqs = "".join(f'<{a[1:a.index(">")]}Rq requestID="{i}">{a}</{a[1:a.index(">")]}Rq>' for i, a in enumerate(adds))
    doc = (f'<?xml version="1.0" encoding="utf-8"?><?qbxml version="12.0"?><QBXML>'
           f'<QBXMLMsgsRq onError="continueOnError">{rqs}</QBXMLMsgsRq></QBXML>')
    out = []
    for rs in etree.fromstring(qb.process(doc).encode()).find("QBXMLMsgsRs"):
        ident = rs.findtext("*/TxnID") or rs.findtext("*/ListID")
        out.append((int(rs.get("statusCode")), rs.get("statusMessage"), ident))
    return out


def customer_add(name: str, currency: str | None = None) -> str:
    return f"<CustomerAdd><Name>{name}</Name>{ref('CurrencyRef', currency) if currency else ''}</CustomerAdd>"


def sales_receipt(customer: str, deposit: str, *lines: tuple[str, str], rate: str | None = None,
                  date: str = "2024-05-01") -> str:
    body = "".join(f"<SalesReceiptLineAdd>{ref('ItemRef', item)}<Amount>{amount}</Amount></SalesReceiptLineAdd>"
                   for item, amount in lines)
    xr = f"<ExchangeRate>{rate}</ExchangeRate>" if rate else ""
    return (f"<SalesReceiptAdd>{ref('CustomerRef', customer)}<TxnDate>{date}</TxnDate>"
            f"{ref('DepositToAccountRef', deposit)}{xr}{body}</SalesReceiptAdd>")


def credit_memo(customer: str, item: str, amount: str) -> str:
    return (f"<CreditMemoAdd>{ref('CustomerRef', customer)}<TxnDate>2024-05-02</TxnDate>"
            f"<CreditMemoLineAdd>{ref('ItemRef', item)}<Amount>{amount}</Amount></CreditMemoLineAdd></CreditMemoAdd>")


def refund(customer: str, source: str, memo_id: str, amount: str) -> str:
    return (f"<ARRefundCreditCardAdd>{ref('CustomerRef', customer)}{ref('RefundFromAccountRef', source)}"
            f"<TxnDate>2024-05-02</TxnDate><RefundAppliedToTxnAdd><TxnID>{memo_id}</TxnID>"
            f"<RefundAmount>{amount}</RefundAmount></RefundAppliedToTxnAdd></ARRefundCreditCardAdd>")


def check(bank: str, *lines: tuple[str, str]) -> str:
    body = "".join(f"<ExpenseLineAdd>{ref('AccountRef', acc)}<Amount>{amount}</Amount></ExpenseLineAdd>"
                   for acc, amount in lines)
    return f"<CheckAdd>{ref('AccountRef', bank)}<TxnDate>2024-05-03</TxnDate><Memo>Stripe fees</Memo>{body}</CheckAdd>"


def deposit(to: str, *lines: tuple[str, str], currency: str | None = None, rate: str | None = None) -> str:
    body = "".join(f"<DepositLineAdd>{ref('AccountRef', acc)}<Amount>{amount}</Amount></DepositLineAdd>"
                   for acc, amount in lines)
    cur = ref("CurrencyRef", currency) if currency else ""
    xr = f"<ExchangeRate>{rate}</ExchangeRate>" if rate else ""
    return f"<DepositAdd><TxnDate>2024-05-05</TxnDate>{ref('DepositToAccountRef', to)}{cur}{xr}{body}</DepositAdd>"


def journal_entry(debits: list[tuple[str, str]], credits: list[tuple[str, str]]) -> str:
    d = "".join(f"<JournalDebitLine>{ref('AccountRef', a)}<Amount>{x}</Amount></JournalDebitLine>" for a, x in debits)
    c = "".join(f"<JournalCreditLine>{ref('AccountRef', a)}<Amount>{x}</Amount></JournalCreditLine>" for a, x in credits)
    return f"<JournalEntryAdd><TxnDate>2024-05-04</TxnDate><RefNumber>po_1</RefNumber>{d}{c}</JournalEntryAdd>"


def receive_payment(customer: str, amount: str, to: str) -> str:
    return (f"<ReceivePaymentAdd>{ref('CustomerRef', customer)}<TxnDate>2024-05-06</TxnDate>"
            f"<TotalAmount>{amount}</TotalAmount>{ref('DepositToAccountRef', to)}<IsAutoApply>true</IsAutoApply>"
            "</ReceivePaymentAdd>")


@needs_xsd
def test_qbd_every_request_posts_as_quickbooks_posts_it():
    qb = FakeQuickBooks()
    [(ok, _, _)] = run(qb, customer_add("cus_1"))
    assert ok == 0
    (s1, _, _), (s2, _, cm) = run(qb, sales_receipt("cus_1", "Stripe Clearing", ("Stripe Sales", "100.00"),
                                                    ("Application Fees", "20.00")),
                                  credit_memo("cus_1", "Stripe Sales", "30.00"))
    results = run(qb, refund("cus_1", "Stripe Clearing", cm, "30.00"), check("Stripe Clearing", ("Stripe Fees", "3.78")),
                  deposit("Operating Bank", ("Stripe Clearing", "50.00")),
                  journal_entry([("Chargebacks", "15.00"), ("Dispute Fees", "15.00")], [("Stripe Clearing", "30.00")]),
                  receive_payment("cus_1", "10.00", "Stripe Clearing"))
    assert (s1, s2) == (0, 0) and [r[0] for r in results] == [0] * 5, results
    j = {t.doc_type: {p.account: p.amount for p in t.postings} for t in qb.journal()}
    assert j["SalesReceipt"] == {"Stripe Clearing": D("120.00"), "Sales": D("-100.00"),
                                 "Application Fee Revenue": D("-20.00")}
    assert j["CreditMemo"] == {"Accounts Receivable": D("-30.00"), "Sales": D("30.00")}
    assert j["ARRefundCreditCard"] == {"Stripe Clearing": D("-30.00"), "Accounts Receivable": D("30.00")}
    assert j["Check"] == {"Stripe Clearing": D("-3.78"), "Stripe Fees": D("3.78")}
    assert j["Deposit"] == {"Operating Bank": D("50.00"), "Stripe Clearing": D("-50.00")}
    assert j["ReceivePayment"] == {"Stripe Clearing": D("10.00"), "Accounts Receivable": D("-10.00")}
    tb = qb.trial_balance()
    assert tb.errors == [] and sum(tb.balances.values()) == 0
    assert tb["Stripe Clearing"] == D("120.00") - 30 - D("3.78") - 50 - 30 + 10
    assert tb["Accounts Receivable"] == D("-10.00") and tb["Sales"] == D("-70.00")
    assert len(qb.txns) == 7 and {t.txn_id for t in qb.txns} == {t.id for t in qb.journal()}


@needs_xsd
def test_qbd_refusals_carry_quickbooks_status_codes():
    qb = FakeQuickBooks(customers={"cus_1": "80000001-1700000000"}, other_names={"Stripe"})
    got = run(qb, customer_add("cus_1"), customer_add("Stripe"),
              sales_receipt("cus_1", "Stripe Clearnig", ("Stripe Sales", "1.00")),
              sales_receipt("cus_1", "Stripe Clearing", ("Stripe Sale", "1.00")),
              sales_receipt("cus_9", "Stripe Clearing", ("Stripe Sales", "1.00")),
              journal_entry([("Chargebacks", "15.00")], [("Stripe Clearing", "14.99")]),
              refund("cus_1", "Stripe Clearing", "DEAD-1700000000", "1.00"))
    codes = [c for c, _, _ in got]
    assert codes == [3100, 3100, 3140, 3140, 3140, 3180, 3120], got
    assert 'Account "Stripe Clearnig"' in got[2][1] and 'Item "Stripe Sale"' in got[3][1]
    assert 'Customer "cus_9"' in got[4][1] and "Transaction not in balance" in got[5][1]
    assert qb.journal() == [] and qb.txns == []
    # a refund larger than the credit left on the memo is refused, and the credit is used up once
    (_, _, cm), = run(qb, credit_memo("cus_1", "Stripe Sales", "5.00"))
    assert [c for c, _, _ in run(qb, refund("cus_1", "Stripe Clearing", cm, "5.01"),
                                 refund("cus_1", "Stripe Clearing", cm, "3.00"),
                                 refund("cus_1", "Stripe Clearing", cm, "3.00"))] == [3180, 0, 3180]


@needs_xsd
@pytest.mark.parametrize("status", [3175, 3170])
def test_qbd_busy_record_is_not_booked(status):
    qb = FakeQuickBooks(busy_requests=1, busy_status=status, customers={"cus_1": "80000001-1700000000"})
    got = run(qb, sales_receipt("cus_1", "Stripe Clearing", ("Stripe Sales", "1.00")),
              sales_receipt("cus_1", "Stripe Clearing", ("Stripe Sales", "2.00")))
    assert [c for c, _, _ in got] == [status, 0] and "another user" in got[0][1]
    assert qb.trial_balance()["Stripe Clearing"] == D("2.00")


@needs_xsd
def test_qbd_requests_must_be_schema_valid():
    qb = FakeQuickBooks()
    bad = ('<?xml version="1.0"?><?qbxml version="12.0"?><QBXML><QBXMLMsgsRq onError="continueOnError">'
           '<CheckAddRq><CheckAdd><TxnDate>2024-05-03</TxnDate>' + ref("AccountRef", "Stripe Clearing") +
           "</CheckAdd></CheckAddRq></QBXMLMsgsRq></QBXML>")             # AccountRef must come first
    with pytest.raises(etree.DocumentInvalid):
        qb.process(bad)


@needs_xsd
def test_qbd_foreign_currency_needs_multicurrency():
    qb = FakeQuickBooks(customers={"cus_1": "80000001-1700000000"})
    got = run(qb, customer_add("cus_eur", "Euro"), customer_add("cus_usd", "US Dollar"),
              sales_receipt("cus_1", "Stripe Clearing", ("Stripe Sales", "1.00"), rate="1.08"),
              deposit("Operating Bank", ("Stripe Clearing", "1.00"), currency="Euro"))
    assert [c for c, _, _ in got] == [3250, 0, 3250, 3250], got
    assert "cus_eur" not in qb.customers and qb.journal() == []


@needs_xsd
def test_qbd_multicurrency_books_home_amounts_and_checks_account_currencies():
    qb = FakeQuickBooks(multicurrency=True, exchange_rates={"EUR": D("1.07")})
    qb.add_account("Stripe Clearing EUR", "Bank", "Euro")
    qb.add_account("Stripe Clearing GBP", "Bank", "GBP")
    with pytest.raises(ValueError):
        qb.add_account("Euro Sales", "Income", "EUR")
    run(qb, customer_add("cus_eur", "Euro"), customer_add("cus_usd"))
    assert qb.customer_currency == {"cus_eur": "EUR"}
    got = run(qb, sales_receipt("cus_eur", "Stripe Clearing EUR", ("Stripe Sales", "10.00"), rate="1.0834"),
              sales_receipt("cus_eur", "Stripe Clearing EUR", ("Stripe Sales", "100.00")),        # the list's rate
              sales_receipt("cus_eur", "Stripe Clearing GBP", ("Stripe Sales", "1.00"), rate="1.1"),
              sales_receipt("cus_usd", "Stripe Clearing EUR", ("Stripe Sales", "1.00")),
              deposit("Operating Bank", ("Stripe Clearing EUR", "20.00"), currency="Euro", rate="1.1"),
              check("Stripe Clearing EUR", ("Stripe Fees", "0.01"), ("Stripe Fees", "0.01")))
    assert [c for c, _, _ in got] == [0, 0, 3140, 3140, 0, 0], got
    assert "currency of the account must be either in home currency or the transaction currency" in got[2][1]
    first, second = qb.journal()[:2]
    assert {p.account: p.amount for p in first.postings} == {"Stripe Clearing EUR": D("10.83"), "Sales": D("-10.83")}
    assert [(p.currency, p.foreign_amount) for p in first.postings] == [("EUR", D("10.00")), ("EUR", D("-10.00"))]
    assert second.postings[0].amount == D("107.00") and qb.txns[1].exchange_rate == D("1.07")
    tb = qb.trial_balance()
    assert tb.errors == [] and sum(tb.balances.values()) == 0
    # EUR 20 at 1.1 out of clearing; the check: EUR 0.02 at the list's 1.07 -> 0.02 (each line 0.0107 -> 0.01)
    assert tb["Stripe Clearing EUR"] == D("10.83") + D("107.00") - D("22.00") - D("0.02")
    assert tb["Operating Bank"] == D("22.00") and tb["Stripe Fees"] == D("0.02")
