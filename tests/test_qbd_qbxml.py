"""qbXML documents: every request the connector can produce validates against Intuit's XSD."""

from __future__ import annotations

from decimal import Decimal

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from lxml import etree

from connectors.base import ErrorKind, TargetError
from connectors.quickbooks_desktop import qbxml
from connectors.quickbooks_desktop.actions import ACTIONS
from tests.standins.web_connector import XSD_PATH, hcp_response

pytestmark = pytest.mark.skipif(not XSD_PATH.exists(), reason=f"Intuit's qbXML schema not found at {XSD_PATH} "
                                                              "(shared/reference is beside the checkout in CI)")


@pytest.fixture(scope="module")
def schema():
    return etree.XMLSchema(etree.parse(str(XSD_PATH)))


REF = {"FullName": "Stripe Clearing"}
REF_ID = {"ListID": "80000001-1700000000", "FullName": "Sales"}
ADDRESS = {"Addr1": "1 Main St", "Addr2": "Suite 2", "City": "Springfield", "State": "IL", "PostalCode": "62701",
           "Country": "US", "Note": "front desk"}
SALES_LINE = {"Amount": Decimal("12.5"), "ServiceDate": "2024-03-01", "SalesTaxCodeRef": {"FullName": "Non"},
              "ClassRef": REF_ID, "Quantity": Decimal("2"), "Desc": "two widgets", "ItemRef": REF_ID,
              "OverrideItemAccountRef": {"FullName": "Sales"}}

# Every field each action accepts, keys deliberately out of the XSD's order.
FULL = {
    "sales_receipt": {
        "SalesReceiptLineAdd": [SALES_LINE, {"ItemRef": REF, "Amount": Decimal("-1.00")}],
        "ExchangeRate": Decimal("1.0834"), "DepositToAccountRef": REF, "IsToBeEmailed": False,
        "IsToBePrinted": False, "Memo": "Stripe charge ch_1", "PaymentMethodRef": {"FullName": "Stripe"},
        "BillAddress": ADDRESS, "RefNumber": "ch_1PgafuB7", "TxnDate": "2024-03-01", "ClassRef": REF_ID,
        "CustomerRef": {"FullName": "cus_123"},
    },
    "credit_memo": {
        "CreditMemoLineAdd": [SALES_LINE], "ExchangeRate": Decimal("0.9"), "IsToBeEmailed": True,
        "IsToBePrinted": False, "Memo": "refund", "BillAddress": ADDRESS, "RefNumber": "ch_1",
        "TxnDate": "2024-03-02", "ARAccountRef": {"FullName": "Accounts Receivable"}, "ClassRef": REF_ID,
        "CustomerRef": {"ListID": "80000002-1700000000"},
    },
    "deposit": {
        "DepositLineAdd": [{"Amount": Decimal("11"), "ClassRef": REF_ID, "PaymentMethodRef": {"FullName": "ACH"},
                            "CheckNumber": "po_1", "Memo": "payout", "AccountRef": REF,
                            "EntityRef": {"FullName": "Stripe"}}],
        "ExchangeRate": Decimal("1.1"), "CurrencyRef": {"FullName": "Euro"}, "Memo": "Stripe payout po_1",
        "DepositToAccountRef": {"FullName": "Operating Bank"}, "TxnDate": "2024-03-03",
    },
    "journal_entry": {
        "JournalCreditLine": [{"ClassRef": REF_ID, "EntityRef": {"FullName": "Stripe"}, "Memo": "cr",
                               "Amount": Decimal("5.00"), "AccountRef": {"FullName": "Operating Bank"}}],
        "JournalDebitLine": [{"Memo": "dr", "Amount": Decimal("5"), "AccountRef": REF}],
        "ExchangeRate": Decimal("1.2"), "CurrencyRef": {"FullName": "Euro"}, "IsAdjustment": False,
        "Memo": "payout debit", "RefNumber": "po_1", "TxnDate": "2024-03-04",
    },
    "receive_payment": {
        "AppliedToTxnAdd": [{"PaymentAmount": Decimal("10.00"), "TxnID": "1A-1700000000"}],
        "DepositToAccountRef": REF, "Memo": "payment", "PaymentMethodRef": {"FullName": "Stripe"},
        "ExchangeRate": Decimal("1"), "TotalAmount": Decimal("10"), "RefNumber": "py_1", "TxnDate": "2024-03-05",
        "ARAccountRef": {"FullName": "Accounts Receivable"}, "CustomerRef": {"FullName": "cus_123"},
    },
    "customer": {
        "CurrencyRef": {"FullName": "US Dollar"}, "Notes": "Stripe customer cus_123", "AccountNumber": "cus_123",
        "Email": "billing@example.com", "Phone": "555-0100", "BillAddress": ADDRESS, "LastName": "Doe",
        "FirstName": "Jo", "CompanyName": "Example Ltd", "IsActive": True, "Name": "cus_123",
    },
}
MINIMAL = {
    "sales_receipt": {"TxnDate": "2024-03-01", "SalesReceiptLineAdd": [{"ItemRef": REF, "Amount": 1}]},
    "credit_memo": {"TxnDate": "2024-03-01", "CustomerRef": REF, "CreditMemoLineAdd": [{"ItemRef": REF, "Amount": 1}]},
    "deposit": {"TxnDate": "2024-03-01", "DepositToAccountRef": REF, "DepositLineAdd": [{"AccountRef": REF, "Amount": 1}]},
    "journal_entry": {"TxnDate": "2024-03-01", "JournalDebitLine": [{"AccountRef": REF, "Amount": 1}],
                      "JournalCreditLine": [{"AccountRef": REF, "Amount": 1}]},
    "receive_payment": {"TxnDate": "2024-03-01", "CustomerRef": REF, "TotalAmount": Decimal("3.10")},
    "customer": {"Name": "Stripe Customer"},
}


def test_examples_cover_every_action_and_satisfy_its_json_schema():
    assert set(FULL) == set(ACTIONS) == set(MINIMAL)
    for action in ACTIONS:
        for payload in (FULL[action], MINIMAL[action]):
            validator = Draft202012Validator(ACTIONS[action].schema, format_checker=FormatChecker())
            errors = list(validator.iter_errors(payload))
            assert not errors, (action, errors[0].message)


@pytest.mark.parametrize("action", sorted(ACTIONS))
@pytest.mark.parametrize("example", ["full", "minimal"])
def test_add_and_query_requests_validate_against_the_xsd(schema, action, example):
    payload = (FULL if example == "full" else MINIMAL)[action]
    requests = [qbxml.add_request(action, payload, "1", "flow:route:evt_1"),
                qbxml.query_request(action, payload, "2")]
    doc = etree.fromstring(qbxml.message(requests).encode())
    schema.assertValid(doc)


def test_many_requests_in_one_message_with_version_header_and_request_ids(schema):
    reqs = [qbxml.add_request(a, FULL[a], str(i), f"k{i}") for i, a in enumerate(sorted(ACTIONS))]
    text = qbxml.message(reqs, "12.0")
    assert '<?qbxml version="12.0"?>' in text
    doc = etree.fromstring(text.encode())
    schema.assertValid(doc)
    msgs = doc.find("QBXMLMsgsRq")
    assert msgs.get("onError") == "continueOnError"
    assert [rq.get("requestID") for rq in msgs] == [str(i) for i in range(len(ACTIONS))]


def test_the_schema_really_checks_element_order(schema):
    """The XSD rejects a SalesReceiptAdd whose Memo precedes TxnDate, so the tests above mean something."""
    rq = qbxml.add_request("sales_receipt", MINIMAL["sales_receipt"], "1", "k")
    add = rq.find("SalesReceiptAdd")
    memo = add.find("Memo")
    add.remove(memo)
    add.insert(0, memo)
    root = etree.fromstring(qbxml.message([rq]).encode())
    assert not schema.validate(root)


def test_transactions_carry_the_delivery_tag_in_the_memo_and_customers_do_not():
    rq = qbxml.add_request("deposit", MINIMAL["deposit"], "1", "qbd-payouts:deposit:evt_1")
    assert rq.findtext("DepositAdd/Memo") == qbxml.delivery_tag("qbd-payouts:deposit:evt_1")
    rq = qbxml.add_request("sales_receipt", FULL["sales_receipt"], "1", "k")
    assert rq.findtext("SalesReceiptAdd/Memo") == "Stripe charge ch_1 " + qbxml.delivery_tag("k")
    assert qbxml.add_request("customer", MINIMAL["customer"], "1", "k").find("CustomerAdd/Memo") is None
    assert qbxml.delivery_tag("a") != qbxml.delivery_tag("b")
    assert qbxml.TAG_RE.fullmatch(qbxml.delivery_tag("a"))


def test_amounts_are_written_with_two_decimals_and_more_are_refused():
    rq = qbxml.add_request("receive_payment", MINIMAL["receive_payment"], "1", "k")
    assert rq.findtext("ReceivePaymentAdd/TotalAmount") == "3.10"
    assert rq.findtext("ReceivePaymentAdd/IsAutoApply") == "true"
    with pytest.raises(TargetError) as exc:
        qbxml.add_request("receive_payment", {**MINIMAL["receive_payment"], "TotalAmount": Decimal("1.005")}, "1", "k")
    assert exc.value.kind == ErrorKind.PERMANENT and "TotalAmount" in str(exc.value)
    problems = ACTIONS["deposit"].check({**MINIMAL["deposit"], "DepositLineAdd": [
        {"AccountRef": REF, "Amount": Decimal("1.234")}]})
    assert problems == ["DepositLineAdd[0].Amount: QuickBooks amounts have at most 2 decimals, got 1.234"]


def test_unknown_elements_and_actions_are_refused_with_their_names():
    with pytest.raises(TargetError, match="no element 'Colour'"):
        qbxml.add_request("deposit", {**MINIMAL["deposit"], "Colour": "red"}, "1", "k")
    with pytest.raises(TargetError, match="no action 'invoice'"):
        qbxml.add_request("invoice", {}, "1", "k")


def test_journal_must_balance():
    bad = {**MINIMAL["journal_entry"], "JournalCreditLine": [{"AccountRef": REF, "Amount": 2}]}
    assert ACTIONS["journal_entry"].check(bad) == ["debits (1) must equal credits (2)"]
    assert ACTIONS["journal_entry"].check(MINIMAL["journal_entry"]) == []


def test_query_by_refnumber_or_by_date():
    q = qbxml.query_request("sales_receipt", FULL["sales_receipt"], "7")
    assert q.findtext("RefNumber") == "ch_1PgafuB7" and q.find("TxnDateRangeFilter") is None
    q = qbxml.query_request("deposit", FULL["deposit"], "8")
    assert q.findtext("TxnDateRangeFilter/FromTxnDate") == "2024-03-03"
    assert [e.text for e in q.findall("IncludeRetElement")] == ["TxnID", "Memo"]
    q = qbxml.query_request("customer", MINIMAL["customer"], "9")
    assert q.tag == "CustomerQueryRq" and q.findtext("FullName") == "Stripe Customer"


@pytest.mark.parametrize("versions,major,minor,expected", [
    (["12.0", "13.0", "16.0"], 16, 0, "13.0"),        # preferred, supported
    (["2.0", "8.0", "12.0"], 12, 0, "12.0"),           # older QuickBooks: the highest it supports
    ([], 16, 0, "13.0"),                               # no host response: the reported maximum allows 13.0
    ([], 10, 0, "10.0"),                               # ...or is below it
    ([], None, None, "13.0"),                          # nothing reported at all: the fallback
])
def test_version_header_follows_what_the_web_connector_reports(versions, major, minor, expected):
    hcp = hcp_response(versions) if versions else ""
    assert qbxml.choose_version("13.0", hcp, major, minor) == expected
    # a host response that is not XML counts as none: the reported maximum decides
    assert qbxml.choose_version("13.0", "<not xml", major, minor) == qbxml.choose_version("13.0", "", major, minor)


def test_parse_response_and_classification():
    text = ('<?xml version="1.0" ?><QBXML><QBXMLMsgsRs>'
            '<SalesReceiptAddRs requestID="5" statusCode="0" statusSeverity="Info" statusMessage="Status OK">'
            '<SalesReceiptRet><TxnID>1A-1</TxnID><Memo>m</Memo></SalesReceiptRet></SalesReceiptAddRs>'
            '<DepositAddRs requestID="6" statusCode="3140" statusSeverity="Error" statusMessage="There is an '
            'invalid reference to QuickBooks Account &quot;Nope&quot; in the Deposit."/>'
            '<JournalEntryAddRs requestID="7" statusCode="3175" statusSeverity="Error" statusMessage="in use"/>'
            '</QBXMLMsgsRs></QBXML>')
    ok, bad, busy = qbxml.parse_response(text)
    assert (ok.request_id, ok.ok, ok.ref()) == ("5", True, "1A-1")
    err = qbxml.classify(bad)
    assert err.kind == ErrorKind.PERMANENT and 'Account "Nope"' in str(err) and "3140" in str(err)
    assert qbxml.classify(busy).kind == ErrorKind.RETRYABLE
    with pytest.raises(ValueError, match="not well-formed"):
        qbxml.parse_response("<QBXML>")
    with pytest.raises(ValueError, match="no QBXML/QBXMLMsgsRs"):
        qbxml.parse_response("<Other/>")


def test_currency_refs_name_quickbooks_currencies_not_iso_codes(schema):
    """QuickBooks' currency list names its built-in currencies ("Euro"); an ISO code is translated,
    a name (or a code the table lacks) is written as given."""
    rq = qbxml.add_request("customer", {"Name": "Stripe Customers EUR", "CurrencyRef": {"FullName": "EUR"}}, "1", "k")
    assert rq.findtext("CustomerAdd/CurrencyRef/FullName") == "Euro"
    rq = qbxml.add_request("journal_entry", {**MINIMAL["journal_entry"], "CurrencyRef": {"FullName": "JPY"},
                                             "ExchangeRate": Decimal("0.0067")}, "2", "k")
    assert rq.findtext("JournalEntryAdd/CurrencyRef/FullName") == "Japanese Yen"
    assert rq.findtext("JournalEntryAdd/ExchangeRate") == "0.0067"
    schema.assertValid(etree.fromstring(qbxml.message([rq]).encode()))
    assert qbxml.currency_name("Euro") == "Euro" and qbxml.currency_name("XYZ") == "XYZ"
    assert qbxml.currency_code("Euro") == "EUR" and qbxml.currency_code("eur") == "EUR"


def test_sales_lines_can_name_the_income_account(schema):
    payload = {"TxnDate": "2024-03-01", "SalesReceiptLineAdd": [
        {"OverrideItemAccountRef": {"FullName": "Sales"}, "Amount": Decimal("20"), "ItemRef": REF}]}
    rq = qbxml.add_request("sales_receipt", payload, "1", "k")
    line = rq.find("SalesReceiptAdd/SalesReceiptLineAdd")
    assert [c.tag for c in line] == ["ItemRef", "Amount", "OverrideItemAccountRef"]
    schema.assertValid(etree.fromstring(qbxml.message([rq]).encode()))


def test_single_currency_company_files_refuse_foreign_currency_at_plan_time():
    from connectors.quickbooks_desktop.actions import check_payload
    single, multi = {"type": "quickbooks_desktop"}, {"type": "quickbooks_desktop", "multicurrency": True}
    settings = {"home_currency": "USD"}
    foreign = {"Name": "Stripe Customers EUR", "CurrencyRef": {"FullName": "EUR"}}
    assert check_payload("customer", foreign, multi, settings) == []
    [problem] = check_payload("customer", foreign, single, settings)
    assert "CurrencyRef EUR is not the company file's home currency USD" in problem
    assert check_payload("customer", {"Name": "x", "CurrencyRef": {"FullName": "US Dollar"}}, single, settings) == []
    rated = {**MINIMAL["sales_receipt"], "ExchangeRate": Decimal("1.0834")}
    assert "ExchangeRate 1.0834" in check_payload("sales_receipt", rated, single, settings)[0]
    assert check_payload("sales_receipt", rated, multi, settings) == []
    assert check_payload("sales_receipt", {**rated, "ExchangeRate": Decimal("1")}, single, settings) == []
