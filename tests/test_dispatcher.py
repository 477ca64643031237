"""The dispatcher at speed and on its own: chunks written in one transaction each, several
dispatchers on one PostgreSQL store planning each event once, a bad event failing alone,
and the worker command running the dispatcher beside (not between) its delivery batches."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from runner.ingest import dispatch
from runner.ingest.dispatch import dispatch_pending
from tests.delivery_helpers import charge, http_project, load_app
from tests.standins.flaky_target import FlakyTarget
from tests.store_helpers import force_state
from tests.support.servers import serve_app

ROOT = Path(__file__).resolve().parent.parent
NOWHERE = "http://127.0.0.1:9"          # planning only: nothing is delivered


def put_charges(app, count: int, start: int = 0) -> list[str]:
    ids = []
    for n in range(start, start + count):
        ev, raw = charge(n)
        app.store.add_event(ev, raw, "test")
        ids.append(ev["id"])
    return ids


def key(event_id: str) -> str:
    return f"charges-to-ledger:doc:{event_id}"


def counting(app, delay: float = 0.0) -> Counter:
    """Count (and optionally slow down) the real planner's calls per event."""
    calls: Counter = Counter()
    real = app.plan_event

    def plan_event(event, flow, **kw):
        calls[event["id"]] += 1
        if delay:
            time.sleep(delay)
        return real(event, flow, **kw)
    app.plan_event = plan_event
    return calls


@pytest.mark.postgres
def test_two_dispatchers_on_postgresql_plan_each_event_exactly_once(pg_url, tmp_path, monkeypatch):
    from tests.test_worker import _clean
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", pg_url)
    _clean(pg_url)
    project = http_project(tmp_path / "p", NOWHERE)
    apps = [load_app(project), load_app(project)]
    n = 600
    ids = put_charges(apps[0], n)
    calls = [counting(app, delay=0.002) for app in apps]   # planning takes a while: the two overlap
    summaries: list = [None, None]
    start = threading.Barrier(2)

    def run(i: int) -> None:
        start.wait()
        summaries[i] = dispatch_pending(apps[i], 10_000, chunk=100)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert all(s is not None for s in summaries), "a dispatcher did not finish"
    planned = calls[0] + calls[1]
    assert sorted(planned) == sorted(ids) and set(planned.values()) == {1}      # each event planned once...
    assert summaries[0].events + summaries[1].events == n                     # ...and written once
    assert summaries[0].new_deliveries + summaries[1].new_deliveries == n
    assert apps[0].store.count_events("dispatched") == n and apps[0].store.count_deliveries() == n
    for app in apps:
        app.close()


def test_a_bad_event_fails_alone_and_the_rest_of_its_chunk_is_planned(store_url, tmp_path, monkeypatch):
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    app = load_app(http_project(tmp_path / "p", NOWHERE))
    good = put_charges(app, 3)
    bad, _ = charge(99)
    app.store.add_event(bad, "[1, 2]", "test")          # stored payload: JSON, but not an event object
    s = dispatch_pending(app, chunk=10)
    assert (s.events, s.dispatched, s.failed, s.new_deliveries) == (4, 3, 1, 3)
    for eid in good:
        assert app.store.get_event(eid)["status"] == "dispatched"
        assert app.store.delivery_by_key(key(eid))["state"] == "pending"
    row = app.store.get_event(bad["id"])
    assert row["status"] == "failed"
    assert row["error"] == (f"inbox event {bad['id']}: stored payload is not a JSON object (a Stripe event), "
                            "it is a JSON list")
    assert row["payload"] == "[1, 2]"                                   # nothing lost
    app.close()


def test_an_unexpected_error_planning_one_event_fails_that_event_only(store_url, tmp_path, monkeypatch):
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    app = load_app(http_project(tmp_path / "p", NOWHERE))
    ids = put_charges(app, 3)
    real = dispatch.delivery_row

    def delivery_row(op, now):                          # an operation whose row cannot be built
        if op.event_id == ids[1]:
            raise TypeError("Object of type set is not JSON serializable")
        return real(op, now)
    monkeypatch.setattr(dispatch, "delivery_row", delivery_row)
    s = dispatch_pending(app)
    assert (s.dispatched, s.failed) == (2, 1)
    row = app.store.get_event(ids[1])
    assert row["status"] == "failed"
    assert row["error"] == (f"inbox event {ids[1]}: could not be planned: TypeError: Object of type set is not "
                            "JSON serializable")
    assert app.store.delivery_by_key(key(ids[1])) is None
    assert [app.store.get_event(i)["status"] for i in (ids[0], ids[2])] == ["dispatched", "dispatched"]
    app.close()


def test_chunks_commit_one_by_one_so_a_crash_redoes_at_most_one(store_url, tmp_path, monkeypatch):
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    app = load_app(http_project(tmp_path / "p", NOWHERE))
    ids = put_charges(app, 7)
    real, seen = dispatch.mark_events, []

    def mark_events(conn, marks):
        seen.append(len(marks))
        if len(seen) == 3:
            raise ConnectionError("the database went away")
        return real(conn, marks)
    monkeypatch.setattr(dispatch, "mark_events", mark_events)
    with pytest.raises(ConnectionError):
        dispatch_pending(app, chunk=3)
    statuses = [app.store.get_event(i)["status"] for i in ids]
    assert statuses == ["dispatched"] * 6 + ["pending"]            # two chunks kept, the third rolled back
    assert app.store.count_deliveries() == 6 and app.store.delivery_by_key(key(ids[6])) is None
    monkeypatch.setattr(dispatch, "mark_events", real)
    s = dispatch_pending(app, chunk=3)
    assert (s.events, s.new_deliveries) == (1, 1)
    app.close()


def test_retrying_failed_events_in_chunks_takes_each_once(store_url, tmp_path, monkeypatch):
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    app = load_app(http_project(tmp_path / "p", NOWHERE))
    for n in range(5):
        ev, _ = charge(n)
        app.store.add_event(ev, "[]", "test")
    assert dispatch_pending(app, chunk=2).failed == 5
    again = dispatch_pending(app, 100, statuses=("pending", "failed"), chunk=2)   # they fail again
    assert (again.events, again.failed) == (5, 5)
    app.close()


def test_a_re_dispatched_event_writes_no_second_row(store_url, tmp_path, monkeypatch):
    """The delivery idempotency key still decides: a known key keeps its row and state."""
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    app = load_app(http_project(tmp_path / "p", NOWHERE))
    [eid] = put_charges(app, 1)
    dispatch_pending(app)
    force_state(app.store, app.store.delivery_by_key(key(eid)).id, "sent")
    app.store.mark_event(eid, "pending")
    s = dispatch_pending(app)
    assert (s.events, s.operations, s.new_deliveries) == (1, 1, 0)
    assert app.store.count_deliveries() == 1 and app.store.delivery_by_key(key(eid))["state"] == "sent"
    app.close()


@pytest.mark.prefect
def test_the_scheduled_run_reports_how_many_events_it_dispatched(prefect_api, target, store_url, tmp_path,
                                                                  monkeypatch):
    from runner.operate.scheduled import run_scheduled
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    app = load_app(http_project(tmp_path / "p", target.url))
    put_charges(app, 3)
    out = run_scheduled(app, app.flow("charges-to-ledger"), {})
    assert (out["dispatched"], out["delivered"]) == (3, 3)
    app.close()


def _wait_for(cond, timeout: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"the worker exited early ({proc.returncode}):\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


@pytest.mark.prefect
def test_the_worker_plans_new_events_while_every_delivery_lane_is_blocked(prefect_api, store_url, tmp_path,
                                                                          monkeypatch):
    from prefect.settings import get_current_settings
    target = FlakyTarget(hang=240.0)                 # a target that takes four minutes to answer
    with serve_app(target.app) as srv:
        monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
        project = http_project(tmp_path / "p", srv.url)
        project.write_text(project.read_text().replace("timeout: 0.5", "timeout: 600"))
        app = load_app(project)
        env = {**os.environ, "LEDGERFLOW_PROJECT": str(project), "LEDGERFLOW_STORE_URL": store_url,
               "PREFECT_API_URL": str(get_current_settings().api.url), "PREFECT_LOGGING_LEVEL": "WARNING"}
        worker = subprocess.Popen([sys.executable, "-m", "runner.cli", "worker", "--poll", "0.1",
                                   "--batch-size", "1"], cwd=str(ROOT), env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        try:
            first = [charge(n)[0]["id"] for n in range(2)]
            for eid in first:
                target.fail(key(eid), "slow")
            put_charges(app, 2)
            # both lanes hold a batch the target sits on
            _wait_for(lambda: all(key(e) in target.docs for e in first), 180, "both lanes to be blocked", worker)
            [late] = put_charges(app, 1, start=2)
            _wait_for(lambda: app.store.get_event(late)["status"] != "pending", 150,
                      "the event that arrived meanwhile to be planned", worker)
            assert app.store.get_event(late)["status"] == "dispatched"
            assert app.store.delivery_by_key(key(late)) is not None
            assert all(key(e) not in {k for k, _ in target.requests} for e in first)   # still no answer
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait(30)
            app.close()
