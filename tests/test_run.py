"""`ledgerflow run`: a real Prefect flow run, rows in the store, nothing delivered twice."""

from __future__ import annotations

import json

import pytest

from runner.cli import main
from runner.store import open_store
from tests.conftest import ROOT

pytestmark = pytest.mark.prefect



TOOLING = ROOT / "tests" / "fixtures" / "flowtest_tooling"


@pytest.fixture(autouse=True)
def tooling_flows(request):
    """The tooling's fixture flows (tests/fixtures/flowtest_tooling), laid over the project copy."""
    if "project_dir" in request.fixturenames and "shipped" not in request.node.name:
        import shutil
        shutil.copytree(TOOLING, request.getfixturevalue("project_dir"), dirs_exist_ok=True)

def _event(tmp_path, stripe_fixtures, event_type, **overrides):
    from runner.language.fixtures import event_from_fixture
    ev = event_from_fixture(event_type, overrides=overrides)
    path = tmp_path / f"{event_type}.json"
    path.write_text(json.dumps(ev))
    return path, ev


def test_run_twice_writes_one_row(prefect_api, project_dir, store_url, monkeypatch, capsys, stripe_fixtures, tmp_path):
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    path, ev = _event(tmp_path, stripe_fixtures, "charge.succeeded")
    assert main(["run", "flows/stripe-charges-to-csv.yaml", "--event", str(path)]) == 0
    first = capsys.readouterr().out
    assert ": delivered [" in first
    assert main(["run", "flows/stripe-charges-to-csv.yaml", "--event", str(path)]) == 0
    assert "already delivered" in capsys.readouterr().out
    store = open_store(store_url)
    assert store.count_deliveries() == 1 and store.count_deliveries("sent") == 1
    assert store.count_events() == 1
    (csv_file,) = (project_dir / "out" / "csv").glob("*.csv")
    rows = csv_file.read_bytes().decode().splitlines()
    assert len(rows) == 2 and rows[1].endswith(",1.00")
    d = store.delivery_by_key(f"stripe-charges-to-csv:sales-line:{ev['id']}")
    assert [a["outcome"] for a in store.attempts_of(d["id"])] == ["sent"]
    assert store.attempts_of(d["id"])[0]["flow_run_id"]      # it ran inside a Prefect flow run


def test_run_refund_and_payout_to_iif(prefect_api, project_dir, monkeypatch, capsys, stripe_fixtures, tmp_path):
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", f"sqlite:///{tmp_path / 's.db'}")
    refund, _ = _event(tmp_path, stripe_fixtures, "charge.refunded", amount_refunded=100, refunded=True)
    payout, _ = _event(tmp_path, stripe_fixtures, "payout.paid", status="paid")
    assert main(["run", "flows/stripe-refunds-to-iif.yaml", "--event", str(refund)]) == 0
    assert main(["run", "flows/stripe-payouts-to-iif.yaml", "--event", str(payout)]) == 0
    (iif,) = (project_dir / "out" / "iif").glob("*.iif")
    text = iif.read_bytes().decode()
    assert text.count("ENDTRNS\r\n") == 3            # header + two blocks
    assert "\tSales Refunds\t\t\t1.00\t" in text and "\tOperating Bank\t\t\t11.00\t" in text


def test_preview_json_prints_only_operations(project_dir, capsys, stripe_fixtures, tmp_path):
    path, ev = _event(tmp_path, stripe_fixtures, "charge.succeeded")
    assert main(["preview", "flows/stripe-charges-to-csv.yaml", "--event", str(path), "--json"]) == 0
    ops = json.loads(capsys.readouterr().out)
    assert ops == [{"flow": "stripe-charges-to-csv", "route": "sales-line", "connection": "csv",
                    "connector_type": "csv", "action": "qbo_bank_row",
                    "idempotency_key": f"stripe-charges-to-csv:sales-line:{ev['id']}", "event_id": ev["id"],
                    "payload": {"Date": "2009-02-13",
                                "Description": "Stripe charge ch_1PgafuB7WZ01zgkWXYmPNZs8 My First Test Charge "
                                               "(created for API docs)",
                                "Amount": 1.0}}]
    assert not (project_dir / "out").exists()        # preview sends nothing


def test_run_with_an_event_that_is_not_json(project_dir, capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["run", "flows/stripe-charges-to-csv.yaml", "--event", str(bad)]) == 1
    assert f"{bad}:1:2: not JSON" in capsys.readouterr().err
