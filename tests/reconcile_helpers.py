"""Helpers for the reconciliation tests: a project wired to the Stripe stand-in,
and a scenario's bookings written into the store as the runner would have."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from runner.language.planner import Operation
from tests.standins.stripe_api import DEFAULT_KEY
from tests.standins.stripe_scenarios import Scenario
from tests.store_helpers import force_state


def wire_project(project_dir: Path, monkeypatch, api_base: str, store_url: str, accounts: list[str],
                 account_books: dict[str, str] | None = None) -> Path:
    """Point the copied project's stripe section at the stand-in and the store at ``store_url``;
    ``account_books``: connected accounts whose own books are a connection (the Connect policy)."""
    path = project_dir / "ledgerflow.yaml"
    data = yaml.safe_load(path.read_text())
    if account_books is not None:
        data.setdefault("accounting", {}).setdefault("connect", {})["account_books"] = account_books
    data["stripe"] = {"api_key": {"env": "STRIPE_API_KEY"}, "api_base": api_base, "connected_accounts": accounts,
                      "max_network_retries": 0}
    data.setdefault("settings", {})["timezone"] = "UTC"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv("STRIPE_API_KEY", DEFAULT_KEY)
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    return path


def book(store, scenario: Scenario) -> None:
    """The inbox events and delivery rows the scenario says the runner has."""
    for b in scenario.bookings:
        store.add_event(b.event, json.dumps(b.event), "webhook:stripe")
        store.mark_event(b.event["id"], "dispatched", flows="stripe-bookings")
        if b.amount is None:
            continue
        payload = {"object": b.event["data"]["object"]["id"], "amount": b.amount, "currency": b.currency}
        if b.rate is not None:
            payload["exchange_rate"] = b.rate
        op = Operation(flow="stripe-bookings", route="book", connection="csv", connector_type="csv", action="row",
                       idempotency_key=f"stripe-bookings:book:{b.event['id']}", payload=payload,
                       event_id=b.event["id"])
        [(did, _)] = store.add_deliveries([op])
        force_state(store, did, b.state, last_error="HTTP 400 from target" if b.state == "dead" else None)
