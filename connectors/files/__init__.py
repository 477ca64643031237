"""File targets: CSV (QuickBooks Online bank import layout and free layouts) and IIF."""

from __future__ import annotations

from typing import Any, Mapping

from connectors.base import decimal_sum
from connectors.contract import Capabilities

# the file targets' settings (csv, iif)
FILE_SETTINGS: dict[str, Any] = {
    "directory": {"type": "string", "minLength": 1, "description": "Folder, relative to the project (default out/NAME)."},
    "prefix": {"type": "string", "minLength": 1, "description": "File name prefix (default: the connection name)."},
}
FILE_CAPABILITIES = Capabilities(batch_size=1000, idempotency="the keys each file holds, in a sidecar written "
                                                              "before the data")


def balanced(payload: Mapping[str, Any]) -> list[str]:
    """A journal's signed lines (debits positive, credits negative) sum to zero."""
    total = decimal_sum([line.get("amount", 0) for line in payload.get("lines") or []])
    if total != 0:
        return [f"lines must sum to zero (debits positive, credits negative); they sum to {total}"]
    return []
