"""The dispatcher: pending inbox events -> every matching flow -> delivery rows."""

from __future__ import annotations

import shutil
import time

import pytest
from sqlalchemy import select

from runner.app import App
from runner.core import jsonio
from runner.ingest.dispatch import DispatchService, dispatch_pending
from runner.language.fixtures import event_from_fixture
from runner.language.spec import load_project
from runner.store.tables import deliveries
from tests.conftest import ROOT
from tests.helpers_project import write
from tests.webhook_helpers import stripe_project

CHARGES = """\
name: charges
trigger: {stripe: [charge.succeeded]}
routes:
  - name: line
    target: csv
    action: qbo_bank_row
    mapping: {Date: "{{ charge.created | date }}", Description: "Stripe charge {{ charge.id }}", Amount: "{{ charge.amount | money(charge.currency) }}"}
"""
CONNECT = """\
name: connect-charges
trigger: {stripe: [charge.*]}
filter: "{{ account is not none }}"
routes:
  - name: seller-a
    when: "{{ account == 'acct_1SellerA' }}"
    target: csv
    action: row
    mapping: {account: "{{ account }}", charge: "{{ charge.id }}"}
  - name: other-sellers
    fallback: true
    target: csv
    action: row
    mapping: {account: "{{ account }}", charge: "{{ charge.id }}"}
"""
# passes validate; fails at plan time when a refund has no metadata.order_id
BROKEN = """\
name: refunds-by-order
trigger: {stripe: [charge.refunded]}
routes:
  - name: by-order
    target: csv
    action: row
    mapping: {order: "{{ charge.metadata.order_id }}", charge: "{{ charge.id }}"}
"""
REFUNDS_OK = """\
name: refunds
trigger: {stripe: [charge.refunded]}
routes:
  - {name: line, target: csv, action: row, mapping: {charge: "{{ charge.id }}"}}
"""


@pytest.fixture
def app(tmp_path, store_url, stripe_fixtures, monkeypatch):
    root = tmp_path / "proj"
    path = stripe_project(root, store_url)
    shutil.copytree(ROOT / "mappings" / "csv", root / "mappings" / "csv")
    for name, text in {"charges": CHARGES, "connect": CONNECT, "broken": BROKEN, "refunds": REFUNDS_OK}.items():
        write(root, f"flows/{name}.yaml", text)
    monkeypatch.chdir(root)
    return App(load_project(path))


def put(app, ev) -> str:
    app.store.add_event(ev, jsonio.dumps(ev), "test")
    return ev["id"]


def rows_for(app, event_id):
    return app.store.deliveries_where(deliveries.c.event_id == event_id)


def test_platform_charge_goes_to_the_flows_whose_trigger_matches(app):
    eid = put(app, event_from_fixture("charge.succeeded"))
    s = dispatch_pending(app)
    assert (s.events, s.dispatched, s.new_deliveries) == (1, 1, 1)
    ev = app.store.get_event(eid)
    assert (ev["status"], ev["flows"], ev["error"]) == ("dispatched", "charges", None)  # connect flow filtered it out
    [row] = rows_for(app, eid)
    assert (row["flow"], row["route"], row["state"], row["idempotency_key"]) == ("charges", "line", "pending",
                                                                                  f"charges:line:{eid}")


@pytest.mark.parametrize("account, route", [("acct_1SellerA", "seller-a"), ("acct_1SellerB", "other-sellers")])
def test_connect_events_are_routed_on_their_account(app, account, route):
    eid = put(app, event_from_fixture("charge.succeeded", account=account))
    dispatch_pending(app)
    rows = {r["flow"]: r for r in rows_for(app, eid)}
    assert set(rows) == {"charges", "connect-charges"}
    assert rows["connect-charges"]["route"] == route
    assert rows["connect-charges"]["payload"]["account"] == account


def test_an_event_no_flow_wants_is_ignored_not_left_pending(app):
    unknown = put(app, event_from_fixture("treasury.future_thing.created", resource="charge"))
    filtered = put(app, event_from_fixture("charge.captured"))     # connect flow matches charge.*, filters it out
    s = dispatch_pending(app)
    assert (s.ignored, s.dispatched) == (2, 0)
    assert app.store.get_event(unknown)["status"] == "ignored"
    assert app.store.get_event(filtered)["status"] == "ignored"
    assert app.store.count_deliveries() == 0 and app.store.count_events("pending") == 0


def test_a_plan_error_marks_the_event_failed_with_the_place_and_keeps_it(app, tmp_path):
    ev = event_from_fixture("charge.refunded", overrides={"metadata": {}})
    eid = put(app, ev)
    s = dispatch_pending(app)
    assert s.failed == 1
    row = app.store.get_event(eid)
    assert row["status"] == "failed"
    assert row["error"].startswith("flow refunds-by-order: flows/broken.yaml:")
    assert "order_id" in row["error"]
    assert jsonio.loads(row["payload"]) == ev                         # nothing lost
    # the flow that could plan it still got its delivery row; the broken flow's work waits in a plan row
    rows = {r["flow"]: r for r in rows_for(app, eid)}
    assert sorted(rows) == ["refunds", "refunds-by-order"]
    plan_row = rows["refunds-by-order"]
    assert (plan_row["connection"], plan_row["state"], plan_row["idempotency_key"]) == \
        ("(plan)", "pending", f"plan:refunds-by-order:{eid}")
    assert "order_id" in plan_row["payload"]["first_error"]
    # a pending pass leaves the failed event alone; after the fix, --retry-failed plans it, repeating nothing
    assert dispatch_pending(app).events == 0
    write(app.project.dir, "flows/broken.yaml", BROKEN.replace("charge.metadata.order_id", "charge.id"))
    app.flows(reload=True)
    s = dispatch_pending(app, statuses=("pending", "failed"))
    assert (s.dispatched, s.new_deliveries, s.operations) == (1, 1, 2)
    assert app.store.get_event(eid)["status"] == "dispatched"
    rows = rows_for(app, eid)
    assert sorted(r["flow"] for r in rows if r["connection"] != "(plan)") == ["refunds", "refunds-by-order"]
    # the plan row is closed: the worker will not plan it a second time
    assert app.store.delivery_by_key(f"plan:refunds-by-order:{eid}")["state"] == "sent"


def test_dispatching_again_repeats_nothing(app):
    eid = put(app, event_from_fixture("charge.succeeded", account="acct_1SellerA"))
    dispatch_pending(app)
    app.store.mark_event(eid, "pending")        # as if a second dispatcher saw it before the first finished
    s = dispatch_pending(app)
    assert (s.operations, s.new_deliveries) == (2, 0)
    assert app.store.count_deliveries() == 2


def test_exact_decimals_reach_the_planner(app):
    ev = event_from_fixture("charge.succeeded", overrides={"amount": 123456789, "currency": "bhd"})
    eid = put(app, ev)
    dispatch_pending(app)
    [row] = [r for r in rows_for(app, eid) if r["flow"] == "charges"]
    assert str(row["payload"]["Amount"]) == "123456.789"


def test_limit_bounds_one_pass(app):
    for n in range(5):
        put(app, event_from_fixture("charge.succeeded", overrides={"amount": 100 + n}))
    assert dispatch_pending(app, limit=3).events == 3
    assert app.store.count_events("pending") == 2


def test_the_background_service_dispatches_what_arrives(app):
    svc = DispatchService(app, interval=0.05)
    svc.start()
    try:
        eid = put(app, event_from_fixture("charge.succeeded", overrides={"amount": 777}))
        deadline = time.monotonic() + 30
        while app.store.get_event(eid)["status"] == "pending" and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        svc.stop()
    assert app.store.get_event(eid)["status"] == "dispatched"
    with app.store.engine.connect() as c:
        assert c.execute(select(deliveries.c.flow).where(deliveries.c.event_id == eid)).scalars().all() == ["charges"]


def test_cli_dispatch_reports_and_fails_on_plan_errors(app, capsys, monkeypatch):
    from runner.cli import main
    monkeypatch.setenv("LEDGERFLOW_PROJECT", str(app.project.path))
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", app.project.store_url)
    put(app, event_from_fixture("charge.succeeded"))
    bad = put(app, event_from_fixture("charge.refunded", overrides={"metadata": {}}))
    assert main(["stripe", "dispatch"]) == 1
    out = capsys.readouterr().out
    assert "2 event(s): 1 dispatched" in out and "1 failed" in out
    assert f"{bad}: flow refunds-by-order: flows/broken.yaml:" in out


def test_a_plan_error_quoting_event_data_is_kept_without_personal_data(tmp_path, monkeypatch):
    """The error is stored on the inbox event and logged: no email or customer name in it."""
    import json as _json

    from runner.app import App
    from runner.language.spec import load_project
    from tests.helpers_project import charge_event, make_project, write
    make_project(tmp_path)
    write(tmp_path, "flows/f.yaml", """\
name: f
trigger: {stripe: [charge.succeeded]}
routes:
  - name: r
    target: csv
    action: row
    mapping: mappings/m.yaml
""")
    write(tmp_path, "mappings/m.yaml", 'amount: "{{ charge.billing_details.email | money(charge.currency) }}"\n'
                                       'who: "{{ charge.billing_details.name | money(charge.currency) }}"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", f"sqlite:///{tmp_path / 's.db'}")
    app = App(load_project(tmp_path / "ledgerflow.yaml"))
    ev = charge_event(billing_details={"email": "jane.doe@example.com", "name": "Jane Doe"})
    app.store.add_event(ev, _json.dumps(ev), "webhook:stripe")
    assert dispatch_pending(app, 10).failed == 1
    error = app.store.get_event(ev["id"])["error"]
    assert "mappings/m.yaml:1:9: amount: money: amount: expected a number, got" in error
    assert "jane.doe@example.com" not in error and "[redacted" in error


def test_flows_for_follows_a_reload_of_the_flows(app):
    """App.flows_for keeps its answer per event type: a re-read of the flows answers anew."""
    assert sorted(f.name for f in app.flows_for("charge.refunded")) == ["connect-charges", "refunds",
                                                                          "refunds-by-order"]
    app.flows_for("charge.refunded").clear()                       # the caller's own list
    assert len(app.flows_for("charge.refunded")) == 3
    write(app.project.dir, "flows/refunds.yaml", REFUNDS_OK.replace("charge.refunded", "charge.captured"))
    app.flows(reload=True)
    assert sorted(f.name for f in app.flows_for("charge.refunded")) == ["connect-charges", "refunds-by-order"]
    assert sorted(f.name for f in app.flows_for("charge.captured")) == ["connect-charges", "refunds"]
    eid = put(app, event_from_fixture("charge.refunded", overrides={"metadata": {"order_id": "o_1"}}))
    dispatch_pending(app)
    assert sorted(r["flow"] for r in rows_for(app, eid)) == ["refunds-by-order"]
