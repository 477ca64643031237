"""End to end: `ledgerflow reconcile payouts` in the terminal, and run_from_flow in a Prefect run."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest

from runner.app import App
from runner.cli import main
from tests.reconcile_helpers import book, wire_project
from tests.standins.stripe_scenarios import CONNECTED, build
from tests.support.servers import serve_app


@pytest.mark.parametrize("variant", ["clean", "dirty"])
def test_cli_reports_the_scenario(project_dir, monkeypatch, tmp_path, capsys, variant):
    scenario = build(variant)
    with serve_app(scenario.standin().app) as srv:
        wire_project(project_dir, monkeypatch, srv.url, f"sqlite:///{tmp_path / 'cli.db'}", CONNECTED)
        book(App().store, scenario)
        code = main(["reconcile", "payouts", "--since", "2025-12-01", "--until", "2026-01-31"])
    out = capsys.readouterr().out
    for payout in scenario.payout_status:
        assert payout in out
    if variant == "clean":
        assert code == 0 and "100.00% reconciled automatically; 0 exceptions" in " ".join(out.split())
    else:
        assert code == 1
        for txn, kind in scenario.exceptions:
            assert txn in out and kind in out


@pytest.mark.parametrize("args, message", [
    (["reconcile", "payouts"], "give --since DATE"),
    (["reconcile", "payouts", "--since", "yesterday"], "--since 'yesterday': expected a date YYYY-MM-DD"),
    (["reconcile", "payouts", "--since", "2026-01-01", "--account", "acme"], "expected acct_... or platform"),
    (["reconcile", "payouts", "--payout", "tr_1"], "expected a payout id po_"),
])
def test_cli_bad_arguments(project_dir, capsys, args, message):
    assert main(args) == 1
    assert message in capsys.readouterr().err


def test_a_prefect_run_leaves_both_artifacts(prefect_api, project_dir, monkeypatch, tmp_path):
    from prefect import flow
    from prefect.client.orchestration import get_client

    from runner.reconcile import run_from_flow

    scenario = build("dirty")
    with serve_app(scenario.standin().app) as srv:
        wire_project(project_dir, monkeypatch, srv.url, f"sqlite:///{tmp_path / 'prefect.db'}", CONNECTED)
        app = App()
        book(app.store, scenario)
        recon = app.flow(str(project_dir / "flows" / "payout-reconciliation.yaml"))

        @flow(name="test-payout-reconciliation")
        def scheduled(since: str) -> tuple[str, int]:
            from prefect.runtime import flow_run
            report = run_from_flow(app, recon, {"since": since, "until": "2026-01-31"})
            return str(flow_run.id), len(report.exceptions)

        run_id, n_exceptions = scheduled("2025-12-01")
    assert n_exceptions == len(scenario.exceptions)
    async def read():
        async with get_client() as client:
            resp = await client._client.post("/artifacts/filter", json={
                "artifacts": {"flow_run_id": {"any_": [run_id]}}, "limit": 50, "offset": 0, "sort": "CREATED_DESC"})
            resp.raise_for_status()
            return [SimpleNamespace(**a) for a in resp.json()]
    arts = asyncio.run(read())
    by_type = {a.type: a for a in arts}
    assert set(by_type) == {"table", "markdown"}
    table = by_type["table"].data
    rows = table if isinstance(table, list) else json.loads(table)
    assert {r["payout"]: r["status"] for r in rows} == scenario.payout_status
    md = by_type["markdown"].data
    for txn, kind in scenario.exceptions:
        assert txn in md and kind in md
    assert "ledgerflow dlq replay" in md
