"""Write small projects, flows and mappings into a temp folder for tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

PROJECT = """\
settings:
  home_currency: USD
  timezone: UTC
  fx_provider: fixed
  fx_rates: {"EUR/USD": "1.10", "JPY/USD": "0.0067", "BHD/USD": "2.6596"}
vars:
  clearing_account: Stripe Clearing
connections:
  csv: {type: csv, directory: out/csv}
  iif: {type: iif, directory: out/iif}
"""


def write(root: Path, rel: str, text: str) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text))
    return p


def make_project(root: Path, project: str = PROJECT) -> Path:
    write(root, "ledgerflow.yaml", project)
    (root / "flows").mkdir(exist_ok=True)
    (root / "mappings").mkdir(exist_ok=True)
    return root / "ledgerflow.yaml"


def charge_event(amount=1050, currency="usd", event_id="evt_test_1", account=None, **extra):
    obj = {"id": "ch_test_1", "object": "charge", "amount": amount, "currency": currency,
           "created": 1767225600, "paid": True, "status": "succeeded", "description": "Order 42",
           "amount_refunded": 0, "metadata": {}}
    obj.update(extra)
    ev = {"id": event_id, "object": "event", "type": "charge.succeeded", "created": 1767225600,
          "data": {"object": obj}}
    if account:
        ev["account"] = account
    return ev
