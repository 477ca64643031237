"""The store's types: a ``Delivery`` (one row of the deliveries table) and its ``State``.

Callers read deliveries by attribute (``row.state``, ``row.payload``). ``Delivery`` also answers
``row["state"]``, ``row.get("last_error")`` and ``dict(row)`` (the read-only mapping protocol), so
code written against the old plain dicts keeps working while it moves to attributes. It is
frozen: a state changes only through the store (runner/store/transitions.py checks each change).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any, Iterator


class State(str, enum.Enum):
    """A delivery's state. ``str`` valued, so it compares equal to the text in the table."""

    PENDING = "pending"        # written before its side effect, due at next_attempt_at
    SENDING = "sending"        # claimed by a worker, under a lease
    SENT = "sent"              # the target holds it (target_ref)
    RETRYING = "retrying"      # failed in a way worth retrying; due again at next_attempt_at
    DEAD = "dead"              # in the dead-letter queue: needs a person (replay or discard)
    DISCARDED = "discarded"    # a person discarded it, with a reason in the audit log

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class Delivery(Mapping):
    """One deliveries row (runner/store/tables.py), payload decoded from its JSON."""

    id: int
    idempotency_key: str
    event_id: str | None
    flow: str
    flow_file: str | None
    route: str
    connection: str
    connector_type: str
    action: str
    payload: Any
    state: State
    attempts: int
    max_attempts: int
    retry_policy: str | None
    next_attempt_at: float
    last_error: str | None
    error_kind: str | None
    target_ref: str | None
    claimed_by: str | None
    lease_until: float | None
    created_at: float
    updated_at: float
    sent_at: float | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Delivery":
        values = {f: row[f] for f in FIELDS}
        values["state"] = State(values["state"])
        return cls(**values)

    def replace(self, **changes: Any) -> "Delivery":
        return dataclasses.replace(self, **changes)

    # the read-only mapping protocol: ``row["state"]``, ``row.get(...)``, ``dict(row)``
    def __getitem__(self, key: str) -> Any:
        if key not in FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(FIELDS)

    def __len__(self) -> int:
        return len(FIELDS)


FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Delivery))
