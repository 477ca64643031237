"""Delivery through the http connector against a target that fails on demand:
every retry / throttle / dead-letter path, state in the store (SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from decimal import Decimal

import httpx
import pytest

from connectors.base import ErrorKind, Item, Outcome, TargetError
from connectors.http import retry_after_seconds
from connectors.http_post.connector import classify
from runner.deliver.delivery import deliver_rows
from runner.language.spec import RetryPolicy
from runner.outcomes import decide
from tests.delivery_helpers import PII_MAPPING, http_project, load_app, plan_charges

WORKER = "test-worker"


@pytest.fixture
def app(target, tmp_path, store_url, monkeypatch):
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    a = load_app(http_project(tmp_path / "p", target.url))
    yield a
    a.close()


def run_once(app, ids, now=None):
    rows = app.store.claim(WORKER, ids=ids, now=now)
    return deliver_rows(app, rows, worker=WORKER)


def key_of(app, did):
    return app.store.delivery(did)["idempotency_key"]


# ---- classification (plain functions) ---------------------------------------------------

def _resp(status, headers=None, body=b"{}"):
    return httpx.Response(status, headers=headers, content=body,
                          request=httpx.Request("POST", "http://target.test/docs"))


@pytest.mark.parametrize("status,kind", [(500, ErrorKind.RETRYABLE), (503, ErrorKind.RETRYABLE),
                                         (408, ErrorKind.RETRYABLE), (429, ErrorKind.THROTTLED),
                                         (400, ErrorKind.PERMANENT), (404, ErrorKind.PERMANENT),
                                         (422, ErrorKind.PERMANENT), (401, ErrorKind.AUTH)])
def test_classify_status(status, kind):
    err = classify(_resp(status, body=b'{"error": "x"}'))
    assert err.kind == kind
    assert f"HTTP {status} from POST target.test/docs" in str(err)


def test_classify_success_and_retry_after_forms():
    assert classify(_resp(201)) is None
    assert classify(_resp(429, {"Retry-After": "17"})).retry_after == 17
    now = time.time()
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now + 120))
    assert 110 <= retry_after_seconds(date, now) <= 121
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_decide_backoff_is_exponential_capped_and_jittered():
    policy = RetryPolicy(attempts=10, first_delay=5, max_delay=60)
    row = {"id": 1, "attempts": 0, "max_attempts": 10, "retry_policy": policy.as_json()}
    fail = Outcome.failed(Item(1, "k", "post", {}), TargetError("HTTP 500"))
    delays = []
    for attempts in range(6):
        d = decide({**row, "attempts": attempts}, fail, now=0.0, rand=lambda: 1.0)
        delays.append(d["next_attempt_at"])
    assert delays == [5, 10, 20, 40, 60, 60]
    low = decide({**row, "attempts": 2}, fail, now=0.0, rand=lambda: 0.0)["next_attempt_at"]
    assert low == 10                      # jitter: between half and all of the backoff
    slow = Outcome.failed(Item(1, "k", "post", {}), TargetError("HTTP 503", retry_after=300))
    assert decide(row, slow, now=0.0, rand=lambda: 1.0)["next_attempt_at"] == 300   # Retry-After wins


# ---- through the store, over HTTP ---------------------------------------------------------

def test_success_records_target_ref_and_sends_idempotency_key(app, target):
    (did,) = plan_charges(app, 1)
    report = run_once(app, [did])
    assert [r["id"] for r in report.sent] == [did]
    row = app.store.delivery(did)
    assert row["state"] == "sent" and row["target_ref"] == "doc_1"
    assert target.docs[row["idempotency_key"]]["body"] == {"charge": "ch_000000", "amount": 10.0, "currency": "USD"}
    assert isinstance(app.store.delivery(did)["payload"]["amount"], Decimal)


def test_5xx_retries_with_backoff_then_dead_letters(app, target):
    (did,) = plan_charges(app, 1)
    key = key_of(app, did)
    target.fail(key, "500", "503", "500")
    t0 = time.time()
    run_once(app, [did])
    row = app.store.delivery(did)
    assert row["state"] == "retrying" and row["attempts"] == 1 and row["error_kind"] == "retryable"
    assert t0 + 5 <= row["next_attempt_at"] <= time.time() + 10          # first_delay 10s, jittered
    assert app.store.claim(WORKER, ids=[did]) == []                       # not due yet
    run_once(app, [did], now=row["next_attempt_at"] + 0.1)
    row2 = app.store.delivery(did)
    assert row2["state"] == "retrying" and row2["attempts"] == 2
    assert row2["next_attempt_at"] - time.time() >= 9                     # second delay: 20s jittered
    run_once(app, [did], now=row2["next_attempt_at"] + 0.1)
    dead = app.store.delivery(did)
    assert dead["state"] == "dead" and dead["attempts"] == 3
    assert "gave up after 3 attempts" in dead["last_error"] and "HTTP 500" in dead["last_error"]
    assert [a["outcome"] for a in app.store.attempts_of(did)] == ["retry", "retry", "dead"]
    assert target.created == 0


def test_timeout_and_connection_error_are_retryable(app, target, tmp_path):
    (did,) = plan_charges(app, 1)
    target.fail(key_of(app, did), "timeout")
    run_once(app, [did])
    row = app.store.delivery(did)
    assert row["state"] == "retrying" and "timeout" in row["last_error"]
    run_once(app, [did], now=row["next_attempt_at"] + 1)
    assert app.store.delivery(did)["state"] == "sent"
    # nothing listening: a connection error, retryable
    app.project.connections["ledger_api"]["url"] = "http://127.0.0.1:9/docs"
    app.close()
    (did2,) = plan_charges(app, 1, start=1)
    run_once(app, [did2])
    row = app.store.delivery(did2)
    assert row["state"] == "retrying" and "connection error" in row["last_error"]


def test_lost_response_is_retried_and_target_dedupes_by_key(app, target):
    (did,) = plan_charges(app, 1)
    key = key_of(app, did)
    target.fail(key, "timeout-after-create")   # created, but we never hear back
    run_once(app, [did])
    assert app.store.delivery(did)["state"] == "retrying" and target.created == 1
    run_once(app, [did], now=time.time() + 60)
    assert app.store.delivery(did)["state"] == "sent"
    assert target.posts_by_key[key] == 2 and target.created == 1


@pytest.mark.parametrize("mode", ["429:45", "429-date:45"])
def test_429_honours_retry_after_and_does_not_count_as_attempt(app, target, mode):
    (did,) = plan_charges(app, 1)
    target.fail(key_of(app, did), mode)
    t0 = time.time()
    run_once(app, [did])
    row = app.store.delivery(did)
    assert row["state"] == "retrying" and row["error_kind"] == "throttled" and row["attempts"] == 0
    assert t0 + 40 <= row["next_attempt_at"] <= time.time() + 46
    assert app.store.attempts_of(did)[0]["outcome"] == "throttled"
    assert app.store.claim(WORKER, ids=[did], now=t0 + 30) == []


@pytest.mark.parametrize("mode,kind", [("400", "permanent"), ("401", "auth")])
def test_rejected_data_and_auth_go_to_dead_letter_at_once(app, target, mode, kind):
    (did,) = plan_charges(app, 1)
    target.fail(key_of(app, did), mode)
    report = run_once(app, [did])
    row = app.store.delivery(did)
    assert row["state"] == "dead" and row["error_kind"] == kind and row["attempts"] == 1
    assert [r["id"] for r in report.dead] == [did]
    assert f"HTTP {mode}" in row["last_error"]


def test_personal_data_in_target_errors_never_reaches_the_store_or_logs(target, tmp_path, store_url, monkeypatch,
                                                                          caplog):
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    app = load_app(http_project(tmp_path / "pii", target.url, mapping=PII_MAPPING))
    (did,) = plan_charges(app, 1)
    target.fail(key_of(app, did), "422-pii")
    with caplog.at_level("WARNING", logger="ledgerflow.delivery"):
        run_once(app, [did])
    row = app.store.delivery(did)
    assert row["state"] == "dead" and "HTTP 422" in row["last_error"]
    for text in (row["last_error"], app.store.attempts_of(did)[0]["error"], caplog.text):
        assert "jane.doe@example.com" not in text and "4242 4242 4242 4242" not in text
        assert "Jane Doe" not in text
    assert "customer [redacted] ([redacted])" in row["last_error"]


def test_missing_secret_dead_letters_as_auth(target, tmp_path, store_url, monkeypatch):
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    monkeypatch.delenv("LEDGER_API_TOKEN", raising=False)
    pf = http_project(tmp_path / "p2", target.url)
    pf.write_text(pf.read_text().replace("    concurrency: 4\n",
                                         "    concurrency: 4\n    bearer_token: {env: LEDGER_API_TOKEN}\n"))
    app = load_app(pf)
    (did,) = plan_charges(app, 1)
    run_once(app, [did])
    row = app.store.delivery(did)
    assert row["state"] == "dead" and row["error_kind"] == "auth"
    assert "LEDGER_API_TOKEN is not set" in row["last_error"]


def test_retry_time_survives_a_restart(target, tmp_path, store_url, monkeypatch):
    """next_attempt_at is in the store: a new process (new engine) honours it."""
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    pf = http_project(tmp_path / "p3", target.url)
    app = load_app(pf)
    (did,) = plan_charges(app, 1)
    target.fail(key_of(app, did), "500")
    run_once(app, [did])
    due = app.store.delivery(did)["next_attempt_at"]
    from runner.store.db import Store
    fresh = Store(store_url)              # a separate engine, as after a restart
    try:
        assert fresh.claim("restarted", ids=[did]) == []
        rows = fresh.claim("restarted", ids=[did], now=due + 0.01)
        assert [r["id"] for r in rows] == [did] and rows[0]["attempts"] == 1
        fresh.finish([{"id": did, "state": "sent"}], worker="restarted")
    finally:
        fresh.close()
    assert app.store.delivery(did)["state"] == "sent"


def test_late_finish_from_a_worker_whose_lease_was_taken_over_is_ignored(app, target):
    (did,) = plan_charges(app, 1)
    now = time.time()
    assert app.store.claim("slow", ids=[did], lease=1, now=now)
    assert app.store.claim("fast", ids=[did], now=now + 2)          # lease expired: taken over
    app.store.finish([{"id": did, "state": "sent", "target_ref": "doc_fast"}], worker="fast")
    app.store.finish([{"id": did, "state": "retrying", "error": "HTTP 500", "next_attempt_at": now + 10}],
                     worker="slow")
    row = app.store.delivery(did)
    assert row["state"] == "sent" and row["target_ref"] == "doc_fast"


def test_late_success_after_a_takeover_is_recorded_and_wins_over_the_takers_failure(app, target):
    """Worker A's lease lapsed and B took the row over; A's target answer (booked) still arrives:
    it is recorded and wins; B's later rejection neither dead-letters the row nor alerts."""
    (did,) = plan_charges(app, 1)
    t = time.time()
    (a_row,) = app.store.claim("A", ids=[did], lease=1, now=t)
    (b_row,) = app.store.claim("B", ids=[did], now=t + 2)              # taken over
    assert app.store.delivery(did)["attempts"] == 0                    # the takeover counts nothing
    assert b_row["attempts"] == 1                                      # ...but B's connector looks first
    a = deliver_rows(app, [a_row], worker="A")                         # A's answer, late
    assert [r["id"] for r in a.sent] == [did]
    row = app.store.delivery(did)
    assert row["state"] == "sent" and row["target_ref"] == "doc_1" and row["claimed_by"] is None
    target.fail(key_of(app, did), "400")                               # B's attempt is rejected
    b = deliver_rows(app, [b_row], worker="B")
    assert b.dead == [] and [r["id"] for r in b.superseded] == [did]
    row = app.store.delivery(did)
    assert row["state"] == "sent" and row["target_ref"] == "doc_1"
    assert row["attempts"] == 2                                        # both really attempted
    assert [x["outcome"] for x in app.store.attempts_of(did)] == ["lost", "sent", "dead"]
    assert app.store.count_deliveries("dead") == 0
