"""An event's story: `inbox list` at a glance, `inbox show` as a timeline (flows, operations, payloads,
attempts, target documents), `deliveries list` across events; piping into `head` is not an error."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from runner.cli import main
from runner.language.fixtures import event_from_fixture
from tests.conftest import ROOT


def test_inbox_list_has_a_header_received_time_status_and_the_error(project_dir, stripe_fixtures, capsys,
                                                                      monkeypatch, tmp_path):
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", f"sqlite:///{tmp_path / 'inbox.db'}")
    from runner.app import App
    app = App()
    ok = event_from_fixture("charge.succeeded")
    bad = event_from_fixture("charge.succeeded", overrides={"id": "ch_bad"})
    bad["id"] = "evt_bad"
    app.store.add_event(ok, json.dumps(ok), "cli")
    app.store.add_event(bad, json.dumps(bad), "cli")
    app.store.mark_event("evt_bad", "failed", flows="f",
                         error="flows/f.yaml:3:5: routes[0].when: undefined 'x'\nsecond line")
    assert main(["inbox", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t") == ["event", "type", "account", "received (UTC)", "status", "flows", "error"]
    failed = next(line.split("\t") for line in lines if line.startswith("evt_bad"))
    assert failed[4] == "failed" and failed[6] == "flows/f.yaml:3:5: routes[0].when: undefined 'x'"
    assert len(failed[3]) == 19 and failed[3][4] == "-"                 # YYYY-MM-DD HH:MM:SS
    assert main(["inbox", "list", "--status", "failed"]) == 0
    assert [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()[1:]] == ["evt_bad"]


def test_inbox_show_piped_into_head_ends_quietly(project_dir, stripe_fixtures, tmp_path):
    env = dict(os.environ, LEDGERFLOW_PROJECT=str(project_dir / "ledgerflow.yaml"),
               LEDGERFLOW_STORE_URL=f"sqlite:///{tmp_path / 'pipe.db'}")
    ev = event_from_fixture("charge.succeeded")
    ev["data"]["object"]["description"] = "x" * 200_000           # more than a pipe's buffer
    code = ("import json, sys; from runner.app import App; ev = json.loads(sys.stdin.read()); "
            "App().store.add_event(ev, json.dumps(ev), 'cli')")
    subprocess.run([sys.executable, "-c", code], input=json.dumps(ev), text=True, cwd=ROOT, env=env, check=True)
    show = subprocess.Popen([sys.executable, "-m", "runner.cli", "inbox", "show", ev["id"], "--payload"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = show.stdout.read(10)                 # `| head -c 10`: read a little, then leave
    show.stdout.close()
    err = show.stderr.read().decode()
    assert show.wait(120) == 0 and first and "BrokenPipeError" not in err and "Traceback" not in err


# ---- an event's story: inbox show as a timeline, deliveries list ---------------------------------

@pytest.fixture
def story_app(target, tmp_path, store_url, monkeypatch):
    """evt_000000: a retried then delivered operation (payload with personal data) and a flow that
    cannot plan it (a dead plan row); evt_000001: an operation dead-lettered on a 400."""
    from runner.deliver.delivery import deliver_rows
    from runner.ingest.dispatch import dispatch_pending
    from tests.delivery_helpers import PII_MAPPING, add_broken_flow, charge, http_project, load_app
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    pf = http_project(tmp_path / "p", target.url, mapping=PII_MAPPING)
    add_broken_flow(pf.parent)
    monkeypatch.setenv("LEDGERFLOW_PROJECT", str(pf))
    app = load_app(pf)
    for n in (0, 1):
        ev, raw = charge(n)
        app.store.add_event(ev, raw, "webhook:stripe")
    dispatch_pending(app)
    ok = app.store.delivery_by_key("charges-to-ledger:doc:evt_000000")["id"]
    bad = app.store.delivery_by_key("charges-to-ledger:doc:evt_000001")["id"]
    target.fail("charges-to-ledger:doc:evt_000000", "500")
    target.fail("charges-to-ledger:doc:evt_000001", "400")
    deliver_rows(app, app.store.claim("w1", limit=100), worker="w1")        # 500, 400, both plan rows dead
    deliver_rows(app, app.store.claim("w2", ids=[ok], now=9e12), worker="w2")
    yield app, ok, bad
    app.close()


def test_inbox_show_tells_the_event_s_story(story_app, capsys):
    app, ok, _ = story_app
    plan_id = app.store.delivery_by_key("plan:broken-flow:evt_000000")["id"]
    assert main(["inbox", "show", "evt_000000"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("event evt_000000  charge.succeeded · ch_000000 · 10.00 USD")
    assert "from webhook:stripe; status failed" in lines[1]
    assert "flow charges-to-ledger" in lines and "flow broken-flow" in lines
    sections = {chunk.split("\n", 1)[0]: chunk for chunk in re.split(r"\n(?=flow )", out)}
    op = sections["flow charges-to-ledger"]
    assert f"operation {ok}: route doc -> ledger_api (http.post)  sent, 2 of 3 attempt(s)" in op
    assert "target document: doc_1" in op and "idempotency key: charges-to-ledger:doc:evt_000000" in op
    assert '"charge": "ch_000000"' in op and '"amount": 10.00,' in op          # the payload as planned
    assert "Jane Doe" not in out and "jane.doe@example.com" not in out and '"email": "[redacted]"' in op
    assert "attempt #1 " in op and "retry by w1" in op and "HTTP 500" in op
    assert "attempt #2 " in op and "sent by w2" in op
    plan = sections["flow broken-flow"]
    assert f"planning (plan row {plan_id}): dead, 1 of " in plan
    assert re.search(r"first error: \S*mappings/http/broken\.yaml:1:8: order: undefined", plan)   # file:line:col
    assert "planning attempt #1 " in plan and " dead by w1" in plan
    assert f"retry after the fix: ledgerflow dlq replay {plan_id}" in plan
    # scripts keep the event's JSON as received; the story is also JSON
    assert main(["inbox", "show", "evt_000000", "--payload"]) == 0
    assert json.loads(capsys.readouterr().out)["data"]["object"]["id"] == "ch_000000"
    assert main(["inbox", "show", "evt_000000", "--json"]) == 0
    story = json.loads(capsys.readouterr().out)
    assert story["event"]["amount"] == "10.00 USD"
    (flow,) = [f for f in story["flows"] if f["flow"] == "charges-to-ledger"]
    (opj,) = flow["operations"]
    assert opj["target_ref"] == "doc_1" and [h["outcome"] for h in opj["history"]] == ["retry", "sent"]
    assert opj["payload"]["customer_name"] == "[redacted]"
    assert main(["inbox", "show", "evt_nope"]) == 1
    assert "no event evt_nope in the inbox" in capsys.readouterr().err


def _table(out: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in out.splitlines()]


def test_deliveries_list_filters_by_flow_state_target_and_since(story_app, capsys):
    app, ok, bad = story_app
    assert main(["deliveries", "list"]) == 0
    rows = _table(capsys.readouterr().out)
    assert rows[0] == ["ID", "CREATED (UTC)", "FLOW", "ROUTE", "TARGET", "ACTION", "STATE", "ATTEMPTS", "EVENT",
                       "TARGET REF", "ERROR"]
    by_id = {int(r[0]): r for r in rows[1:]}
    assert len(by_id) == 4                                   # two operations, two plan rows
    assert by_id[ok][2:10] == ["charges-to-ledger", "doc", "ledger_api", "post", "sent", "2/3", "evt_000000", "doc_1"]
    assert by_id[bad][6] == "dead" and "HTTP 400" in by_id[bad][10]
    assert main(["deliveries", "list", "--state", "dead", "--target", "ledger_api"]) == 0
    assert [int(r[0]) for r in _table(capsys.readouterr().out)[1:]] == [bad]
    assert main(["deliveries", "list", "--flow", "broken-flow"]) == 0
    rows = _table(capsys.readouterr().out)[1:]
    assert {r[4] for r in rows} == {"(plan)"} and len(rows) == 2
    assert main(["deliveries", "list", "--target", "(plan)", "--state", "sent"]) == 0
    assert _table(capsys.readouterr().out) == []             # no header without rows: "no deliveries match"
    assert main(["deliveries", "list", "--since", "1h"]) == 0
    assert len(_table(capsys.readouterr().out)) == 5
    app.store.set_delivery(ok, created_at=time.time() - 3 * 86400)
    assert main(["deliveries", "list", "--since", "2d", "--json"]) == 0
    assert ok not in [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()]
    assert main(["deliveries", "list", "--since", "2026-01-01", "--limit", "1", "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    assert main(["deliveries", "list", "--since", "yesterday"]) == 1
    assert "--since 'yesterday': expected a duration" in capsys.readouterr().err
