"""Scheduled flows as Prefect deployments, the generic entrypoint, the embedded Prefect server."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from runner.cli import main
from tests.delivery_helpers import FLOW, http_project, load_app, plan_charges
from tests.helpers_project import write
from tests.standins.slack import WEBHOOK_PATH, SlackStandIn
from tests.support.servers import serve_app

ROOT = Path(__file__).resolve().parent.parent

NIGHTLY = FLOW.replace("name: charges-to-ledger", "name: nightly-ledger").replace(
    "trigger:\n  stripe: [charge.succeeded]",
    'trigger:\n  schedule: {cron: "30 6 * * 1-5", timezone: Europe/Paris, parameters: {lookback_days: 3}}')
RECONCILE = NIGHTLY.replace("name: nightly-ledger", "name: nightly-recon").replace(
    "retry:", "reconcile: {mode: summary}\nretry:")


@pytest.fixture
def project(target, tmp_path, store_url, monkeypatch):
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    pf = http_project(tmp_path / "p", target.url)
    write(pf.parent, "flows/nightly-ledger.yaml", NIGHTLY)
    monkeypatch.setenv("LEDGERFLOW_PROJECT", str(pf))
    return pf


def test_shipped_prefect_yaml_lists_every_scheduled_flow(monkeypatch):
    from runner.app import App
    from runner.language.spec import load_project
    from runner.operate.deployments import prefect_yaml
    app = App(load_project(ROOT / "ledgerflow.yaml"))
    assert (ROOT / "prefect.yaml").read_text() == prefect_yaml(app), \
        "prefect.yaml is stale: run `ledgerflow deploy --check --write-prefect-yaml`"


def test_prefect_yaml_from_flows(project):
    import yaml

    from runner.operate.deployments import prefect_yaml
    doc = yaml.safe_load(prefect_yaml(load_app(project)))
    (dep,) = doc["deployments"]
    assert dep["name"] == "nightly-ledger" and dep["entrypoint"] == "runner/operate/scheduled.py:scheduled_run"
    assert dep["parameters"] == {"flow_file": "flows/nightly-ledger.yaml", "params": {"lookback_days": 3}}
    assert dep["schedules"] == [{"cron": "30 6 * * 1-5", "timezone": "Europe/Paris", "active": True}]


@pytest.mark.prefect
def test_deploy_registers_a_deployment_per_scheduled_flow(prefect_api, project, capsys):
    assert main(["deploy"]) == 0
    out = capsys.readouterr().out
    assert "nightly-ledger: flows/nightly-ledger.yaml  cron '30 6 * * 1-5' (Europe/Paris)" in out
    assert "registered ledgerflow-scheduled/nightly-ledger" in out
    from prefect.client.orchestration import get_client
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name("ledgerflow-scheduled/nightly-ledger")
    assert dep.entrypoint == "runner.operate.scheduled.scheduled_run"
    (sched,) = dep.schedules
    assert sched.schedule.cron == "30 6 * * 1-5" and sched.schedule.timezone == "Europe/Paris" and sched.active
    assert dep.parameters["flow_file"].endswith("flows/nightly-ledger.yaml")
    assert dep.parameters["params"] == {"lookback_days": 3}
    props = dep.parameter_openapi_schema["properties"]
    assert {"flow_file", "since", "until", "params"} <= set(props)     # a date range can be given in the UI
    # deploying again updates, not duplicates
    assert main(["deploy"]) == 0
    with get_client(sync_client=True) as client:
        again = client.read_deployment_by_name("ledgerflow-scheduled/nightly-ledger")
    assert again.id == dep.id


def test_deploy_with_no_scheduled_flow(project, capsys):
    (project.parent / "flows/nightly-ledger.yaml").unlink()
    assert main(["deploy", "--check"]) == 0
    assert "nothing to deploy" in capsys.readouterr().out


def test_reconcile_flows_run_the_reconciliation_with_the_date_range(project, monkeypatch):
    from runner.operate.scheduled import run_scheduled
    write(project.parent, "flows/nightly-recon.yaml", RECONCILE)
    calls = []
    import runner.reconcile
    monkeypatch.setattr(runner.reconcile, "run_from_flow",
                        lambda app, flow, params: calls.append((flow.name, params)) or "2 payouts reconciled")
    app = load_app(project)
    out = run_scheduled(app, app.flow("nightly-recon"), {"since": "2026-01-01", "until": None, "lookback_days": 3})
    assert calls == [("nightly-recon", {"since": "2026-01-01", "lookback_days": 3})]
    assert out["kind"] == "reconcile"


@pytest.mark.prefect
def test_default_scheduled_run_delivers_what_is_due(prefect_api, project, target):
    from runner.operate.scheduled import scheduled_run
    app = load_app(project)
    ids = plan_charges(app, 3)
    from runner import apps
    apps._APPS.pop(str(project), None)
    out = scheduled_run(flow_file=str(project.parent / "flows/nightly-ledger.yaml"), project_file=str(project))
    assert out["kind"] == "deliver" and out["delivered"] == 3
    assert [app.store.delivery(i)["state"] for i in ids] == ["sent"] * 3 and target.created == 3


@pytest.mark.prefect
def test_a_reconciliation_with_exceptions_ends_failed_named_exceptions_without_a_run_failed_alert(
        prefect_api, project, monkeypatch):
    """Honest runs: a reconciliation that left exceptions is not a green Completed; its own report
    (artifacts, Slack summary) tells what to fix, so no second "Flow run failed" alert is sent."""
    slack = SlackStandIn()
    with serve_app(slack.app) as srv:
        monkeypatch.setenv("TEST_SLACK_WEBHOOK", srv.url + WEBHOOK_PATH)
        project.write_text(project.read_text() + "slack:\n  webhook_url: {env: TEST_SLACK_WEBHOOK}\n")
        write(project.parent, "flows/nightly-recon.yaml", RECONCILE)
        report = types.SimpleNamespace(exceptions=[("po_1", "missing"), ("po_1", "amount")], transactions=27,
                                       reconciled_share="92.59")
        import runner.reconcile
        monkeypatch.setattr(runner.reconcile, "run_from_flow", lambda app, flow, params: report)
        from runner import apps
        from runner.operate.scheduled import scheduled_run
        apps._APPS.pop(str(project), None)
        state = scheduled_run(flow_file=str(project.parent / "flows/nightly-recon.yaml"), project_file=str(project),
                              return_state=True)
        assert state.is_failed() and state.name == "Exceptions"
        assert "2 exception(s) in 27 transaction(s)" in state.message
        report.exceptions = []
        state = scheduled_run(flow_file=str(project.parent / "flows/nightly-recon.yaml"), project_file=str(project),
                              return_state=True)
        assert state.is_completed() and state.result()["exceptions"] == 0
    assert slack.messages == []


@pytest.mark.prefect
def test_a_failed_scheduled_run_sends_a_slack_alert(prefect_api, project, target, monkeypatch):
    slack = SlackStandIn()
    with serve_app(slack.app) as srv:
        monkeypatch.setenv("TEST_SLACK_WEBHOOK", srv.url + WEBHOOK_PATH)
        project.write_text(project.read_text() + "slack:\n  webhook_url: {env: TEST_SLACK_WEBHOOK}\n")
        write(project.parent, "flows/nightly-recon.yaml", RECONCILE)

        def broken(app, flow, params):
            raise RuntimeError("Stripe API unreachable for customer jane@example.com")
        import runner.reconcile
        monkeypatch.setattr(runner.reconcile, "run_from_flow", broken)
        from runner import apps
        from runner.operate.scheduled import scheduled_run
        apps._APPS.pop(str(project), None)
        state = scheduled_run(flow_file=str(project.parent / "flows/nightly-recon.yaml"), project_file=str(project),
                              return_state=True)
        assert state.is_failed()
    (msg,) = slack.messages
    text = msg["text"] + json.dumps(msg["blocks"])
    assert "Flow run failed: nightly-recon" in text and "Stripe API unreachable" in text
    assert "jane@example.com" not in text
    assert "/runs/flow-run/" in text


@pytest.mark.prefect
def test_a_run_started_by_hand_like_the_ui_is_executed_by_serves_schedule_runner(prefect_api, project, target):
    """What the UI's *Run > Custom run* does: create a flow run of the deployment with
    parameters; the runner inside `ledgerflow serve` picks it up and executes it."""
    import time as _time

    from prefect.client.orchestration import get_client

    from runner.operate.deployments import ScheduleRunner
    app = load_app(project)
    ids = plan_charges(app, 2)
    runner = ScheduleRunner(app)
    runner.start()
    try:
        with get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name("ledgerflow-scheduled/nightly-ledger")
            run = client.create_flow_run_from_deployment(dep.id, parameters={"since": "2026-01-01",
                                                                             "until": "2026-01-31"})
            deadline = _time.time() + 180
            while _time.time() < deadline:
                state = client.read_flow_run(run.id).state
                if state and state.is_final():
                    break
                _time.sleep(1)
    finally:
        runner.stop()
    assert state.is_completed(), state
    assert client_params(run) == {"since": "2026-01-01", "until": "2026-01-31"}
    assert [app.store.delivery(i)["state"] for i in ids] == ["sent"] * 2 and target.created == 2


def client_params(run) -> dict:
    return {k: run.parameters[k] for k in ("since", "until")}


@pytest.mark.prefect
def test_a_payout_reconciliation_that_fails_inside_a_delivery_run_raises_and_one_with_exceptions_does_not(
        prefect_api, project, monkeypatch):
    """A plan row retrying a payout's reconciliation runs it from an async flow run's thread (a
    delivery batch): a failure there must raise (to be retried, then dead-lettered), not pass for
    a success; a reconciliation that ends with exceptions did reconcile and returns."""
    import asyncio
    import types as _types

    from prefect import flow

    import runner.reconcile
    from runner.core.errors import LedgerflowError
    from runner.reconcile.trigger import reconcile_payout
    write(project.parent, "flows/nightly-recon.yaml", RECONCILE)
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    app = load_app(project)
    recon = app.flow("nightly-recon")
    event = {"id": "evt_po", "type": "payout.paid", "data": {"object": {"id": "po_1", "object": "payout"}}}

    @flow(name="test-delivery-batch")
    async def batch():
        state = await asyncio.to_thread(reconcile_payout, app, recon, event)
        return state.type.value, state.name

    def broken(app_, flow_, params):
        raise RuntimeError("Stripe API unreachable")
    monkeypatch.setattr(runner.reconcile, "run_from_flow", broken)
    with pytest.raises(LedgerflowError, match=r"the reconciliation run of po_1 ended FAILED.*Stripe API unreachable"):
        asyncio.run(batch())
    report = _types.SimpleNamespace(exceptions=[("po_1", "missing")], transactions=3, reconciled_share="66.67")
    monkeypatch.setattr(runner.reconcile, "run_from_flow", lambda app_, flow_, params: report)
    assert asyncio.run(batch()) == ("FAILED", "Exceptions")
