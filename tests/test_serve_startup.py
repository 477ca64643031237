"""`ledgerflow serve` answers webhooks before its background services have started, and
/healthz tells each service's state; a service that fails is reported (log, healthz, Slack).
The receiver needs only the project file: the flows load after the port is open, and a broken
one is reported the same way while webhooks keep coming into the inbox."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import httpx
import pytest

from runner.app import App
from runner.language.spec import load_project
from tests.helpers_project import write
from tests.standins.slack import WEBHOOK_PATH, SlackStandIn
from tests.support.servers import free_port, serve_app
from tests.webhook_helpers import set_secrets, signed, stripe_project

GATE = threading.Event()          # the blocking service's start() waits for it
BLOCKING = "tests.test_serve_startup:_blocking_service"
FAILING = "tests.test_serve_startup:_failing_service"
DYING = "tests.test_serve_startup:_dying_service"


class _Blocking:
    def start(self):
        assert GATE.wait(180), "the test never opened the gate"

    def stop(self):
        GATE.set()


class _Failing:
    def start(self):
        raise RuntimeError("cannot reach the ledger at db.internal")

    def stop(self):
        pass


class _Dying:
    """Starts, then its thread dies (an uncaught error inside the service's loop)."""

    def start(self):
        self._thread = threading.Thread(target=lambda: time.sleep(0.2), name="dying-service", daemon=True)
        self._thread.start()

    def stop(self):
        pass


def _blocking_service(app):
    return _Blocking()


def _failing_service(app):
    return _Failing()


def _dying_service(app):
    return _Dying()


def _event() -> dict:
    return {"id": f"evt_{uuid.uuid4().hex[:20]}", "object": "event", "type": "charge.succeeded",
            "created": int(time.time()), "livemode": False, "api_version": "2024-06-20",
            "data": {"object": {"id": f"ch_{uuid.uuid4().hex[:20]}", "object": "charge", "amount": 1200,
                                "currency": "usd"}}}


def _wait_for(check, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def serve(tmp_path, monkeypatch):
    """Run the real serve listeners (build_servers + serve_all) with BACKGROUND as given."""
    from runner.operate import serve_hooks
    from runner.operate.server.listeners import build_servers, serve_all
    set_secrets(monkeypatch)
    started = []

    def run(background: list[str], extra: str = ""):
        monkeypatch.setattr(serve_hooks, "BACKGROUND", background)
        monkeypatch.setattr(serve_hooks, "ASGI_MOUNTS", [])
        store = f"sqlite:///{tmp_path / 'store.db'}"
        app = App(load_project(stripe_project(tmp_path / "proj", store, extra=extra)))
        port = free_port()
        servers = build_servers(app, "127.0.0.1", port, log_level="warning", qbwc=None)
        loop = asyncio.new_event_loop()
        th = threading.Thread(target=lambda: loop.run_until_complete(serve_all(servers)), daemon=True)
        th.start()
        started.append((servers, th))
        url = f"http://127.0.0.1:{port}"
        _wait_for(lambda: servers[0].started or not th.is_alive(), "the listener")
        assert th.is_alive(), "serve stopped at start-up"
        return url, app

    yield run
    GATE.set()
    for servers, th in started:
        for s in servers:
            s.should_exit = True
        th.join(120)


def _health(url: str) -> dict:
    return httpx.get(url + "/healthz", timeout=30).json()


def test_webhooks_are_answered_while_a_service_is_still_starting(serve):
    GATE.clear()
    url, app = serve([BLOCKING])
    ev = _event()
    r = httpx.post(url + "/webhooks/stripe", content=(s := signed(ev))[0], headers=s[1], timeout=30)
    assert r.status_code == 200 and app.store.get_event(ev["id"]) is not None
    health = _health(url)
    assert health["status"] == "ok" and health["services"][BLOCKING]["state"] == "starting"
    GATE.set()
    _wait_for(lambda: _health(url)["services"][BLOCKING]["state"] == "running", "the service to run")


def test_a_service_that_cannot_start_is_failed_in_healthz_logged_and_alerted(serve, monkeypatch, caplog):
    slack = SlackStandIn()
    with serve_app(slack.app) as srv:
        monkeypatch.setenv("TEST_SLACK_WEBHOOK", srv.url + WEBHOOK_PATH)
        url, _ = serve([FAILING, "runner.ingest.dispatch:background"],
                       extra="slack:\n  webhook_url: {env: TEST_SLACK_WEBHOOK}\n")
        health = _wait_for(lambda: (h := _health(url))["services"][FAILING]["state"] == "failed" and h,
                           "the failed state")
        assert health["status"] == "degraded"
        assert health["services"][FAILING]["reason"] == "RuntimeError: cannot reach the ledger at db.internal"
        _wait_for(lambda: _health(url)["services"]["runner.ingest.dispatch:background"]["state"] == "running",
                  "the next service to start anyway")
        _wait_for(lambda: slack.messages, "the Slack alert")
        ev = _event()
        assert httpx.post(url + "/webhooks/stripe", content=(s := signed(ev))[0], headers=s[1],
                          timeout=30).status_code == 200
    (text,) = slack.texts()
    assert f"Service failed: {FAILING}" in text and "cannot reach the ledger at db.internal" in text
    assert f"background service {FAILING} did not start: RuntimeError: cannot reach the ledger" in caplog.text


def test_a_service_whose_thread_dies_is_reported_not_masked(serve, monkeypatch, caplog):
    slack = SlackStandIn()
    with serve_app(slack.app) as srv:
        monkeypatch.setenv("TEST_SLACK_WEBHOOK", srv.url + WEBHOOK_PATH)
        url, _ = serve([DYING], extra="slack:\n  webhook_url: {env: TEST_SLACK_WEBHOOK}\n")
        health = _wait_for(lambda: (h := _health(url))["services"][DYING]["state"] == "failed" and h,
                           "the failed state")
        assert health["services"][DYING]["reason"] == "its thread 'dying-service' stopped"
        _wait_for(lambda: slack.messages, "the Slack alert")
    assert f"background service {DYING} failed: its thread 'dying-service' stopped" in caplog.text
    assert f"Service failed: {DYING}" in slack.texts()[0]


def test_prefect_flows_are_not_started_without_the_prefect_api(tmp_path, monkeypatch):
    """When the project's Prefect server cannot be had, the services that run flows fail with that
    reason instead of running flows with no API (Prefect's temporary server)."""
    from runner.operate import prefect_server
    from runner.operate.server.supervisor import PREFECT, Supervisor
    monkeypatch.setattr(prefect_server, "background", lambda app: _Failing())
    sup = Supervisor(object(), [PREFECT, "runner.deliver.worker:background"])
    monkeypatch.setattr("runner.deliver.alerts.alert_service_failed", lambda *a: True)
    sup.start()
    try:
        _wait_for(lambda: sup.health()["runner.deliver.worker:background"]["state"] == "failed", "the worker's state")
    finally:
        sup.stop()
    reason = sup.health()["runner.deliver.worker:background"]["reason"]
    assert reason == "not started: it needs the Prefect API (RuntimeError: cannot reach the ledger at db.internal)"


def test_a_schedule_runner_that_cannot_start_says_so_instead_of_schedules_served(monkeypatch, caplog):
    from runner.operate import deployments

    def broken(app):
        raise ValueError("flows/nightly.yaml: trigger.schedule: bad cron")
    monkeypatch.setattr(deployments, "scheduled_flows", lambda app: ["nightly"])
    monkeypatch.setattr(deployments, "runner_deployments", broken)
    with pytest.raises(RuntimeError, match=r"^the schedule runner did not start: ValueError: flows/nightly.yaml: "
                                           r"trigger.schedule: bad cron$"):
        deployments.ScheduleRunner(object()).start()
    assert "schedules served" not in caplog.text


class _LeakyFailure:
    def start(self):
        raise ConnectionError("could not connect to postgresql://ledger:s3cret@db.internal/books for jane@example.com")

    def stop(self):
        pass


def test_a_failure_reason_carries_no_credentials_or_personal_data(monkeypatch):
    from runner.operate import serve_hooks
    from runner.operate.server.supervisor import Supervisor
    sent = []
    monkeypatch.setattr("runner.deliver.alerts.alert_service_failed", lambda app, ref, reason: sent.append(reason))
    monkeypatch.setattr(serve_hooks, "load", lambda ref: lambda app: _LeakyFailure())
    sup = Supervisor(object(), ["leaky"])
    sup.start()
    try:
        _wait_for(lambda: sup.health()["leaky"]["state"] == "failed", "the failed state")
    finally:
        sup.stop()
    reason = sup.health()["leaky"]["reason"]
    assert reason == ("ConnectionError: could not connect to postgresql://[redacted]@db.internal/books for "
                      "[redacted email]")
    assert sent == [reason]


# ---- the receiver first: flows, planner and Prefect after the port is open ----------------------------------

CHARGES_FLOW = """\
name: charges
trigger: {stripe: ["charge.succeeded"]}
filter: "{{ %s.amount > 0 }}"
routes:
  - name: row
    target: csv
    action: row
    mapping: mappings/row.yaml
"""
ROW = 'id: "{{ charge.id }}"\namount: "{{ charge.amount | money(charge.currency) }}"\n'
# what the receiver does not use: none of it may be imported before the port is open
NOT_BEFORE_LISTENING = ("prefect", "jinja2", "runner.language.planner", "runner.language.mapping", "runner.language.templating",
                        "runner.ingest.dispatch", "alembic", "httpx", "stripe", "jsonschema", "websockets", "slack_sdk")
AT_LISTEN = """\
import asyncio, json, sys
import runner.operate.server.listeners as listeners

async def record(servers):          # instead of starting the background services once listening
    while not all(s.started for s in servers):
        await asyncio.sleep(0.01)
    print("AT-LISTEN", json.dumps(sorted(m for m in sys.modules if m.startswith(%r))))
    for s in servers:
        s.should_exit = True

listeners.start_when_listening = record
from runner.cli import main
sys.exit(main(["serve", "--port", sys.argv[1], "--log-level", "warning"]))
"""


def test_serve_listens_before_importing_the_flows_planner_or_prefect(tmp_path):
    """`ledgerflow serve` (with its background services) on a new store: at the moment its port is open,
    neither the flows' template engine and planner nor Prefect, Alembic or an HTTP client is loaded."""
    import json
    import os
    import subprocess
    import sys

    from tests.webhook_helpers import SECRETS
    root = tmp_path / "proj"
    stripe_project(root, f"sqlite:///{tmp_path / 'new-store.db'}")
    write(root, "flows/charges.yaml", CHARGES_FLOW % "charge")
    write(root, "mappings/row.yaml", ROW)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LEDGERFLOW_"))}
    env.update(SECRETS, LEDGERFLOW_PROJECT=str(root / "ledgerflow.yaml"))
    res = subprocess.run([sys.executable, "-c", AT_LISTEN % (NOT_BEFORE_LISTENING,), str(free_port())], cwd=root,
                         env=env, capture_output=True, text=True, timeout=300)
    lines = [x for x in res.stdout.splitlines() if x.startswith("AT-LISTEN ")]
    assert res.returncode == 0 and lines, res.stdout + res.stderr
    assert json.loads(lines[0][len("AT-LISTEN "):]) == []
    assert (tmp_path / "new-store.db").exists()           # the store was opened (and stamped) before listening


def test_a_broken_flow_at_start_keeps_webhooks_coming_in_and_is_loud(serve, tmp_path, monkeypatch, caplog):
    """A flow that does not load at start: webhooks are still received into the inbox; the problem is
    logged at file:line:col, /healthz is degraded and Slack told; the dispatcher waits (the event stays
    pending, not failed), and starts once the fixed file is saved (hot reload), planning the event."""
    root = tmp_path / "proj"
    write(root, "flows/charges.yaml", CHARGES_FLOW % "chrge")
    write(root, "mappings/row.yaml", ROW)
    slack = SlackStandIn()
    dispatcher = "runner.ingest.dispatch:background"
    with serve_app(slack.app) as srv:
        monkeypatch.setenv("TEST_SLACK_WEBHOOK", srv.url + WEBHOOK_PATH)
        url, app = serve(["runner.operate.reload:background", dispatcher],
                         extra="slack:\n  webhook_url: {env: TEST_SLACK_WEBHOOK}\n")
        ev = _event()
        r = httpx.post(url + "/webhooks/stripe", content=(s := signed(ev))[0], headers=s[1], timeout=30)
        assert r.status_code == 200
        health = _wait_for(lambda: (h := _health(url))["flows"]["state"] == "failed" and h, "the flows' state")
        assert health["status"] == "degraded"
        assert "charges.yaml:3:" in health["flows"]["reason"] and "undefined name 'chrge'" in health["flows"]["reason"]
        assert health["services"][dispatcher]["state"] == "waiting"
        assert health["services"]["runner.operate.reload:background"]["state"] == "running"
        _wait_for(lambda: slack.messages, "the Slack alert")
        assert app.store.get_event(ev["id"])["status"] == "pending"
        write(root, "flows/charges.yaml", CHARGES_FLOW % "charge")          # the fix, taken without a restart
        _wait_for(lambda: app.store.get_event(ev["id"])["status"] == "dispatched", "the event to be planned", 180)
        health = _health(url)
        assert health["status"] == "ok" and health["flows"]["state"] == "loaded"
        assert health["services"][dispatcher]["state"] == "running"
    text = slack.texts()[0]
    assert "Flows do not load: 1 problem(s)" in text and "undefined name 'chrge'" in text
    assert "the flows have 1 problem(s); webhooks are still received into the inbox" in caplog.text
    assert "charges.yaml:3:" in caplog.text


def test_a_broken_project_file_still_stops_serve_at_once(tmp_path):
    """What the receiver itself needs (ledgerflow.yaml, the endpoints' secrets) still stops `serve` with
    the file's problem: nothing could be received without it."""
    import os
    import subprocess
    import sys

    root = tmp_path / "proj"
    stripe_project(root, f"sqlite:///{tmp_path / 'store.db'}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LEDGERFLOW_", "LF_TEST_WHSEC"))}
    env["LEDGERFLOW_PROJECT"] = str(root / "ledgerflow.yaml")
    res = subprocess.run([sys.executable, "-m", "runner.cli", "serve", "--port", str(free_port())], cwd=root, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and res.stderr.startswith("error: ") and "LF_TEST_WHSEC_NEW" in res.stderr, res.stderr
    (root / "ledgerflow.yaml").write_text((root / "ledgerflow.yaml").read_text() + "recieve: true\n")
    res = subprocess.run([sys.executable, "-m", "runner.cli", "serve", "--port", str(free_port())], cwd=root, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and "ledgerflow.yaml:" in res.stderr and "recieve" in res.stderr, res.stderr
