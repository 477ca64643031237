"""QuickBooks Desktop actions (qbXML through the Web Connector) and their payload schemas.

Payload keys are qbXML element names, so a mapping reads like the request it
produces; ``qbxml.py`` puts them in the order Intuit's schema requires. Light
module: no XML or HTTP imports, so ``ledgerflow validate`` stays fast.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

from connectors.base import Action, find_values
from connectors.contract import CURRENCY_SETTINGS, PULL, SECRET_REF, Capabilities, ConnectorSpec, config_schema, with_examples


def _str(max_length: int) -> dict:
    return {"type": "string", "minLength": 1, "maxLength": max_length}


# A reference to a QuickBooks list element (account, item, customer, class, ...), by ListID or FullName.
REF = {
    "type": "object", "additionalProperties": False, "minProperties": 1,
    "properties": {"ListID": _str(36), "FullName": _str(209)},
}
AMOUNT = {"type": "number", "description": "In the company's currency units, at most 2 decimals."}
DATE = {"type": "string", "format": "date"}
MEMO = {"type": "string", "maxLength": 4000,
        "description": "Up to 4000 characters; ledgerflow appends a short tag carrying the delivery key."}
REFNUMBER = {"type": "string", "maxLength": 11, "description": "QuickBooks keeps 11 characters."}
EXCHANGE_RATE = {"type": "number", "exclusiveMinimum": 0,
                 "description": "Home-currency units per unit of the transaction's currency (multicurrency "
                                "company files only)."}

ADDRESS = {
    "type": "object", "additionalProperties": False,
    "properties": {**{f"Addr{i}": _str(41) for i in range(1, 6)}, "City": _str(31), "State": _str(21),
                   "PostalCode": _str(13), "Country": _str(31), "Note": _str(41)},
}

SALES_LINE = {
    "type": "object", "additionalProperties": False, "required": ["ItemRef", "Amount"],
    "properties": {"ItemRef": REF, "Desc": {"type": "string", "maxLength": 4095},
                   "Quantity": {"type": "number"}, "ClassRef": REF, "Amount": AMOUNT,
                   "ServiceDate": DATE, "SalesTaxCodeRef": REF,
                   "OverrideItemAccountRef": {**REF, "description": "The income account this line credits, "
                                                                   "instead of the item's own."}},
}


def _sales_doc(line_key: str, *, customer_required: bool) -> dict:
    props = {
        "CustomerRef": REF, "ClassRef": REF, "TxnDate": DATE, "RefNumber": REFNUMBER,
        "BillAddress": ADDRESS, "PaymentMethodRef": REF, "Memo": MEMO,
        "IsToBePrinted": {"type": "boolean"}, "IsToBeEmailed": {"type": "boolean"},
        "ExchangeRate": EXCHANGE_RATE,
        line_key: {"type": "array", "minItems": 1, "items": SALES_LINE},
    }
    required = ["TxnDate", line_key] + (["CustomerRef"] if customer_required else [])
    if line_key == "SalesReceiptLineAdd":
        props["DepositToAccountRef"] = REF
    else:
        props["ARAccountRef"] = REF
    return {"type": "object", "additionalProperties": False, "required": required, "properties": props}


SALES_RECEIPT = _sales_doc("SalesReceiptLineAdd", customer_required=False)
CREDIT_MEMO = _sales_doc("CreditMemoLineAdd", customer_required=True)

DEPOSIT_LINE = {
    "type": "object", "additionalProperties": False, "required": ["AccountRef", "Amount"],
    "properties": {"EntityRef": REF, "AccountRef": REF, "Memo": MEMO, "CheckNumber": _str(25),
                   "PaymentMethodRef": REF, "ClassRef": REF, "Amount": AMOUNT},
}
DEPOSIT = {
    "type": "object", "additionalProperties": False, "required": ["TxnDate", "DepositToAccountRef", "DepositLineAdd"],
    "properties": {"TxnDate": DATE, "DepositToAccountRef": REF, "Memo": MEMO, "CurrencyRef": REF,
                   "ExchangeRate": EXCHANGE_RATE,
                   "DepositLineAdd": {"type": "array", "minItems": 1, "items": DEPOSIT_LINE}},
}

JOURNAL_LINE = {
    "type": "object", "additionalProperties": False, "required": ["AccountRef", "Amount"],
    "properties": {"AccountRef": REF, "Amount": {**AMOUNT, "minimum": 0}, "Memo": MEMO, "EntityRef": REF,
                   "ClassRef": REF},
}
JOURNAL_ENTRY = {
    "type": "object", "additionalProperties": False, "required": ["TxnDate", "JournalDebitLine", "JournalCreditLine"],
    "properties": {"TxnDate": DATE, "RefNumber": REFNUMBER, "Memo": MEMO, "IsAdjustment": {"type": "boolean"},
                   "CurrencyRef": REF, "ExchangeRate": EXCHANGE_RATE,
                   "JournalDebitLine": {"type": "array", "minItems": 1, "items": JOURNAL_LINE},
                   "JournalCreditLine": {"type": "array", "minItems": 1, "items": JOURNAL_LINE}},
}

RECEIVE_PAYMENT = {
    "type": "object", "additionalProperties": False, "required": ["CustomerRef", "TxnDate", "TotalAmount"],
    "properties": {
        "CustomerRef": REF, "ARAccountRef": REF, "TxnDate": DATE, "RefNumber": REFNUMBER,
        "TotalAmount": AMOUNT, "ExchangeRate": EXCHANGE_RATE, "PaymentMethodRef": REF, "Memo": MEMO,
        "DepositToAccountRef": REF,
        "IsAutoApply": {"type": "boolean", "description": "Let QuickBooks apply the payment (default true)."},
        "AppliedToTxnAdd": {"type": "array", "minItems": 1, "items": {
            "type": "object", "additionalProperties": False, "required": ["TxnID"],
            "properties": {"TxnID": _str(36), "PaymentAmount": AMOUNT}}},
    },
    "not": {"required": ["IsAutoApply", "AppliedToTxnAdd"]},
}

CUSTOMER = {
    "type": "object", "additionalProperties": False, "required": ["Name"],
    "properties": {
        "Name": {**_str(41), "description": "Unique across customers, vendors, employees and other names."},
        "IsActive": {"type": "boolean"}, "CompanyName": _str(41), "FirstName": _str(25), "LastName": _str(25),
        "BillAddress": ADDRESS, "Phone": _str(21), "Email": _str(1023), "AccountNumber": _str(99),
        "Notes": {"type": "string", "maxLength": 4095}, "CurrencyRef": REF,
    },
}


def _amounts(payload: Mapping[str, Any]) -> list[tuple[str, Any]]:
    found = []
    for key, value in payload.items():
        if key in ("Amount", "TotalAmount", "PaymentAmount"):
            found.append((key, value))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, Mapping):
                    found += [(f"{key}[{i}].{k}", v) for k, v in _amounts(item)]
    return found


def _two_decimals(payload: Mapping[str, Any]) -> list[str]:
    problems = []
    for where, value in _amounts(payload):
        try:
            d = Decimal(str(value))
        except InvalidOperation:
            continue
        if d.as_tuple().exponent < -2 and d != d.quantize(Decimal("0.01")):
            problems.append(f"{where}: QuickBooks amounts have at most 2 decimals, got {value}")
        elif abs(d) >= Decimal("1e13"):
            problems.append(f"{where}: {value} is larger than QuickBooks accepts (13 digits)")
    return problems


def _balanced_journal(payload: Mapping[str, Any]) -> list[str]:
    problems = _two_decimals(payload)
    debit = sum((Decimal(str(l.get("Amount", 0))) for l in payload.get("JournalDebitLine") or []), Decimal(0))
    credit = sum((Decimal(str(l.get("Amount", 0))) for l in payload.get("JournalCreditLine") or []), Decimal(0))
    if debit != credit:
        problems.append(f"debits ({debit}) must equal credits ({credit})")
    return problems


ACTIONS = {
    "sales_receipt": Action("sales_receipt", SALES_RECEIPT, "SalesReceiptAdd: a sale paid at once.", _two_decimals),
    "credit_memo": Action("credit_memo", CREDIT_MEMO, "CreditMemoAdd: a refund or credit to a customer.",
                          _two_decimals),
    "deposit": Action("deposit", DEPOSIT, "DepositAdd: money into a bank account (a payout).", _two_decimals),
    "journal_entry": Action("journal_entry", JOURNAL_ENTRY, "JournalEntryAdd: balanced debit and credit lines.",
                            _balanced_journal),
    "receive_payment": Action("receive_payment", RECEIVE_PAYMENT, "ReceivePaymentAdd: a customer payment.",
                              _two_decimals),
    "customer": Action("customer", CUSTOMER, "CustomerAdd, find-or-create: an existing name is looked up."),
}

def _currency(key: str, value: Any) -> str | None:
    if key == "CurrencyRef" and isinstance(value, Mapping) and isinstance(value.get("FullName"), str):
        return value["FullName"]
    return None


def currencies(payload: Any) -> set[str]:
    """Every CurrencyRef FullName in a payload (ISO codes or QuickBooks' currency names)."""
    return find_values(payload, _currency)


def check_payload(action: str, payload: Mapping[str, Any], connection: Mapping[str, Any],
                  settings: Mapping[str, Any]) -> list[str]:
    """Checks that need the connection's settings (the planner runs them at preview/plan time).

    A company file without multicurrency (``multicurrency: false``, the default) takes its
    home currency only: QuickBooks answers 3250 ("feature is not enabled") to a foreign
    CurrencyRef or an ExchangeRate other than 1. ``home_currency`` on the connection
    overrides the project's.
    """
    if connection.get("multicurrency", False):
        return []
    from .currencies import currency_code
    home = str(connection.get("home_currency") or settings.get("home_currency") or "USD").upper()
    problems = []
    foreign = sorted(c for c in currencies(payload) if currency_code(c) != home)
    if foreign:
        problems.append(f"CurrencyRef {', '.join(foreign)} is not the company file's home currency {home}, and the "
                        "connection sets no multicurrency: true (turn on multicurrency in QuickBooks and set "
                        "multicurrency: true on the connection, or book home amounts: posting.gross, doc.amount)")
    rate = payload.get("ExchangeRate")
    if rate is not None:
        try:
            off = Decimal(str(rate)) != 1
        except InvalidOperation:
            off = True
        if off:
            problems.append(f"ExchangeRate {rate}: the company file is single-currency (the connection sets no "
                            "multicurrency: true); leave ExchangeRate out (doc.exchange_rate is 1 there)")
    return problems


# action -> qbXML object name (SalesReceipt -> SalesReceiptAddRq, SalesReceiptQueryRq, SalesReceiptRet)
OBJECTS = {"sales_receipt": "SalesReceipt", "credit_memo": "CreditMemo", "deposit": "Deposit",
           "journal_entry": "JournalEntry", "receive_payment": "ReceivePayment", "customer": "Customer"}


_EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "sales_receipt": [{"TxnDate": "2026-03-02", "RefNumber": "ch_3PqR", "CustomerRef": {"FullName": "Jenny Rosen"},
                       "DepositToAccountRef": {"FullName": "Stripe Clearing"},
                       "SalesReceiptLineAdd": [{"ItemRef": {"FullName": "Stripe Sales"}, "Amount": Decimal("25.00")}]}],
    "credit_memo": [{"TxnDate": "2026-03-03", "RefNumber": "re_3PqR", "CustomerRef": {"FullName": "Jenny Rosen"},
                     "CreditMemoLineAdd": [{"ItemRef": {"FullName": "Stripe Sales"}, "Amount": Decimal("5.00")}]}],
    "deposit": [{"TxnDate": "2026-03-04", "DepositToAccountRef": {"FullName": "Operating Bank"},
                 "DepositLineAdd": [{"AccountRef": {"FullName": "Stripe Clearing"}, "Amount": Decimal("20.00")}]}],
    "journal_entry": [{"TxnDate": "2026-03-02", "RefNumber": "fee_1",
                       "JournalDebitLine": [{"AccountRef": {"FullName": "Stripe Fees"}, "Amount": Decimal("1.03")}],
                       "JournalCreditLine": [{"AccountRef": {"FullName": "Stripe Clearing"},
                                              "Amount": Decimal("1.03")}]}],
    "receive_payment": [{"CustomerRef": {"FullName": "Jenny Rosen"}, "TxnDate": "2026-03-02",
                         "TotalAmount": Decimal("25.00"), "DepositToAccountRef": {"FullName": "Stripe Clearing"}}],
    "customer": [{"Name": "Jenny Rosen", "Email": "jenny@example.com"}],
}
ACTIONS = with_examples(ACTIONS, _EXAMPLES)

SPEC = ConnectorSpec(
    type="quickbooks_desktop",
    connector="connectors.quickbooks_desktop.connector:QuickBooksDesktopConnector",
    description="QuickBooks Desktop / Enterprise through the QuickBooks Web Connector (qbXML over SOAP).",
    actions=ACTIONS,
    payload_check=check_payload,
    config=config_schema("quickbooks_desktop", {
        **CURRENCY_SETTINGS,
        "username": {"type": "string", "minLength": 1, "description": "The Web Connector's user name."},
        "password": {**SECRET_REF, "description": "The Web Connector's password: a secret reference."},
        "company_file": {"type": "string", "description": "The company file's path (default: the open one)."},
        "qbxml_version": {"type": "string", "pattern": "^[0-9]+\\.[0-9]+$", "description": "qbXML version."},
        "requests_per_message": {"type": "integer", "minimum": 1, "description": "Requests per poll (default 50)."},
        "poll_minutes": {"type": "integer", "minimum": 1, "description": "The Web Connector's poll interval."},
        "lease_seconds": {"type": "number", "exclusiveMinimum": 0,
                          "description": "How long a claimed request waits for its answer (default 900)."},
    }, ("username",)),
    capabilities=Capabilities(mode=PULL, batch_size=50, multicurrency=True,
                              idempotency="a find-before-add query by RefNumber and the key's tag in Memo",
                              lookups=("Customer",)),
    store=frozenset({"cache"}),
    mounts=("connectors.quickbooks_desktop.service:mount",),
)
