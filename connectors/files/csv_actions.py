"""CSV actions. ``row``: one row per operation, the mapping's fields as columns.

The ``qbo_bank`` preset is QuickBooks Online's bank-transaction upload layout
(Date, Description, Amount: money in positive, money out negative)."""

from __future__ import annotations

from connectors.base import Action

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

ACTIONS = {
    "row": Action("row", ROW, "Append one row; columns are the mapping's fields in order."),
    "qbo_bank_row": Action("qbo_bank_row", QBO_BANK,
                           "One line in QuickBooks Online's bank-transaction upload layout."),
}
