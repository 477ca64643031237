"""Sage Accounting (API v3.1) actions and their payload schemas.

Mappings name ledger accounts, tax rates and bank accounts by name, nominal
code or id; the connector resolves them. Every document the connector creates
carries a reference derived from the operation's idempotency key (see
``references``), so a repeat finds it instead of creating it twice.

Light on purpose: no HTTP imports, so ``ledgerflow validate`` stays fast.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Mapping

from connectors.base import Action, decimal_sum, find_values
from connectors.contract import (
    CURRENCY_SETTINGS,
    OAUTH_SETTINGS,
    STRING_OR_SECRET,
    Capabilities,
    ConnectorSpec,
    OAuthProvider,
    config_schema,
    with_examples,
)

DATE = {"type": "string", "format": "date", "description": "YYYY-MM-DD"}
MONEY = {"type": "number", "description": "Amount in the document's currency (a decimal, never a float)."}
POSITIVE = {"type": "number", "exclusiveMinimum": 0}
NAME_OR_CODE = {"type": "string", "minLength": 1, "maxLength": 200,
                "description": "Name, nominal code or id; resolved by the connector and cached."}
CURRENCY = {"type": "string", "pattern": "^[A-Z]{3}$", "description": "ISO code, e.g. USD (Sage's currency id)."}

CONTACT = {
    "type": "object", "additionalProperties": False,
    "required": ["name", "reference"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 100},
        "reference": {"type": "string", "minLength": 1, "maxLength": 255,
                      "description": "Stable key of the customer (e.g. the Stripe customer id); found-or-created "
                                     "by it. Shortened deterministically when longer than Sage allows."},
        "email": {"type": "string", "maxLength": 100},
        "currency": {**CURRENCY, "description": "The contact's currency (Sage ties a contact to one): found "
                                                "contacts must have it, new ones are created with it. Give "
                                                "each currency its own reference (e.g. cus_...-EUR)."},
    },
}

LINE = {
    "type": "object", "additionalProperties": False,
    "required": ["description", "ledger_account", "unit_price"],
    "properties": {
        "description": {"type": "string", "minLength": 1, "maxLength": 200},
        "ledger_account": NAME_OR_CODE,
        "tax_rate": NAME_OR_CODE,
        "quantity": {"type": "number", "exclusiveMinimum": 0},
        "unit_price": MONEY,
    },
}

PAYMENT = {
    "type": "object", "additionalProperties": False,
    "required": ["bank_account", "amount"],
    "properties": {"bank_account": NAME_OR_CODE, "amount": POSITIVE, "date": DATE},
}

FEES = {
    "type": "object", "additionalProperties": False,
    "required": ["bank_account", "lines"],
    "description": "Stripe's fees on the movement, booked with it (never without it): positive lines are one "
                   "other payment out of the bank account, negative lines (fees returned) one other receipt. "
                   "Always in the bank account's (base) currency.",
    "properties": {
        "bank_account": NAME_OR_CODE,
        "date": DATE,
        "lines": {"type": "array", "minItems": 1, "items": {
            "type": "object", "additionalProperties": False,
            "required": ["ledger_account", "amount"],
            "properties": {"ledger_account": NAME_OR_CODE,
                           "amount": {"type": "number", "not": {"const": 0},
                                      "description": "Base currency; > 0 paid out, < 0 returned."},
                           "details": {"type": "string", "maxLength": 200}},
        }},
    },
}

_DOCUMENT_HEADER = {      # what an invoice and a credit note share
    "date": DATE,
    "contact": CONTACT,
    "currency": CURRENCY,
    "exchange_rate": {"type": "number", "exclusiveMinimum": 0},
    "notes": {"type": "string", "maxLength": 2000},
}

SALES_INVOICE_PAYMENT = {
    "type": "object", "additionalProperties": False,
    "required": ["date", "contact", "lines"],
    "properties": {
        **_DOCUMENT_HEADER,
        "lines": {"type": "array", "minItems": 1, "items": LINE},
        "payment": {**PAYMENT, "description": "The receipt allocated to the invoice (into the clearing account)."},
        "fees": FEES,
    },
}

CREDIT_NOTE_REFUND = {
    "type": "object", "additionalProperties": False,
    "required": ["date", "contact", "lines"],
    "properties": {
        **_DOCUMENT_HEADER,
        "original_invoice_key": {"type": "string", "minLength": 1,
                                 "description": "Idempotency key of the operation that booked the original "
                                                "invoice; when found, the credit note is linked to it and goes "
                                                "on the invoice's contact (same currency), else on `contact`."},
        "lines": {"type": "array", "minItems": 1, "items": LINE},
        "refund": {**PAYMENT, "description": "The refund paid out of the clearing account, allocated to the credit note."},
        "fees": FEES,
    },
}

OTHER_PAYMENT = {
    "type": "object", "additionalProperties": False,
    "required": ["date", "bank_account", "total_amount", "lines"],
    "properties": {
        "date": DATE,
        "transaction_type": {"enum": ["OTHER_PAYMENT", "OTHER_RECEIPT"], "default": "OTHER_PAYMENT"},
        "bank_account": NAME_OR_CODE,
        "total_amount": POSITIVE,
        "contact": CONTACT,
        "lines": {"type": "array", "minItems": 1, "items": {
            "type": "object", "additionalProperties": False,
            "required": ["ledger_account", "amount"],
            "properties": {"ledger_account": NAME_OR_CODE, "tax_rate": NAME_OR_CODE, "amount": POSITIVE,
                           "details": {"type": "string", "maxLength": 200}},
        }},
    },
}

JOURNAL = {
    "type": "object", "additionalProperties": False,
    "required": ["date", "lines"],
    "properties": {
        "date": DATE,
        "description": {"type": "string", "maxLength": 200},
        "lines": {"type": "array", "minItems": 2, "items": {
            "type": "object", "additionalProperties": False,
            "required": ["ledger_account", "debit", "credit"],
            "properties": {"ledger_account": NAME_OR_CODE, "debit": {"type": "number", "minimum": 0},
                           "credit": {"type": "number", "minimum": 0},
                           "details": {"type": "string", "maxLength": 200}},
        }},
    },
}

BANK_TRANSFER = {
    "type": "object", "additionalProperties": False,
    "required": ["date", "from_bank_account", "to_bank_account", "amount"],
    "properties": {
        "date": DATE,
        "from_bank_account": NAME_OR_CODE,
        "to_bank_account": NAME_OR_CODE,
        "amount": POSITIVE,
        "description": {"type": "string", "maxLength": 200},
    },
}


def _dec(v: Any) -> Decimal:
    return v if isinstance(v, Decimal) else Decimal(str(v))


def _line_total(lines: list[Mapping[str, Any]]) -> Decimal:
    return decimal_sum([_dec(line.get("quantity", 1)) * _dec(line["unit_price"]) for line in lines])


def _paid_in_full(doc_key: str, pay_key: str):
    def check(p: Mapping[str, Any]) -> list[str]:
        pay = p.get(pay_key)
        if not pay:
            return []
        total = _line_total(p["lines"])
        if _dec(pay["amount"]) > total:
            return [f"{pay_key}.amount {pay['amount']} exceeds the {doc_key} total {total}"]
        return []
    return check


def _other_payment_check(p: Mapping[str, Any]) -> list[str]:
    lines = decimal_sum([_dec(x["amount"]) for x in p["lines"]])
    if lines != _dec(p["total_amount"]):
        return [f"lines add up to {lines}, not total_amount {p['total_amount']}"]
    return []


def _journal_check(p: Mapping[str, Any]) -> list[str]:
    problems = []
    for i, line in enumerate(p["lines"]):
        d, c = _dec(line["debit"]), _dec(line["credit"])
        if (d == 0) == (c == 0):
            problems.append(f"lines[{i}]: exactly one of debit and credit must be non-zero (got {d} and {c})")
    debits = decimal_sum([x["debit"] for x in p["lines"]])
    credits = decimal_sum([x["credit"] for x in p["lines"]])
    if debits != credits:
        problems.append(f"the journal does not balance: debits {debits} != credits {credits}")
    return problems


def _transfer_check(p: Mapping[str, Any]) -> list[str]:
    if str(p["from_bank_account"]).strip().lower() == str(p["to_bank_account"]).strip().lower():
        return ["from_bank_account and to_bank_account are the same account"]
    return []


def _currencies(payload: Any) -> set[str]:
    return find_values(payload, lambda k, v: v.upper() if k == "currency" and isinstance(v, str) else None)


def check_payload(action: str, payload: Mapping[str, Any], connection: Mapping[str, Any],
                  settings: Mapping[str, Any]) -> list[str]:
    """Checks that need the connection's settings (the planner runs them at preview/plan time).

    A business without foreign currencies (``multicurrency: false``, the default) takes its base
    currency only (``home_currency`` on the connection overrides the project's): Sage refuses any
    other ``currency_id`` there, so such a payload fails at preview, not in production.
    """
    home = str(connection.get("home_currency") or settings.get("home_currency") or "").upper()
    foreign = sorted(c for c in _currencies(payload) if c != home)
    if foreign and not connection.get("multicurrency", False):
        return [f"currency {', '.join(foreign)} is not the business's base currency {home}, and the connection "
                "sets no multicurrency: true (enable foreign currencies in Sage and set multicurrency: true, or "
                "book in the base currency: the shipped mappings read `doc`, which does)"]
    return []


ACTIONS = {
    "contact": Action("contact", CONTACT, "Find a customer contact by reference (and currency), or create it "
                                          "with that currency."),
    "sales_invoice_payment": Action(
        "sales_invoice_payment", SALES_INVOICE_PAYMENT,
        "A Stripe charge: customer contact (found or created), a sales invoice, and a customer receipt "
        "into the clearing bank account allocated to it.", _paid_in_full("invoice", "payment")),
    "credit_note_refund": Action(
        "credit_note_refund", CREDIT_NOTE_REFUND,
        "A Stripe refund: a sales credit note and a customer refund out of the clearing bank account "
        "allocated to it.", _paid_in_full("credit note", "refund")),
    "other_payment": Action("other_payment", OTHER_PAYMENT,
                            "A payment (e.g. Stripe fees) out of a bank account against ledger accounts.",
                            _other_payment_check),
    "journal": Action("journal", JOURNAL, "A balanced journal (e.g. a summary per payout).", _journal_check),
    "bank_transfer": Action("bank_transfer", BANK_TRANSFER,
                            "Money moved between two bank accounts (a payout: clearing -> bank).", _transfer_check),
}

_CONTACT_EXAMPLE = {"name": "Jenny Rosen", "reference": "cus_QXg1o8vcGmoR32", "email": "jenny@example.com"}
_EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "contact": [_CONTACT_EXAMPLE],
    "sales_invoice_payment": [{
        "date": "2026-03-02", "contact": _CONTACT_EXAMPLE,
        "lines": [{"description": "Stripe charge ch_1", "ledger_account": "Sales", "tax_rate": "No Tax",
                   "unit_price": Decimal("25.00")}],
        "payment": {"bank_account": "Stripe Clearing", "amount": Decimal("25.00")},
        "fees": {"bank_account": "Stripe Clearing", "lines": [{"ledger_account": "Stripe Fees",
                                                              "amount": Decimal("1.03")}]}}],
    "credit_note_refund": [{
        "date": "2026-03-03", "contact": _CONTACT_EXAMPLE, "original_invoice_key": "charges:sage:evt_1",
        "lines": [{"description": "Stripe refund re_1", "ledger_account": "Sales", "unit_price": Decimal("5.00")}],
        "refund": {"bank_account": "Stripe Clearing", "amount": Decimal("5.00")}}],
    "other_payment": [{"date": "2026-03-02", "bank_account": "Stripe Clearing", "total_amount": Decimal("1.03"),
                       "lines": [{"ledger_account": "Stripe Fees", "amount": Decimal("1.03")}]}],
    "journal": [{"date": "2026-03-04", "description": "Stripe payout po_1", "lines": [
        {"ledger_account": "Operating Bank", "debit": Decimal("20.00"), "credit": Decimal("0")},
        {"ledger_account": "Stripe Clearing", "debit": Decimal("0"), "credit": Decimal("20.00")}]}],
    "bank_transfer": [{"date": "2026-03-04", "from_bank_account": "Stripe Clearing",
                       "to_bank_account": "Operating Bank", "amount": Decimal("20.00")}],
}
ACTIONS = with_examples(ACTIONS, _EXAMPLES)

SPEC = ConnectorSpec(
    type="sage",
    connector="connectors.sage.connector:SageConnector",
    description="Sage Accounting (API v3.1): contacts, invoices and receipts, credit notes and refunds, "
                "other payments, journals, bank transfers.",
    actions=ACTIONS,
    payload_check=check_payload,
    config=config_schema("sage", {
        **OAUTH_SETTINGS, **CURRENCY_SETTINGS,
        "business_id": {**STRING_OR_SECRET, "description": "X-Business (default: the one chosen at connect)."},
        "base_url": {"type": "string", "description": "API address (default Sage's; tests: a stand-in)."},
        "timeout": {"type": "number", "exclusiveMinimum": 0, "description": "Seconds per request (default 30)."},
        "page_size": {"type": "integer", "minimum": 1, "maximum": 200, "description": "List page size (default 200)."},
        "lookup_ttl": {"type": "number", "minimum": 0, "description": "Seconds look-ups stay cached (default 3600)."},
        "refresh_margin": {"type": "number", "minimum": 0,
                           "description": "Refresh the access token this long before it expires (default 60)."},
        "journal_lookback_days": {"type": "number", "minimum": 1,
                                  "description": "How far back a repeat looks for its journal (default 35)."},
    }, ("client_id", "client_secret")),
    capabilities=Capabilities(batch_size=1, multicurrency=True,
                              idempotency="a reference derived from the key on every document; each part is "
                                          "found by it before it is created",
                              lookups=("ledger_accounts", "tax_rates", "bank_accounts", "contacts")),
    oauth=OAuthProvider("sage", "connectors.sage.connector:oauth_config", {"country": "country"},
                        after="connectors.sage.business:choose_business"),
    store=frozenset({"cache", "tokens"}),
)
