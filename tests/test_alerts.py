"""Slack alerts through slack-sdk against a local Slack: Block Kit content, grouping per
flow + error per window (state in the store), no personal data, webhook and bot token."""

from __future__ import annotations

import json
import time

import pytest

from runner.deliver.alerts import Alert, alert_dead_letters, alert_flow_run_failed, flush_grouped, record, send_alert
from runner.deliver.delivery import deliver_rows
from tests.delivery_helpers import PII_MAPPING, http_project, load_app, plan_charges
from tests.standins.slack import BOT_TOKEN, WEBHOOK_PATH, SlackStandIn
from tests.support.servers import serve_app


@pytest.fixture
def slack():
    s = SlackStandIn()
    with serve_app(s.app) as srv:
        s.url = srv.url
        yield s


def webhook_section(slack) -> str:
    return "slack:\n  webhook_url: {env: TEST_SLACK_WEBHOOK}\n  window: 10m\n"


@pytest.fixture
def app(target, slack, tmp_path, store_url, monkeypatch):
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    monkeypatch.setenv("TEST_SLACK_WEBHOOK", slack.url + WEBHOOK_PATH)
    a = load_app(http_project(tmp_path / "p", target.url, slack=webhook_section(slack)))
    yield a
    a.close()


def _dead(app, target, n, mode="400", start=0):
    ids = plan_charges(app, n, start=start)
    for i in ids:
        if mode:
            target.fail(app.store.delivery(i)["idempotency_key"], mode)
    report = deliver_rows(app, app.store.claim("w", ids=ids), worker="w")
    return ids, report


def test_dead_letter_message_has_flow_target_error_event_run_link_and_replay(app, target, slack, monkeypatch):
    monkeypatch.setenv("PREFECT_UI_URL", "http://127.0.0.1:4200")
    (did,), report = _dead(app, target, 1)
    assert alert_dead_letters(app, report.dead, run_id="0b7e5c1e-0000-4000-8000-000000000001") == 1
    (msg,) = slack.messages
    assert msg["via"] == "webhook"
    blocks = msg["blocks"]
    assert blocks[0]["type"] == "header" and blocks[0]["text"]["text"] == "Dead-lettered: charges-to-ledger"
    fields = [f["text"] for f in blocks[1]["fields"]]
    assert "*Flow*\ncharges-to-ledger" in fields and "*Target*\nledger_api (post)" in fields
    assert "*Event*\nevt_000000" in fields and f"*Delivery*\n{did}" in fields
    body = json.dumps(blocks)
    assert "HTTP 400 from POST 127.0.0.1/docs" in body
    assert f"`ledgerflow dlq replay {did}`" in body
    assert "http://127.0.0.1:4200/runs/flow-run/0b7e5c1e-0000-4000-8000-000000000001" in body
    assert "Dead-lettered: charges-to-ledger" in msg["text"]          # the notification fallback


def test_identical_failures_are_grouped_per_window_with_a_count(app, target, slack):
    _, report = _dead(app, target, 5)
    alert_dead_letters(app, report.dead)
    assert len(slack.messages) == 1                         # one message, not five
    assert flush_grouped(app) == 0                          # the window is still open
    assert flush_grouped(app, now=time.time() + 601) == 1   # closed: the count goes out
    extra = slack.messages[1]
    assert "4 more dead-lettered for charges-to-ledger -> ledger_api (post) with the same error" in extra["text"]
    assert "ledgerflow dlq replay --all --flow charges-to-ledger" in json.dumps(extra["blocks"])
    assert flush_grouped(app, now=time.time() + 1200) == 0  # nothing reported twice
    # a different error is a different group
    _, report = _dead(app, target, 1, mode="401", start=10)
    alert_dead_letters(app, report.dead)
    assert len(slack.messages) == 3 and "HTTP 401" in slack.texts()[2]


def test_grouping_state_is_in_the_store_and_shared(app, store_url):
    a = Alert("dead", "f", "t", "HTTP 500 for ch_3MqLmn2eZvKYlo2C0 after 6 attempts", window=60)
    b = Alert("dead", "f", "t", "HTTP 500 for ch_9ZzzzzzzzzzzzzzzZ after 6 attempts", window=60)
    assert a.group_key == b.group_key                       # ids and numbers masked
    assert record(app.store, a, now=1000.0) == (1, 0)
    from runner.store.db import Store
    other = Store(store_url)                                # another worker process
    try:
        assert record(other, b, now=1010.0) is None
        assert record(other, b, now=1020.0) is None
    finally:
        other.close()
    assert record(app.store, a, now=1061.0) == (1, 2)       # new window; two were never reported


def test_no_personal_data_in_alerts(target, slack, tmp_path, store_url, monkeypatch):
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    monkeypatch.setenv("TEST_SLACK_WEBHOOK", slack.url + WEBHOOK_PATH)
    app = load_app(http_project(tmp_path / "pii", target.url, slack=webhook_section(slack), mapping=PII_MAPPING))
    _, report = _dead(app, target, 1, mode="422-pii")
    alert_dead_letters(app, report.dead)
    (text,) = slack.texts()
    assert "HTTP 422" in text
    for secret in ("jane.doe@example.com", "4242 4242 4242 4242", "Jane Doe"):
        assert secret not in text
    alert_flow_run_failed(app, flow_name="ledgerflow-deliver", run_id=None, run_name="brave-fox",
                          message="customer bob@example.org card 4000056655665556 failed")
    assert "bob@example.org" not in slack.texts()[1] and "4000056655665556" not in slack.texts()[1]
    assert "Flow run failed: ledgerflow-deliver" in slack.texts()[1]


def test_bot_token_and_channel(target, slack, tmp_path, store_url, monkeypatch):
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    monkeypatch.setenv("TEST_SLACK_BOT", BOT_TOKEN)
    section = (f"slack:\n  bot_token: {{env: TEST_SLACK_BOT}}\n  channel: \"#alerts\"\n"
               f"  api_url: {slack.url}/api/\n")
    app = load_app(http_project(tmp_path / "p", target.url, slack=section))
    _, report = _dead(app, target, 1)
    assert alert_dead_letters(app, report.dead) == 1
    (msg,) = slack.messages
    assert msg["via"] == "api" and msg["channel"] == "#finance-ops"   # the flow's alert.slack wins
    assert msg["blocks"][0]["text"]["text"] == "Dead-lettered: charges-to-ledger"
    # Slack's documented failures are logged, never raised into delivery
    monkeypatch.setenv("TEST_SLACK_BOT", "xoxb-wrong")
    app2 = load_app(http_project(tmp_path / "p2", target.url, slack=section))
    assert send_alert(app2, Alert("run-failed", "other", None, "boom")) is False
    assert slack.rejected[-1] == ("api", "invalid_auth")
    app.close()
    app2.close()


def test_throttled_slack_is_retried_by_slack_sdk(app, target, slack):
    slack.throttle_next(1)
    _, report = _dead(app, target, 1)
    assert alert_dead_letters(app, report.dead) == 1 and len(slack.messages) == 1


def test_without_slack_settings_nothing_is_sent(target, slack, tmp_path, store_url, monkeypatch):
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    app = load_app(http_project(tmp_path / "p", target.url))
    _, report = _dead(app, target, 1)
    assert alert_dead_letters(app, report.dead) == 0 and slack.messages == []


@pytest.mark.prefect
def test_delivery_flow_run_alerts_on_dead_letters(prefect_api, app, target, slack):
    from runner.deliver.worker import DeliveryLoop, LoopSettings
    ids = plan_charges(app, 2)
    target.fail(app.store.delivery(ids[0])["idempotency_key"], "400")
    DeliveryLoop(app, LoopSettings(batch_size=10), worker="w").run(until_idle=True)
    (msg,) = slack.messages
    run_id = app.store.attempts_of(ids[0])[0]["flow_run_id"]
    assert f"/runs/flow-run/{run_id}" in json.dumps(msg["blocks"])


def test_scrub_removes_people_but_keeps_ids_and_account_names_readable():
    from runner.core.redact import personal_values, scrub
    payload = {"CustomerRef": {"FullName": "Jane Doe"}, "AccountRef": {"FullName": "Stripe Clearing"},
               "customer": "cus_T0", "email": "jane@example.com", "memo": "Order 42"}
    known = personal_values(payload)
    assert known == {"Jane Doe", "jane@example.com"}
    text = ('invalid reference to Customer "Jane Doe" (jane@example.com) and Account "Stripe Clearing" for '
            'cus_T0, card 4000 0566 5566 5556, phone: "+1 415 555 0101", ch_3MqLmn2eZvKYlo2C0 at 1767225600')
    out = scrub(text, known)
    assert "Jane Doe" not in out and "jane@example.com" not in out and "4000 0566" not in out
    assert "415 555" not in out
    assert "Stripe Clearing" in out and "cus_T0" in out and "ch_3MqLmn2eZvKYlo2C0" in out and "1767225600" in out


# ---- what an alert says: the event, a fix for the kind of error, the exact command, a usable link --------

def test_a_planning_failure_alerts_with_its_file_line_col_and_the_retry_command(app, target, slack):
    from runner.ingest.dispatch import dispatch_pending
    from tests.delivery_helpers import add_broken_flow, charge
    add_broken_flow(app.project.dir)
    app.flows(reload=True)
    ev, raw = charge(0)
    app.store.add_event(ev, raw, "webhook:stripe")
    dispatch_pending(app)                                   # the broken flow's work waits in a plan row
    plan_id = app.store.delivery_by_key("plan:broken-flow:evt_000000")["id"]
    report = deliver_rows(app, app.store.claim("w", ids=[plan_id]), worker="w")
    assert [r["id"] for r in report.dead] == [plan_id]
    assert alert_dead_letters(app, report.dead) == 1
    (msg,) = slack.messages
    blocks = msg["blocks"]
    assert blocks[0]["text"]["text"] == "Planning failed: broken-flow"
    fields = [f["text"] for f in blocks[1]["fields"]]
    assert "*Where*\n`mappings/http/broken.yaml:1:8`" in fields
    assert "*Stripe*\ncharge.succeeded · ch_000000 · 10.00 USD" in fields and "*Event*\nevt_000000" in fields
    body = json.dumps(blocks)
    assert f"`ledgerflow dlq replay {plan_id}`" in body
    assert "ledgerflow inbox show evt_000000 --payload > evt_000000.json" in body
    assert "mappings/http/broken.yaml:1:8" in msg["text"] and f"ledgerflow dlq replay {plan_id}" in msg["text"]


def test_every_alert_names_the_event_type_amount_and_stripe_object(app, target, slack):
    _, report = _dead(app, target, 1)
    alert_dead_letters(app, report.dead)
    (msg,) = slack.messages
    assert "*Stripe*\ncharge.succeeded · ch_000000 · 10.00 USD" in [f["text"] for f in msg["blocks"][1]["fields"]]
    assert "charge.succeeded · ch_000000 · 10.00 USD" in msg["text"]


def test_a_rejected_field_is_named_in_the_fix(app, target, slack):
    target.require.append("memo")
    (did,), report = _dead(app, target, 1, mode=None)
    alert_dead_letters(app, report.dead)
    body = json.dumps(slack.messages[0]["blocks"])
    assert "The target rejected field `memo`: fix the mapping that fills it" in body
    assert f"`ledgerflow dlq replay {did}`" in body


@pytest.mark.parametrize("error, kind, connection, ctype, fix", [
    ("connections.qbo.client_secret: environment variable QBO_SECRET is not set", "auth", "qbo",
     "quickbooks_online", "Set the environment variable `QBO_SECRET` for `ledgerflow serve` and the workers; if the "
                          "connection was never authorized, `ledgerflow connect quickbooks-online --connection qbo`"),
    ("connection 'qbo' has no OAuth tokens: reconnect", "auth", "qbo", "quickbooks_online",
     "was never authorized (no tokens): `ledgerflow connect quickbooks-online --connection qbo`, then replay"),
    ("Sage refused the credentials on POST /contacts (HTTP 401): expired", "auth", "sage_uk", "sage",
     "re-connect with `ledgerflow connect sage --connection sage_uk`, then replay"),
    ("HTTP 401 from POST 127.0.0.1/docs", "auth", "ledger_api", "http",
     "The target refused the credentials of ledger_api: check them in ledgerflow.yaml"),
    ("QuickBooks Online rejected Invoice: Invalid Reference Id (Intuit code 2500, field CustomerRef)", "permanent",
     "qbo", "quickbooks_online", "The target rejected field `CustomerRef`"),
    ("HTTP 503 from POST 127.0.0.1/docs (gave up after 3 attempts)", "retryable", "ledger_api", "http",
     "Transient failures (timeouts, 5xx) outlasted every attempt: check that the target is up, then replay"),
])
def test_the_fix_is_specific_to_the_kind_of_error(error, kind, connection, ctype, fix):
    from runner.deliver.alerts import build_message
    alert = Alert("dead", "f", f"{connection} (post)", error, event_id="evt_1", delivery_id=7, error_kind=kind,
                  connection=connection, connector_type=ctype)
    text, blocks = build_message(alert, 1)
    body = json.dumps(blocks, ensure_ascii=False)
    assert fix in body and "`ledgerflow dlq replay 7`" in body


def test_throttled_and_transient_failures_say_ledgerflow_retries():
    from runner.deliver.alert_fix import fix_for
    stripe_down = Alert("plan-failed", "f", "(plan)", "flow f cannot plan event evt_1: Stripe unreachable "
                        "(gave up after 6 attempts)", error_kind="retryable")
    assert "outside the flow (Stripe or a look-up unreachable" in fix_for(stripe_down)
    throttled = Alert("retrying", "f", "qbo (post)", "HTTP 429", error_kind="throttled")
    assert "ledgerflow retries on its own" in fix_for(throttled)
    transient = Alert("retrying", "f", "qbo (post)", "HTTP 503", error_kind="retryable")
    assert "ledgerflow retries with the flow's backoff" in fix_for(transient)


def test_the_run_link_uses_prefect_ui_url_not_localhost(app, target, slack, monkeypatch):
    from runner.deliver.alerts import prefect_run_url
    prefect_run_url("warm-up")                              # settings loaded before the variables change
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    monkeypatch.setenv("PREFECT_UI_URL", "https://prefect.example.com/")
    run_id = "0b7e5c1e-0000-4000-8000-000000000002"
    _, report = _dead(app, target, 3)
    alert_dead_letters(app, report.dead, run_id=run_id)
    assert flush_grouped(app, now=time.time() + 601) == 1   # the grouped count links the run too
    for text in slack.texts():
        assert f"https://prefect.example.com/runs/flow-run/{run_id}" in text
        assert "127.0.0.1:4200" not in text and "localhost" not in text


def test_a_grouped_alert_names_the_command_that_replays_exactly_its_dead_letters(app, target, slack, capsys,
                                                                                 monkeypatch):
    from runner.cli import main
    from runner.deliver.alerts import row_group_key
    ids, report = _dead(app, target, 5)
    (other,), other_report = _dead(app, target, 1, mode="401", start=10)     # another error: another alert
    alert_dead_letters(app, report.dead + other_report.dead)
    assert flush_grouped(app, now=time.time() + 601) == 1
    key = row_group_key(app.store.delivery(ids[0]))[:12]
    extra = slack.messages[-1]
    command = f"ledgerflow dlq replay --all --flow charges-to-ledger --alert {key}"
    assert command in extra["text"] and command in json.dumps(extra["blocks"])
    assert "4 more dead-lettered" in extra["text"]
    assert "latest: charge.succeeded · ch_000004 · 10.04 USD (evt_000004)" in extra["text"]
    monkeypatch.setenv("LEDGERFLOW_PROJECT", str(app.project.path))
    assert main(["dlq", "list", "--alert", key]) == 0
    listed = [int(line.split()[0]) for line in capsys.readouterr().out.splitlines()[1:]]
    assert sorted(listed) == sorted(ids) and other not in listed
