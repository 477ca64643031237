"""Dead-letter queue: list, show, fix the mapping and replay (same idempotency key), discard with audit."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from runner.cli import main
from runner.deliver.delivery import deliver_rows
from runner.deliver.dlq import DlqError, discard, replay
from runner.store.tables import audit
from tests.delivery_helpers import MAPPING, http_project, load_app, plan_charges
from tests.standins.flaky_target import FlakyTarget
from tests.support.servers import serve_app


@pytest.fixture
def target():
    t = FlakyTarget(hang=2.0, require=("charge", "amount", "memo"))    # the target wants a memo
    with serve_app(t.app) as srv:
        t.url = srv.url
        yield t


@pytest.fixture
def project(target, tmp_path, store_url, monkeypatch):
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    pf = http_project(tmp_path / "p", target.url)
    monkeypatch.setenv("LEDGERFLOW_PROJECT", str(pf))
    return pf


def _deliver(app, ids, now=None):
    return deliver_rows(app, app.store.claim("w", ids=ids, now=now), worker="w")


def test_list_and_show(project, target, capsys):
    app = load_app(project)
    ids = plan_charges(app, 2)
    _deliver(app, ids)
    assert main(["dlq", "list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:6] == ["ID", "FLOW", "ROUTE", "TARGET", "ATTEMPTS", "AGE"]
    line = next(l for l in out.splitlines() if l.startswith(str(ids[0])))
    assert "charges-to-ledger" in line and "doc" in line and "ledger_api.post" in line and "HTTP 400" in line
    assert main(["dlq", "show", str(ids[0])]) == 0
    out = capsys.readouterr().out
    assert "idempotency key: charges-to-ledger:doc:evt_000000" in out
    assert "event: evt_000000 charge.succeeded" in out
    assert '"charge": "ch_000000"' in out
    assert "#1 " in out and "dead" in out and "field memo is required" in out
    assert "ledgerflow dlq replay" in out


def test_fix_mapping_then_replay_keeps_the_key_and_delivers(project, target, prefect_api, capsys):
    app = load_app(project)
    (did,) = plan_charges(app, 1)
    _deliver(app, [did])
    dead = app.store.delivery(did)
    assert dead["state"] == "dead" and target.created == 0
    # replaying without a fix plans the same payload: dead again
    assert main(["dlq", "replay", str(did)]) == 1
    assert "payload unchanged" in capsys.readouterr().out
    # fix the mapping: the current file is what replay plans with
    (project.parent / "mappings/http/charge_doc.yaml").write_text(MAPPING + 'memo: "Stripe {{ charge.id }}"\n')
    assert main(["dlq", "replay", str(did)]) == 0
    out = capsys.readouterr().out
    assert "re-planned with the current flow and mappings (payload changed)" in out and "delivered [doc_1]" in out
    row = app.store.delivery(did)
    assert row["state"] == "sent" and row["idempotency_key"] == dead["idempotency_key"]
    assert row["payload"]["memo"] == "Stripe ch_000000"
    assert target.docs[dead["idempotency_key"]]["body"]["memo"] == "Stripe ch_000000"
    with app.store.engine.connect() as c:
        actions = [r.action for r in c.execute(select(audit).where(audit.c.subject == str(did)))]
    assert actions == ["dlq.replay", "dlq.replay"]


def test_replay_never_duplicates_a_document_the_target_already_created(project, target, prefect_api):
    (project.parent / "mappings/http/charge_doc.yaml").write_text(MAPPING + 'memo: "m"\n')
    app = load_app(project)
    (did,) = plan_charges(app, 1)
    key = app.store.delivery(did)["idempotency_key"]
    target.fail(key, "timeout-after-create", "500", "500")    # created, then we only ever saw failures
    for _ in range(3):
        _deliver(app, [did], now=9e12)
    assert app.store.delivery(did)["state"] == "dead" and target.created == 1
    assert main(["dlq", "replay", str(did)]) == 0
    assert app.store.delivery(did)["state"] == "sent" and target.created == 1
    assert app.store.delivery(did)["target_ref"] == "doc_1"


def test_replay_all_for_one_flow_and_queue_only(project, target, capsys):
    app = load_app(project)
    ids = plan_charges(app, 3)
    _deliver(app, ids)
    assert main(["dlq", "replay", "--all", "--flow", "other-flow", "--queue"]) == 0
    assert "empty for flow other-flow" in capsys.readouterr().out
    assert main(["dlq", "replay", "--all", "--flow", "charges-to-ledger", "--queue"]) == 0
    assert "3 queued for the workers" in capsys.readouterr().out
    assert [app.store.delivery(i)["state"] for i in ids] == ["pending"] * 3
    # attempts keep counting (so a target sees a new request id), with a fresh budget of attempts
    assert all(app.store.delivery(i)["max_attempts"] - app.store.delivery(i)["attempts"] == 3 for i in ids)


def test_replay_errors_are_clear(project, target, capsys):
    app = load_app(project)
    ids = plan_charges(app, 2)
    with pytest.raises(DlqError, match=r"delivery \d+ is pending, not in the dead-letter queue"):
        replay(app, ids[0])
    with pytest.raises(DlqError, match="no delivery 999999"):
        replay(app, 999999)
    _deliver(app, ids)
    # the current flow no longer routes the event to this route
    flow_file = project.parent / "flows/charges-to-ledger.yaml"
    flow_file.write_text(flow_file.read_text().replace("  - name: doc\n", "  - name: document\n"))
    with pytest.raises(DlqError, match="routes it to document only, not to route 'doc'"):
        replay(app, ids[0])
    # a mapping that no longer renders: file:line in the message, the row stays dead
    flow_file.write_text(flow_file.read_text().replace("  - name: document\n", "  - name: doc\n"))
    (project.parent / "mappings/http/charge_doc.yaml").write_text('charge: "{{ charge.nope.deeper }}"\n')
    assert main(["dlq", "replay", str(ids[0])]) == 1
    err = capsys.readouterr().err
    assert "cannot plan event evt_000000" in err and "charge_doc.yaml" in err
    assert app.store.delivery(ids[0])["state"] == "dead"
    assert main(["dlq", "replay"]) == 1
    assert "give a delivery id or --all" in capsys.readouterr().err
    assert main(["dlq", "replay", str(ids[0]), "--flow", "x"]) == 1


def test_discard_needs_a_reason_and_keeps_an_audit_record(project, target, capsys):
    app = load_app(project)
    (did,) = plan_charges(app, 1)
    _deliver(app, [did])
    with pytest.raises(DlqError, match="--reason: say why"):
        discard(app, did, "  ")
    assert main(["dlq", "discard", str(did), "--reason", "booked by hand in QuickBooks"]) == 0
    assert app.store.delivery(did)["state"] == "discarded"
    with app.store.engine.connect() as c:
        (rec,) = c.execute(select(audit).where(audit.c.action == "dlq.discard")).mappings().all()
    assert rec["subject"] == str(did) and "reason=booked by hand in QuickBooks" in rec["detail"]
    assert "key=charges-to-ledger:doc:evt_000000" in rec["detail"] and rec["actor"]
    assert main(["dlq", "discard", str(did), "--reason", "again"]) == 1
    assert "is discarded, not in the dead-letter queue" in capsys.readouterr().err
    assert main(["dlq", "list"]) == 0 and "empty" in capsys.readouterr().out


def test_replay_all_replans_the_flow_s_retrying_rows_or_says_why_not(project, target, capsys):
    app = load_app(project)
    dead_id, retrying, partial = plan_charges(app, 3)
    keys = {i: app.store.delivery(i)["idempotency_key"] for i in (dead_id, retrying, partial)}
    target.fail(keys[retrying], "500")                   # transient: retrying, with the old payload
    target.fail(keys[partial], "500")
    _deliver(app, [dead_id, retrying, partial])
    assert [app.store.delivery(i)["state"] for i in (dead_id, retrying, partial)] == ["dead", "retrying", "retrying"]
    app.store.set_delivery(partial, target_ref="doc_9")  # the target reported a document for it already
    (project.parent / "mappings/http/charge_doc.yaml").write_text(MAPPING + 'memo: "Stripe {{ charge.id }}"\n')
    assert main(["dlq", "replay", "--all", "--flow", "charges-to-ledger", "--queue"]) == 0
    out = capsys.readouterr().out
    assert f"1 retrying delivery(ies) re-planned with the current flow and mappings (payload changed), due now: " \
           f"{retrying}" in out
    assert f"1 retrying delivery(ies) skipped (they keep their old payload):\n  {partial}: the target already " \
           "holds document doc_9 for it" in out
    assert "3 queued for the workers" not in out and "2 queued for the workers" in out
    row = app.store.delivery(retrying)
    assert row["state"] == "pending" and row["payload"]["memo"] == "Stripe ch_000001"
    assert row["idempotency_key"] == keys[retrying] and row["max_attempts"] - row["attempts"] == 3
    assert app.store.delivery(partial)["state"] == "retrying" and "memo" not in app.store.delivery(partial)["payload"]
    _deliver(app, [dead_id, retrying])
    assert [app.store.delivery(i)["state"] for i in (dead_id, retrying)] == ["sent", "sent"]
    assert target.docs[keys[retrying]]["body"]["memo"] == "Stripe ch_000001"
    # a second pass finds nothing new to re-plan: the skipped row is said again, nothing else moves
    assert main(["dlq", "replay", "--all", "--flow", "charges-to-ledger", "--queue"]) == 0
    out = capsys.readouterr().out
    assert "re-planned" not in out and f"{partial}: the target already holds document doc_9" in out


def test_replay_all_of_one_alert_takes_exactly_its_dead_letters(project, target, capsys):
    from runner.deliver.alerts import row_group_key
    app = load_app(project)
    memo, unauthorized = plan_charges(app, 2)
    target.fail(app.store.delivery(unauthorized)["idempotency_key"], "401")
    _deliver(app, [memo, unauthorized])
    key = row_group_key(app.store.delivery(memo))[:12]
    assert main(["dlq", "replay", "--all", "--flow", "charges-to-ledger", "--alert", key, "--queue"]) == 0
    assert "1 queued for the workers" in capsys.readouterr().out
    assert app.store.delivery(memo)["state"] == "pending" and app.store.delivery(unauthorized)["state"] == "dead"
    assert main(["dlq", "replay", "--all", "--alert", "000000000000", "--queue"]) == 0
    assert "empty for alert 000000000000" in capsys.readouterr().out
    assert main(["dlq", "replay", str(unauthorized), "--alert", key]) == 1
    assert "--flow and --alert go with --all" in capsys.readouterr().err
