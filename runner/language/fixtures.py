"""Stripe events built from Stripe's own example objects (fixtures3.json).

Used by the demo, the flow tests and ``ledgerflow events from-fixture``: the
example object becomes ``data.object`` of an event of the requested type,
with optional field overrides (``amount_refunded=100``) and a Connect account.
Ids are derived deterministically so the same command makes the same event.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from runner.core import jsonio
from runner.core.errors import LedgerflowError

DEFAULT_FIXTURES = "../shared/reference/stripe/fixtures3.json"


def fixtures_path(project_dir: Path | None = None) -> Path:
    env = os.environ.get("LEDGERFLOW_STRIPE_FIXTURES")
    if env:
        return Path(env)
    base = project_dir or Path.cwd()
    return (base / DEFAULT_FIXTURES).resolve()


@lru_cache(maxsize=2)
def _load(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise LedgerflowError(f"Stripe fixtures not found at {path} (set LEDGERFLOW_STRIPE_FIXTURES to "
                              "fixtures3.json from Stripe's OpenAPI repository)") from None
    return jsonio.loads(text)["resources"]


def example_object(resource: str, project_dir: Path | None = None) -> dict[str, Any]:
    resources = _load(str(fixtures_path(project_dir)))
    if resource not in resources:
        raise LedgerflowError(f"no example {resource!r} in the Stripe fixtures")
    return copy.deepcopy(resources[resource])


def _parse_value(text: str) -> Any:
    try:
        return jsonio.loads(text)
    except json.JSONDecodeError:
        return text


def set_path(obj: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        obj = obj.setdefault(p, {})
    obj[parts[-1]] = value


def event_from_fixture(event_type: str, *, resource: str | None = None, overrides: dict[str, Any] | None = None,
                       account: str | None = None, created: int | None = None,
                       project_dir: Path | None = None) -> dict[str, Any]:
    """An event of ``event_type`` whose data.object is the example ``resource``
    (default: the event type's first part, e.g. charge for charge.succeeded)."""
    resource = resource or _resource_for(event_type)
    obj = example_object(resource, project_dir)
    for k, v in (overrides or {}).items():
        set_path(obj, k, _parse_value(v) if isinstance(v, str) else v)
    seed = json.dumps([event_type, obj.get("id"), sorted((overrides or {}).items(), key=str), account],
                      default=str, sort_keys=True)
    digest = hashlib.sha256(seed.encode()).hexdigest()[:24]
    event = {
        "id": f"evt_{digest}", "object": "event", "api_version": "2024-06-20",
        "created": created if created is not None else obj.get("created", 1234567890),
        "data": {"object": obj}, "livemode": False, "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None}, "type": event_type,
    }
    if account:
        event["account"] = account
    return event


_RESOURCE_BY_PREFIX = {"charge.dispute": "dispute", "charge.refund": "refund", "customer.subscription": "subscription",
                       "checkout.session": "checkout.session", "application_fee.refund": "fee_refund"}


def _resource_for(event_type: str) -> str:
    for prefix, res in _RESOURCE_BY_PREFIX.items():
        if event_type.startswith(prefix + "."):
            return res
    return event_type.split(".")[0]
