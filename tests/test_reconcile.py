"""Payout reconciliation against the Stripe stand-in fed by the scenario builder."""

from __future__ import annotations

from decimal import Decimal

import pytest

from runner.app import App
from runner.core import jsonio
from runner.reconcile import reconcile
from runner.reconcile.classify import RECONCILED
from tests.reconcile_helpers import book, wire_project
from tests.standins.stripe_scenarios import CONNECTED, build
from tests.support.servers import serve_app

FLOW = "payout-reconciliation"


@pytest.fixture
def stand(request):
    variant = getattr(request, "param", "clean")
    scenario = build(variant)
    standin = scenario.standin()
    with serve_app(standin.app) as srv:
        yield scenario, standin, srv.url


def _app(project_dir, monkeypatch, url, store_url, scenario, books_of_connected: bool = True) -> App:
    # the connected account keeps its own books in the IIF file here, so its payouts are booked too
    wire_project(project_dir, monkeypatch, url, store_url, CONNECTED,
                 {a: "iif" for a in CONNECTED} if books_of_connected else {})
    app = App()
    book(app.store, scenario)
    return app


def _flow(app):
    return app.flow(str(app.project.dir / "flows" / "payout-reconciliation.yaml"))


def _since():
    from datetime import date
    return date(2025, 12, 1)


def test_clean_scenario_reconciles_everything(project_dir, monkeypatch, store_url, stand):
    scenario, standin, url = stand
    app = _app(project_dir, monkeypatch, url, store_url, scenario)
    report = reconcile(app, _flow(app), since=_since())

    assert {r.payout_id: r.status for r in report.results} == scenario.payout_status
    assert report.exceptions == []
    assert report.reconciled_share == Decimal(100)
    assert {r.payout_id: r.transactions for r in report.results} == scenario.transactions
    for r in report.results:
        assert set(r.counts) <= RECONCILED
    # every automatic payout was read for the platform and through Stripe-Account for each seller
    assert standin.calls["GET /v1/balance_transactions"] >= 6
    manual = next(r for r in report.results if r.status == "unreconcilable")
    assert "manual payout" in manual.reason


@pytest.mark.parametrize("stand", ["dirty"], indirect=True)
def test_dirty_scenario_reports_exactly_the_seeded_exceptions(project_dir, monkeypatch, store_url, stand):
    scenario, _, url = stand
    app = _app(project_dir, monkeypatch, url, store_url, scenario)
    report = reconcile(app, _flow(app), since=_since())

    found = {(c.txn_id, c.kind) for _, c in report.exceptions}
    assert found == scenario.exceptions
    assert {r.payout_id: r.status for r in report.results} == scenario.payout_status
    by_kind = {c.kind: c for _, c in report.exceptions}
    assert by_kind["booked_late"].fix.startswith("ledgerflow dlq replay ")
    assert "catch-up" in by_kind["missing"].fix
    assert "GBP" in next(c.detail for _, c in report.exceptions if c.kind == "mismatch" and "GBP" in c.detail)


def test_bookings_per_transaction_mode(project_dir, monkeypatch, store_url, stand):
    scenario, _, url = stand
    app = _app(project_dir, monkeypatch, url, store_url, scenario)
    report = reconcile(app, _flow(app), since=_since())
    rows = app.store.deliveries_where()
    ours = [r for r in rows if r["flow"] == FLOW]
    by_key = {r["idempotency_key"]: r for r in ours}
    negative = next(r for r in report.results if r.amount < 0)
    t = by_key[f"{FLOW}:transfer:recon_{negative.payout_id}"]["payload"]
    # a negative payout: Stripe debits the bank, money goes bank -> clearing
    assert (t["from_account"], t["to_account"], t["amount"]) == ("Operating Bank", "Stripe Clearing", Decimal("6608"))
    platform = next(r for r in report.results if r.account is None and r.status == "reconciled")
    j = by_key[f"{FLOW}:journal:recon_{platform.payout_id}"]["payload"]
    assert sum(Decimal(str(l["amount"])) for l in j["lines"]) == 0
    fees = next(l for l in j["lines"] if l["account"] == "Stripe Fees")
    assert fees["amount"] > 0
    # reversed and manual payouts: nothing booked; a failed payout: the transfer out (its own balance
    # transaction) and the transfer back (the payout_failure one), so clearing mirrors both and the bank nets 0
    for r in report.results:
        if r.status in ("reversed", "unreconcilable"):
            assert not [k for k in by_key if r.payout_id in k]
        if r.status == "failed":
            out = by_key[f"{FLOW}:transfer:recon_{r.payout_id}"]["payload"]
            back = by_key[f"{FLOW}:transfer:recon_{r.payout_id}_failed"]["payload"]
            assert (out["from_account"], out["to_account"]) == (back["to_account"], back["from_account"])
            assert out["amount"] == back["amount"] == r.amount_major
    # a second run books nothing twice
    before = len(ours)
    reconcile(app, _flow(app), since=_since())
    assert len([r for r in app.store.deliveries_where() if r["flow"] == FLOW]) == before


def test_a_connected_accounts_payout_is_checked_not_booked_into_the_platforms_books(
        project_dir, monkeypatch, store_url, stand):
    scenario, _, url = stand
    app = _app(project_dir, monkeypatch, url, store_url, scenario, books_of_connected=False)
    report = reconcile(app, _flow(app), since=_since())
    connected = [r for r in report.results if r.account is not None]
    assert connected and any(r.transactions > 0 for r in connected)          # checked
    keys = [r["idempotency_key"] for r in app.store.deliveries_where() if r["flow"] == FLOW]
    assert keys and not [k for k in keys for r in connected if r.payout_id in k]   # not booked
    assert [k for k in keys for r in report.results if r.account is None and r.payout_id in k]


def test_summary_mode_books_one_balanced_journal_per_payout(project_dir, monkeypatch, store_url, stand):
    scenario, _, url = stand
    flow_file = project_dir / "flows" / "payout-reconciliation.yaml"
    flow_file.write_text(flow_file.read_text().replace("mode: per_transaction", "mode: summary"))
    app = _app(project_dir, monkeypatch, url, store_url, scenario)
    report = reconcile(app, _flow(app), since=_since())
    assert report.exceptions == []
    journals = {r["idempotency_key"]: r["payload"] for r in app.store.deliveries_where() if r["flow"] == FLOW}
    assert not [k for k in journals if ":transfer:" in k]
    # paid payouts, and a failed one as if paid (the next payout's journal takes its return back out)
    paid = [r for r in report.results if r.status in ("reconciled", "failed")]
    assert len(journals) == len(paid)
    for r in paid:
        journal = journals[f"{FLOW}:journal:recon_{r.payout_id}"]
        lines = journal["lines"]
        assert sum(Decimal(str(l["amount"])) for l in lines) == 0
        assert lines[0]["account"] == "Operating Bank" and journal["memo"].endswith(" USD")   # home currency
        if r.currency == "USD":
            assert Decimal(str(lines[0]["amount"])) == r.amount_major
        # the accounting model's accounts, not one line per category: fees by kind
        assert "Stripe Clearing" not in {l["account"] for l in lines}


def test_single_payout_on_a_connected_account(project_dir, monkeypatch, store_url, stand):
    scenario, standin, url = stand
    app = _app(project_dir, monkeypatch, url, store_url, scenario)
    jpy = [o for o, a, _ in scenario.objects if o["object"] == "payout" and a == CONNECTED[1]][0]
    report = reconcile(app, _flow(app), payout=jpy["id"], account=CONNECTED[1])
    [res] = report.results
    assert (res.status, res.currency, res.amount_major) == ("reconciled", "JPY", Decimal(jpy["amount"]))
    assert res.home_currency == "USD" and res.home_rate.source == "ecb"


def test_rate_limited_pages_are_retried(project_dir, monkeypatch, store_url, stand):
    scenario, standin, url = stand
    app = _app(project_dir, monkeypatch, url, store_url, scenario)
    standin.inject(429, 2, path_prefix="/v1/balance_transactions", retry_after=0)
    report = reconcile(app, _flow(app), since=_since())
    assert report.exceptions == [] and len(report.results) == len(scenario.payout_status)


def test_bad_api_key_names_the_setting(project_dir, monkeypatch, store_url, stand):
    scenario, _, url = stand
    app = _app(project_dir, monkeypatch, url, store_url, scenario)
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_wrongkey0000000")
    from runner.core.errors import LedgerflowError
    with pytest.raises(LedgerflowError, match=r"401.*stripe.api_key"):
        reconcile(App(), _flow(app), since=_since())


def test_results_are_kept_in_the_store(project_dir, monkeypatch, store_url, stand):
    scenario, _, url = stand
    app = _app(project_dir, monkeypatch, url, store_url, scenario)
    report = reconcile(app, _flow(app), since=_since())
    from sqlalchemy import select

    from runner.store.tables import recon_results
    with app.store.engine.connect() as c:
        rows = c.execute(select(recon_results).where(recon_results.c.run_id == report.run_id)).mappings().all()
    assert {r["payout_id"]: r["status"] for r in rows} == scenario.payout_status
    assert all(jsonio.loads(r["exceptions"]) == [] for r in rows)
