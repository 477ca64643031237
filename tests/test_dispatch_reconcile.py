"""A payout.paid event reaching the dispatcher starts the reconciliation of that payout."""

from __future__ import annotations

import json

from sqlalchemy import select

from runner.app import App
from runner.ingest.dispatch import dispatch_pending
from runner.store.tables import deliveries, recon_results
from tests.reconcile_helpers import book, wire_project
from tests.standins.stripe_scenarios import CONNECTED, build
from tests.support.servers import serve_app


def test_payout_paid_event_reconciles_and_books_that_payout(project_dir, monkeypatch, tmp_path):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    scenario = build("clean")
    payout_id = next(p for p, status in scenario.payout_status.items() if status == "reconciled")
    standin = scenario.standin()
    payout = standin.get(payout_id) or next(standin.get(payout_id, a) for a in CONNECTED if standin.get(payout_id, a))
    with serve_app(standin.app) as srv:
        wire_project(project_dir, monkeypatch, srv.url, f"sqlite:///{tmp_path / 'd.db'}", CONNECTED)
        app = App()
        book(app.store, scenario)
        event = {"id": "evt_payout_paid_1", "object": "event", "type": "payout.paid", "created": 1767225600,
                 "data": {"object": payout}}
        app.store.add_event(event, json.dumps(event), "webhook:stripe")
        summary = dispatch_pending(app, 10)
    assert summary.dispatched == 1 and summary.failed == 0, summary.errors
    row = app.store.get_event("evt_payout_paid_1")
    assert row["status"] == "dispatched" and "payout-reconciliation" in row["flows"].split(",")
    with app.store.engine.connect() as c:
        results = c.execute(select(recon_results.c.payout_id, recon_results.c.status)).all()
        booked = c.execute(select(deliveries.c.flow, deliveries.c.route, deliveries.c.payload)
                           .where(deliveries.c.flow == "payout-reconciliation")).all()
    assert results == [(payout_id, "reconciled")]
    assert any(r.route == "transfer" and payout_id in r.payload for r in booked), booked


def test_a_reconciliation_that_cannot_reach_stripe_keeps_the_event_failed(project_dir, monkeypatch, tmp_path):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    wire_project(project_dir, monkeypatch, "http://127.0.0.1:9", f"sqlite:///{tmp_path / 'e.db'}", [])
    app = App()
    payout = {"id": "po_missing", "object": "payout", "amount": 1000, "currency": "usd", "status": "paid",
              "arrival_date": 1767225600, "automatic": True}
    event = {"id": "evt_payout_paid_2", "object": "event", "type": "payout.paid", "created": 1767225600,
             "data": {"object": payout}}
    app.store.add_event(event, json.dumps(event), "webhook:stripe")
    summary = dispatch_pending(app, 10)
    assert summary.failed == 1
    row = app.store.get_event("evt_payout_paid_2")
    assert row["status"] == "failed" and "flow payout-reconciliation: reconciliation failed" in row["error"]
    # and the delivery loop runs it again (a plan row): retried with backoff while Stripe stays away
    from runner.deliver.delivery import deliver_rows
    plan = app.store.delivery_by_key("plan:payout-reconciliation:evt_payout_paid_2")
    assert plan is not None and plan["state"] == "pending"
    deliver_rows(app, app.store.claim("t", ids=[plan["id"]]), worker="t")
    after = app.store.delivery(plan["id"])
    assert after["state"] == "retrying" and "runs it by hand" in after["last_error"]
