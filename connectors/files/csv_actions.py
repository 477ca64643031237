"""CSV actions.

* ``row``: one row per operation, the mapping's fields as columns.
* ``qbo_bank_row``: QuickBooks Online's bank-transaction upload layout
  (Date, Description, Amount: money in positive, money out negative).
* ``journal``: a balanced journal entry, one row per line, in QuickBooks Online's
  journal-entry import layout (Journal No., Journal Date, Account Name, Debits,
  Credits, Description, Name): rows sharing a Journal No. are one entry. The
  payload's lines are signed (debit positive, credit negative) and must sum to zero.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from connectors.base import Action
from connectors.contract import ConnectorSpec, config_schema, with_examples

from . import FILE_CAPABILITIES, FILE_SETTINGS, balanced

ROW = {
    "type": "object",
    "minProperties": 1,
    "additionalProperties": {"type": ["string", "number", "integer", "boolean", "null"]},
}

QBO_BANK = {
    "type": "object",
    "additionalProperties": False,
    "required": ["Date", "Description", "Amount"],
    "properties": {
        "Date": {"type": "string", "format": "date", "description": "Transaction date (ISO; written MM/DD/YYYY)."},
        "Description": {"type": "string", "minLength": 1, "maxLength": 4000},
        "Amount": {"type": "number", "description": "Money in positive, money out negative."},
    },
}

_TEXT = {"type": "string", "maxLength": 4000}

JOURNAL_LINE = {
    "type": "object", "additionalProperties": False, "required": ["account", "amount"],
    "properties": {
        "account": {"type": "string", "minLength": 1, "maxLength": 100,
                    "description": "The account's name in the chart of accounts (Parent:Sub for a sub-account)."},
        "amount": {"type": "number", "description": "Debit positive, credit negative (home currency)."},
        "memo": _TEXT,
        "name": {"type": "string", "maxLength": 100, "description": "A customer or vendor (A/R, A/P lines)."},
    },
}

JOURNAL = {
    "type": "object", "additionalProperties": False, "required": ["date", "number", "lines"],
    "properties": {
        "date": {"type": "string", "format": "date", "description": "Journal date (ISO; written MM/DD/YYYY)."},
        "number": {"type": "string", "minLength": 1, "maxLength": 21, "pattern": "^[^\\r\\n]*$",
                   "description": "Journal No.: groups the entry's rows (QuickBooks Online's DocNumber, 21 max)."},
        "memo": _TEXT,
        "lines": {"type": "array", "minItems": 2, "items": JOURNAL_LINE,
                  "description": "One row each; amounts sum to zero (debits positive, credits negative)."},
    },
}

# the journal layout's columns, in QuickBooks Online's journal-entry import order
JOURNAL_COLUMNS = ["Journal No.", "Journal Date", "Account Name", "Debits", "Credits", "Description", "Name"]


ACTIONS = {
    "row": Action("row", ROW, "Append one row; columns are the mapping's fields in order."),
    "qbo_bank_row": Action("qbo_bank_row", QBO_BANK,
                           "One line in QuickBooks Online's bank-transaction upload layout."),
    "journal": Action("journal", JOURNAL, "A balanced journal entry, one row per line, in QuickBooks Online's "
                                          "journal-entry import layout.", balanced),
}

_EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "row": [{"date": "2026-03-02", "description": "Stripe charge ch_1", "amount": Decimal("25.00"), "currency": "usd"}],
    "qbo_bank_row": [{"Date": "2026-03-02", "Description": "Stripe charge ch_1", "Amount": Decimal("25.00")}],
    "journal": [{"date": "2026-03-02", "number": "ch_1", "memo": "Stripe charge ch_1", "lines": [
        {"account": "Stripe Clearing", "amount": Decimal("23.97")},
        {"account": "Stripe Fees", "amount": Decimal("1.03")},
        {"account": "Sales", "amount": Decimal("-25.00"), "name": "Jenny Rosen"}]}],
}
ACTIONS = with_examples(ACTIONS, _EXAMPLES)

SPEC = ConnectorSpec(
    type="csv",
    connector="connectors.files.csv_file:CsvConnector",
    description="CSV files: a file per day per connection and action, atomic appends, no key written twice.",
    actions=ACTIONS,
    config=config_schema("csv", FILE_SETTINGS),
    capabilities=FILE_CAPABILITIES,
    booked_amount={"row": {"amount": "amount", "currency": "currency", "rate": "exchange_rate"},
                   "qbo_bank_row": {"amount": "Amount"}},
)
