"""IIF (QuickBooks Desktop import) actions: a journal of balanced lines, or a transfer."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from connectors.base import Action
from connectors.contract import ConnectorSpec, config_schema, with_examples

from . import FILE_CAPABILITIES, FILE_SETTINGS, balanced

_TEXT = {"type": "string", "maxLength": 4095, "pattern": "^[^\\t\\r\\n]*$"}
_MONEY = {"type": "number"}

LINE = {
    "type": "object", "additionalProperties": False, "required": ["account", "amount"],
    "properties": {
        "account": {"type": "string", "minLength": 1, "maxLength": 159, "pattern": "^[^\\t\\r\\n]*$"},
        "amount": _MONEY,
        "name": _TEXT, "class": _TEXT, "memo": _TEXT,
    },
}

JOURNAL = {
    "type": "object", "additionalProperties": False, "required": ["date", "lines"],
    "properties": {
        "date": {"type": "string", "format": "date"},
        "docnum": {"type": "string", "maxLength": 11, "pattern": "^[^\\t\\r\\n]*$"},
        "memo": _TEXT,
        "lines": {"type": "array", "minItems": 2, "items": LINE,
                  "description": "The first line is the TRNS line, the rest SPL lines; amounts sum to zero "
                                 "(debits positive, credits negative)."},
    },
}

TRANSFER = {
    "type": "object", "additionalProperties": False,
    "required": ["date", "from_account", "to_account", "amount"],
    "properties": {
        "date": {"type": "string", "format": "date"},
        "from_account": LINE["properties"]["account"],
        "to_account": LINE["properties"]["account"],
        "amount": {"type": "number", "exclusiveMinimum": 0},
        "docnum": JOURNAL["properties"]["docnum"],
        "memo": _TEXT,
    },
}


ACTIONS = {
    "journal": Action("journal", JOURNAL, "A GENERAL JOURNAL transaction of balanced lines.", balanced),
    "transfer": Action("transfer", TRANSFER, "A TRANSFER from one balance-sheet account to another."),
}

_EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "journal": [{"date": "2026-03-02", "docnum": "ch_1", "memo": "Stripe charge ch_1", "lines": [
        {"account": "Stripe Clearing", "amount": Decimal("23.97")},
        {"account": "Stripe Fees", "amount": Decimal("1.03")},
        {"account": "Sales", "amount": Decimal("-25.00"), "name": "Jenny Rosen"}]}],
    "transfer": [{"date": "2026-03-04", "from_account": "Stripe Clearing", "to_account": "Operating Bank",
                  "amount": Decimal("20.00"), "memo": "Stripe payout po_1"}],
}
ACTIONS = with_examples(ACTIONS, _EXAMPLES)

SPEC = ConnectorSpec(
    type="iif",
    connector="connectors.files.iif:IifConnector",
    description="IIF files (QuickBooks Desktop's import): TRNS/SPL/ENDTRNS blocks, a file per day.",
    actions=ACTIONS,
    config=config_schema("iif", FILE_SETTINGS),
    capabilities=FILE_CAPABILITIES,
    booked_amount={"journal": {"amount": "lines[0].amount"}, "transfer": {"amount": "amount"}},
)
