"""QuickBooks Online actions: one JSON Schema per entity the connector creates.

The schemas follow Intuit's Accounting API v3 reference (minorversion 75): each
lists the fields Intuit requires for a create (``required``) and rejects
unknown keys, so a typo fails at ``validate``/``preview`` rather than as Intuit
fault 2010 at 3 a.m. References (``AccountRef``, ``ItemRef``, ``ClassRef``,
``DepartmentRef``, ``CustomerRef``, ``EntityRef``) take either Intuit's
``{value: <Id>}`` or ``{name: "Stripe Clearing"}``, which the connector looks
up (cached); a ``CustomerRef`` by name/email is found or created, and with
``currency`` it is found by name *and* currency, or created in that currency
(QuickBooks ties a customer to one currency; a transaction must use its
customer's currency).

No HTTP imports here: ``ledgerflow validate`` loads this module only.
"""

from __future__ import annotations

from collections import abc
from decimal import Decimal
from typing import Any, Mapping

from ..base import Action, find_values
from ..contract import CURRENCY_SETTINGS, OAUTH_SETTINGS, Capabilities, ConnectorSpec, OAuthProvider, config_schema, with_examples

DOCNUMBER_MAX = 21          # Intuit: DocNumber, max 21 characters
PRIVATE_NOTE_MAX = 4000

_REF = {
    "type": "object", "additionalProperties": False,
    "properties": {"value": {"type": "string", "minLength": 1}, "name": {"type": "string", "minLength": 1}},
    "anyOf": [{"required": ["value"]}, {"required": ["name"]}],
}
_CUSTOMER_REF = {
    "type": "object", "additionalProperties": False,
    "properties": {"value": {"type": "string", "minLength": 1}, "name": {"type": "string", "minLength": 1},
                   "email": {"type": "string", "format": "email"},
                   "currency": {"type": "string", "pattern": "^[A-Z]{3}$",
                                "description": "The customer's currency: found by DisplayName and this currency, "
                                               "created with CurrencyRef (a multicurrency company ties each "
                                               "customer to one currency)."}},
    "anyOf": [{"required": ["value"]}, {"required": ["name"]}],
    "description": "An Id, or a DisplayName (and optional email and currency) to find or create the customer by.",
}
_ENTITY_REF = {
    "type": "object", "additionalProperties": False,
    "properties": {"value": {"type": "string", "minLength": 1}, "name": {"type": "string", "minLength": 1},
                   "type": {"enum": ["Vendor", "Customer", "Employee"]}},
    "anyOf": [{"required": ["value"]}, {"required": ["name"]}],
}
_AMOUNT = {"type": "number", "minimum": 0}


def _line(detail_type: str, detail_required: list[str], detail_props: dict[str, Any]) -> dict[str, Any]:
    """A transaction line: Amount, Description, DetailType and its detail object."""
    detail: dict[str, Any] = {"type": "object", "additionalProperties": False}
    if detail_required:
        detail["required"] = detail_required
    detail["properties"] = detail_props
    return {"type": "object", "additionalProperties": False, "required": ["Amount", "DetailType", detail_type],
            "properties": {"Amount": {"$ref": "#/$defs/amount"}, "Description": {"type": "string", "maxLength": 4000},
                           "DetailType": {"const": detail_type}, detail_type: detail}}

_DEFS: dict[str, Any] = {
    "ref": _REF, "customer_ref": _CUSTOMER_REF, "entity_ref": _ENTITY_REF, "amount": _AMOUNT,
    "currency_ref": {"type": "object", "additionalProperties": False, "required": ["value"],
                     "properties": {"value": {"type": "string", "pattern": "^[A-Z]{3}$"},
                                    "name": {"type": "string"}}},
    "sales_item_line": _line("SalesItemLineDetail", [], {
        "ItemRef": {"$ref": "#/$defs/ref"}, "ClassRef": {"$ref": "#/$defs/ref"},
        "TaxCodeRef": {"$ref": "#/$defs/ref"}, "Qty": {"type": "number"},
        "UnitPrice": {"type": "number"}, "ServiceDate": {"type": "string", "format": "date"}}),
    "expense_line": _line("AccountBasedExpenseLineDetail", ["AccountRef"], {
        "AccountRef": {"$ref": "#/$defs/ref"}, "ClassRef": {"$ref": "#/$defs/ref"},
        "CustomerRef": {"$ref": "#/$defs/customer_ref"}, "TaxCodeRef": {"$ref": "#/$defs/ref"},
        "BillableStatus": {"enum": ["Billable", "NotBillable", "HasBeenBilled"]}}),
    "journal_line": _line("JournalEntryLineDetail", ["PostingType", "AccountRef"], {
        "PostingType": {"enum": ["Debit", "Credit"]}, "AccountRef": {"$ref": "#/$defs/ref"},
        "ClassRef": {"$ref": "#/$defs/ref"}, "DepartmentRef": {"$ref": "#/$defs/ref"},
        "Entity": {"type": "object", "additionalProperties": False, "required": ["EntityRef"],
                   "properties": {"Type": {"enum": ["Vendor", "Customer", "Employee"]},
                                  "EntityRef": {"$ref": "#/$defs/entity_ref"}}}}),
    "deposit_line": _line("DepositLineDetail", ["AccountRef"], {
        "AccountRef": {"$ref": "#/$defs/ref"}, "ClassRef": {"$ref": "#/$defs/ref"},
        "Entity": {"$ref": "#/$defs/entity_ref"}, "PaymentMethodRef": {"$ref": "#/$defs/ref"},
        "CheckNum": {"type": "string", "maxLength": 21}}),
}

_HEADER: dict[str, Any] = {
    "TxnDate": {"type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
    "PrivateNote": {"type": "string", "maxLength": PRIVATE_NOTE_MAX},
    "CurrencyRef": {"$ref": "#/$defs/currency_ref"},
    "ExchangeRate": {"type": "number", "exclusiveMinimum": 0,
                     "description": "Home-currency units per one unit of CurrencyRef."},
    "DepartmentRef": {"$ref": "#/$defs/ref"},
}
_DOCNUMBER = {"DocNumber": {"type": "string", "minLength": 1, "maxLength": DOCNUMBER_MAX}}


def _doc(title: str, required: list[str], props: dict[str, Any], *, docnumber: bool = True) -> dict[str, Any]:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title, "type": "object",
              "additionalProperties": False, "required": required,
              "properties": {**_HEADER, **(_DOCNUMBER if docnumber else {}), **props}, "$defs": _DEFS}
    if docnumber:
        # a retry after a lost response must find the earlier document: by DocNumber, else by date + marker
        schema["anyOf"] = [{"required": ["DocNumber"]}, {"required": ["TxnDate"]}]
    return schema


def _lines(line_def: str) -> dict[str, Any]:
    return {"type": "array", "minItems": 1, "items": {"$ref": f"#/$defs/{line_def}"}}


SALES_RECEIPT = _doc("QuickBooks Online SalesReceipt", ["Line"], {
    "Line": _lines("sales_item_line"), "CustomerRef": {"$ref": "#/$defs/customer_ref"},
    "DepositToAccountRef": {"$ref": "#/$defs/ref"}, "ClassRef": {"$ref": "#/$defs/ref"},
    "PaymentMethodRef": {"$ref": "#/$defs/ref"}, "PaymentRefNum": {"type": "string", "maxLength": 21},
    "CustomerMemo": {"type": "object", "required": ["value"], "properties": {"value": {"type": "string"}}},
})
REFUND_RECEIPT = _doc("QuickBooks Online RefundReceipt", ["Line", "DepositToAccountRef"], {
    "Line": _lines("sales_item_line"), "CustomerRef": {"$ref": "#/$defs/customer_ref"},
    "DepositToAccountRef": {"$ref": "#/$defs/ref", "description": "The account the refund is paid from."},
    "ClassRef": {"$ref": "#/$defs/ref"}, "PaymentMethodRef": {"$ref": "#/$defs/ref"},
    "PaymentRefNum": {"type": "string", "maxLength": 21},
})
CREDIT_MEMO = _doc("QuickBooks Online CreditMemo", ["Line", "CustomerRef"], {
    "Line": _lines("sales_item_line"), "CustomerRef": {"$ref": "#/$defs/customer_ref"},
    "ClassRef": {"$ref": "#/$defs/ref"},
})
DEPOSIT = _doc("QuickBooks Online Deposit", ["Line", "DepositToAccountRef"], {
    "Line": _lines("deposit_line"), "DepositToAccountRef": {"$ref": "#/$defs/ref"},
})
JOURNAL_ENTRY = _doc("QuickBooks Online JournalEntry", ["Line"], {
    "Line": {**_lines("journal_line"), "minItems": 2}, "Adjustment": {"type": "boolean"},
})
PURCHASE = _doc("QuickBooks Online Purchase", ["PaymentType", "AccountRef", "Line"], {
    "PaymentType": {"enum": ["Cash", "Check", "CreditCard"]},
    "AccountRef": {"$ref": "#/$defs/ref", "description": "The bank or credit card account paid from."},
    "EntityRef": {"$ref": "#/$defs/entity_ref"}, "Line": _lines("expense_line"),
    "PaymentMethodRef": {"$ref": "#/$defs/ref"},
})
TRANSFER = _doc("QuickBooks Online Transfer", ["TxnDate", "FromAccountRef", "ToAccountRef", "Amount"], {
    "FromAccountRef": {"$ref": "#/$defs/ref"}, "ToAccountRef": {"$ref": "#/$defs/ref"},
    "Amount": {"type": "number", "exclusiveMinimum": 0},
}, docnumber=False)   # Intuit's Transfer has no DocNumber: TxnDate (our requirement) finds a lost one
CUSTOMER = {
    "$schema": "https://json-schema.org/draft/2020-12/schema", "title": "QuickBooks Online Customer (find or create)",
    "type": "object", "additionalProperties": False, "required": ["DisplayName"],
    "properties": {"DisplayName": {"type": "string", "minLength": 1, "maxLength": 500},
                   "PrimaryEmailAddr": {"type": "object", "additionalProperties": False, "required": ["Address"],
                                        "properties": {"Address": {"type": "string", "format": "email"}}},
                   "GivenName": {"type": "string", "maxLength": 100},
                   "FamilyName": {"type": "string", "maxLength": 100},
                   "CompanyName": {"type": "string", "maxLength": 100},
                   "CurrencyRef": {"$ref": "#/$defs/currency_ref"},
                   "Notes": {"type": "string", "maxLength": 2000}},
    "$defs": _DEFS,
}


def _journal_balances(payload: Mapping[str, Any]) -> list[str]:
    debit = credit = Decimal(0)
    for line in payload.get("Line", []):
        amount = Decimal(str(line.get("Amount", 0)))
        if line.get("JournalEntryLineDetail", {}).get("PostingType") == "Debit":
            debit += amount
        else:
            credit += amount
    return [] if debit == credit else [f"journal entry does not balance: debits {debit} != credits {credit}"]


# action -> (Intuit entity, URL resource name)
ENTITIES: dict[str, tuple[str, str]] = {
    "sales_receipt": ("SalesReceipt", "salesreceipt"),
    "refund_receipt": ("RefundReceipt", "refundreceipt"),
    "credit_memo": ("CreditMemo", "creditmemo"),
    "deposit": ("Deposit", "deposit"),
    "journal_entry": ("JournalEntry", "journalentry"),
    "purchase": ("Purchase", "purchase"),
    "transfer": ("Transfer", "transfer"),
    "customer": ("Customer", "customer"),
}

ACTIONS: dict[str, Action] = {
    "sales_receipt": Action("sales_receipt", SALES_RECEIPT, "A SalesReceipt (e.g. a Stripe charge into the clearing account)."),
    "refund_receipt": Action("refund_receipt", REFUND_RECEIPT, "A RefundReceipt paid from DepositToAccountRef."),
    "credit_memo": Action("credit_memo", CREDIT_MEMO, "A CreditMemo for a customer."),
    "deposit": Action("deposit", DEPOSIT, "A Deposit into DepositToAccountRef."),
    "journal_entry": Action("journal_entry", JOURNAL_ENTRY, "A balanced JournalEntry.", _journal_balances),
    "purchase": Action("purchase", PURCHASE, "A Purchase (expense) paid from AccountRef, e.g. Stripe's fees."),
    "transfer": Action("transfer", TRANSFER, "A Transfer between two accounts, e.g. clearing to bank on a payout."),
    "customer": Action("customer", CUSTOMER, "Find a Customer by DisplayName (or email), or create it."),
}


def _currency(key: str, value: Any) -> str | None:
    if isinstance(value, (dict, abc.Mapping)):     # not typing.Mapping: the planner's hot path
        if key == "CurrencyRef" and isinstance(value.get("value"), str):
            return value["value"]
        if key == "CustomerRef" and isinstance(value.get("currency"), str):
            return value["currency"]
    return None


def currencies(payload: Any) -> set[str]:
    """Every CurrencyRef value in a payload, and every ``CustomerRef.currency``."""
    return find_values(payload, _currency)


def check_payload(action: str, payload: Mapping[str, Any], connection: Mapping[str, Any],
                  settings: Mapping[str, Any]) -> list[str]:
    """Checks that need the connection's settings (run by the planner at preview/plan time).

    A company without multicurrency (``multicurrency: false``) takes its home
    currency only; ``home_currency`` on the connection overrides the project's.
    """
    if connection.get("multicurrency", True):
        return []
    home = str(connection.get("home_currency") or settings.get("home_currency") or "").upper()
    foreign = sorted(c for c in currencies(payload) if c != home)
    if foreign:
        return [f"CurrencyRef {', '.join(foreign)} is not the company's home currency {home}, and the connection "
                "sets multicurrency: false (turn on multicurrency in QuickBooks and set multicurrency: true, "
                "or book in the home currency)"]
    return []


_EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "sales_receipt": [{"DocNumber": "ch_3PqR", "TxnDate": "2026-03-02", "CurrencyRef": {"value": "USD"},
                       "CustomerRef": {"name": "Jenny Rosen", "email": "jenny@example.com"},
                       "DepositToAccountRef": {"name": "Stripe Clearing"},
                       "Line": [{"Amount": Decimal("25.00"), "DetailType": "SalesItemLineDetail",
                                 "SalesItemLineDetail": {"ItemRef": {"name": "Stripe Sales"}}}]}],
    "refund_receipt": [{"DocNumber": "re_3PqR", "TxnDate": "2026-03-03", "DepositToAccountRef": {"name": "Stripe Clearing"},
                        "Line": [{"Amount": Decimal("5.00"), "DetailType": "SalesItemLineDetail",
                                  "SalesItemLineDetail": {"ItemRef": {"name": "Stripe Sales"}}}]}],
    "credit_memo": [{"DocNumber": "cn_1", "TxnDate": "2026-03-03", "CustomerRef": {"name": "Jenny Rosen"},
                     "Line": [{"Amount": Decimal("5.00"), "DetailType": "SalesItemLineDetail",
                               "SalesItemLineDetail": {"ItemRef": {"name": "Stripe Sales"}}}]}],
    "deposit": [{"DocNumber": "po_1", "TxnDate": "2026-03-04", "DepositToAccountRef": {"name": "Operating Bank"},
                 "Line": [{"Amount": Decimal("20.00"), "DetailType": "DepositLineDetail",
                           "DepositLineDetail": {"AccountRef": {"name": "Stripe Clearing"}}}]}],
    "journal_entry": [{"DocNumber": "fee_1", "TxnDate": "2026-03-02", "Line": [
        {"Amount": Decimal("1.03"), "DetailType": "JournalEntryLineDetail",
         "JournalEntryLineDetail": {"PostingType": "Debit", "AccountRef": {"name": "Stripe Fees"}}},
        {"Amount": Decimal("1.03"), "DetailType": "JournalEntryLineDetail",
         "JournalEntryLineDetail": {"PostingType": "Credit", "AccountRef": {"name": "Stripe Clearing"}}}]}],
    "purchase": [{"DocNumber": "fee_2", "TxnDate": "2026-03-02", "PaymentType": "Cash",
                  "AccountRef": {"name": "Stripe Clearing"}, "EntityRef": {"name": "Stripe", "type": "Vendor"},
                  "Line": [{"Amount": Decimal("1.03"), "DetailType": "AccountBasedExpenseLineDetail",
                            "AccountBasedExpenseLineDetail": {"AccountRef": {"name": "Stripe Fees"}}}]}],
    "transfer": [{"TxnDate": "2026-03-04", "FromAccountRef": {"name": "Stripe Clearing"},
                  "ToAccountRef": {"name": "Operating Bank"}, "Amount": Decimal("20.00")}],
    "customer": [{"DisplayName": "Jenny Rosen", "PrimaryEmailAddr": {"Address": "jenny@example.com"}}],
}
ACTIONS = with_examples(ACTIONS, _EXAMPLES)

SPEC = ConnectorSpec(
    type="quickbooks_online",
    connector="connectors.quickbooks_online.connector:QuickBooksOnlineConnector",
    description="QuickBooks Online (Intuit Accounting API v3): documents created once each, batched.",
    actions=ACTIONS,
    payload_check=check_payload,
    config=config_schema("quickbooks_online", {
        **OAUTH_SETTINGS, **CURRENCY_SETTINGS,
        "environment": {"enum": ["sandbox", "production"], "description": "Intuit's API to use (default sandbox)."},
        "base_url": {"type": "string", "description": "API address (overrides environment; tests: a stand-in)."},
        "realm_id": {"type": "string", "description": "The company (default: the one chosen at connect)."},
        "timeout": {"type": "number", "exclusiveMinimum": 0, "description": "Seconds per request (default 60)."},
        "minorversion": {"type": "integer", "minimum": 1, "description": "Intuit's minorversion (default 75)."},
        "limits": {"type": "object", "additionalProperties": False, "description": "Intuit's limits per company.",
                   "properties": {"requests_per_minute": {"type": "integer", "minimum": 1},
                                  "concurrency": {"type": "integer", "minimum": 1},
                                  "batch_per_minute": {"type": "integer", "minimum": 1},
                                  "batch_size": {"type": "integer", "minimum": 1, "maximum": 30},
                                  "max_wait": {"type": "number", "minimum": 0}}},
    }, ("client_id", "client_secret")),
    capabilities=Capabilities(batch_size=30, multicurrency=True,
                              idempotency="requestid per attempt; a retry looks for its document by DocNumber "
                                          "(or date) and the [ledgerflow <requestid>] marker in PrivateNote",
                              lookups=("Account", "Item", "Class", "Department", "PaymentMethod", "TaxCode",
                                       "Customer", "Vendor")),
    oauth=OAuthProvider("quickbooks-online", "connectors.quickbooks_online.connector:oauth_config",
                        {"realmId": "realm_id"}),
    store=frozenset({"cache", "tokens"}),
    booked_amount={"sales_receipt": {"amount": "TotalAmt", "currency": "CurrencyRef.value", "rate": "ExchangeRate"},
                   "refund_receipt": {"amount": "TotalAmt", "currency": "CurrencyRef.value", "rate": "ExchangeRate"},
                   "journal_entry": {"amount": "Line[0].Amount", "currency": "CurrencyRef.value",
                                     "rate": "ExchangeRate"}},
)
