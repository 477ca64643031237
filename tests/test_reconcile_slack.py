"""A reconciliation with exceptions sends one Slack summary; a clean one sends none."""

from __future__ import annotations

import pytest
import yaml

from runner.app import App
from runner.reconcile import run_from_flow
from tests.reconcile_helpers import book, wire_project
from tests.standins.slack import WEBHOOK_PATH, SlackStandIn
from tests.standins.stripe_scenarios import CONNECTED, build
from tests.support.servers import serve_app


@pytest.mark.parametrize("variant", ["dirty", "clean"])
def test_slack_summary_only_when_there_are_exceptions(project_dir, monkeypatch, tmp_path, variant):
    slack = SlackStandIn()
    scenario = build(variant)
    with serve_app(slack.app) as slack_srv, serve_app(scenario.standin().app) as srv:
        pf = wire_project(project_dir, monkeypatch, srv.url, f"sqlite:///{tmp_path / 'r.db'}", CONNECTED)
        data = yaml.safe_load(pf.read_text())
        data["slack"] = {"webhook_url": {"env": "TEST_SLACK_WEBHOOK"}}
        pf.write_text(yaml.safe_dump(data, sort_keys=False))
        monkeypatch.setenv("TEST_SLACK_WEBHOOK", slack_srv.url + WEBHOOK_PATH)
        app = App()
        book(app.store, scenario)
        recon = app.flow(str(project_dir / "flows" / "payout-reconciliation.yaml"))
        report = run_from_flow(app, recon, {"since": "2025-12-01", "until": "2026-01-31"})
    if variant == "clean":
        assert not report.exceptions and slack.messages == []
        return
    (msg,) = slack.messages
    text = msg["text"]
    assert text.startswith(":warning: Payout reconciliation:")
    kinds = {kind for _, kind in scenario.exceptions}
    assert all(k.replace("_", " ") in text for k in kinds), (kinds, text)
    assert "ledgerflow reconcile payouts" in text
    assert "@" not in text                      # no personal data in the alert
