"""Hot reload: a running serve (and worker) takes changed mappings, flows and ledgerflow.yaml
without a restart; an edit that does not validate is refused, logged and alerted, and the
previous version keeps working until the next good save."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from runner.app import App
from runner.core import jsonio
from runner.language.spec import load_project
from runner.operate import serve_hooks
from runner.operate.server import build_asgi
from runner.store.tables import deliveries
from tests.conftest import ROOT
from tests.helpers_project import charge_event, write
from tests.standins.slack import WEBHOOK_PATH, running_slack
from tests.support.servers import serve_app
from tests.webhook_helpers import CONNECT, NEW, set_secrets, signed, stripe_project

FLOW = """\
name: orders
trigger: {stripe: [charge.succeeded]}
routes:
  - {name: line, target: csv, action: row, mapping: mappings/order.yaml}
"""
# passes validate; fails to plan every charge without metadata.order_id
BAD = 'order: "{{ charge.metadata.order_id }}"\ncharge: "{{ charge.id }}"\n'
FIXED = 'order: "none"\ncharge: "{{ charge.id }}"\ncurrency: "{{ settings.home_currency }}"\n'
BROKEN = 'order: "{{ charge.id "\ncharge: "{{ charge.id }}"\n'              # a template syntax error
FIXED_AGAIN = 'order: "second fix"\ncharge: "{{ charge.id }}"\ncurrency: "{{ settings.home_currency }}"\n'
SLACK = "slack:\n  webhook_url: {env: TEST_SLACK_WEBHOOK}\n"
WAIT = 180.0          # generous: a loaded machine


def wait_for(cond, what: str, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def terminate(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def save(path: Path, text: str) -> None:
    """Write a file as an editor would; its fingerprint (mtime, size) changes even within one tick."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    if path.stat().st_mtime_ns == before:
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


@pytest.fixture
def slack():
    with running_slack() as s:
        yield s


@pytest.fixture
def project(tmp_path, slack, monkeypatch):
    set_secrets(monkeypatch)
    monkeypatch.setenv("TEST_SLACK_WEBHOOK", slack.url + WEBHOOK_PATH)
    root = tmp_path / "proj"
    path = stripe_project(root, f"sqlite:///{tmp_path / 'store.db'}", extra=SLACK)
    write(root, "flows/orders.yaml", FLOW)
    write(root, "mappings/order.yaml", BAD)
    monkeypatch.chdir(root)
    return path


@pytest.fixture
def serve(project, monkeypatch):
    """serve's ASGI app over real HTTP with its background services: the watcher and the dispatcher
    (the delivery loop and Prefect are left out: this is about planning)."""
    monkeypatch.setattr(serve_hooks, "BACKGROUND", ["runner.operate.reload:background", "runner.ingest.dispatch:background"])
    app = App(load_project(project))
    app.flows()
    with serve_app(build_asgi(app, mounts=False)) as server:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            yield app, client
    app.close()


def saved_and_reloaded(path: Path, text: str, caplog, line: str) -> None:
    """Save ``path`` and wait for the running process to log ``line`` (its reload)."""
    seen = caplog.text.count(line)
    save(path, text)
    wait_for(lambda: caplog.text.count(line) > seen, f"{line!r} in the log")


def post(client, n: int, secret: str = NEW, path: str = "/webhooks/stripe") -> tuple[int, str]:
    ev = charge_event(event_id=f"evt_reload_{n}", amount=1000 + n)
    ev["data"]["object"]["id"] = f"ch_reload_{n}"
    body, headers = signed(ev, secret)
    return client.post(path, content=body, headers=headers).status_code, ev["id"]


def post_and_plan(app, client, n: int) -> str:
    """POST a signed charge event; its id once the dispatcher has planned it."""
    status, eid = post(client, n)
    assert status == 200
    wait_for(lambda: planned(app, eid), f"event {n} to be planned")
    return eid


def planned(app, event_id: str) -> dict | None:
    """The event's row once the dispatcher is done with it (dispatched or failed)."""
    row = app.store.get_event(event_id)
    return row if row and row["status"] in ("dispatched", "failed") else None


def payload(app, event_id: str) -> dict:
    [row] = [r for r in app.store.deliveries_where(deliveries.c.event_id == event_id) if r["connection"] == "csv"]
    return row["payload"]


def test_serve_registers_the_watcher():
    assert "runner.operate.reload:background" in serve_hooks.BACKGROUND


def test_a_fixed_mapping_is_taken_without_restart_and_a_broken_edit_is_refused(serve, project, slack, caplog):
    caplog.set_level(logging.INFO)
    app, client = serve
    mapping = project.parent / "mappings" / "order.yaml"

    status, first = post(client, 1)
    assert status == 200
    row = wait_for(lambda: planned(app, first), "the first event to be planned")
    assert row["status"] == "failed" and "mappings/order.yaml:1:8" in row["error"]

    saved_and_reloaded(mapping, FIXED, caplog, "configuration reloaded (mappings/order.yaml)")
    second = post_and_plan(app, client, 2)
    assert app.store.get_event(second)["status"] == "dispatched"
    assert payload(app, second) == {"order": "none", "charge": "ch_reload_2", "currency": "USD"}

    # a broken edit: refused, logged with file:line:col, alerted; the fixed version keeps planning
    save(mapping, BROKEN)
    refused = wait_for(lambda: [t for t in slack.texts() if "Configuration change refused" in t], "the alert")
    assert "mappings/order.yaml:1:8: order: template syntax error" in refused[0]
    assert "keeps running the previous version" in refused[0] and "ledgerflow validate" in refused[0]
    assert "mappings/order.yaml:1:8: order: template syntax error" in caplog.text
    assert "configuration change refused (mappings/order.yaml)" in caplog.text
    third = post_and_plan(app, client, 3)
    assert payload(app, third) == {"order": "none", "charge": "ch_reload_3", "currency": "USD"}
    assert len([t for t in slack.texts() if "Configuration change refused" in t]) == 1   # once, not every second

    # it kept watching: the next good save is taken
    saved_and_reloaded(mapping, FIXED_AGAIN, caplog, "configuration reloaded (mappings/order.yaml)")
    fourth = post_and_plan(app, client, 4)
    assert payload(app, fourth)["order"] == "second fix"


def test_a_project_file_change_is_applied(serve, project, caplog):
    caplog.set_level(logging.INFO)
    app, client = serve
    saved_and_reloaded(project.parent / "mappings" / "order.yaml", FIXED, caplog, "configuration reloaded")
    saved_and_reloaded(project, project.read_text().replace("home_currency: USD", "home_currency: EUR"), caplog,
                       "configuration reloaded (ledgerflow.yaml): settings.home_currency changed")
    eid = post_and_plan(app, client, 5)
    assert payload(app, eid)["currency"] == "EUR"


def test_rotated_webhook_secret_is_taken_without_restart(serve, project, caplog):
    caplog.set_level(logging.INFO)
    _, client = serve
    assert post(client, 6, CONNECT)[0] == 400          # not a secret of the platform endpoint yet
    rotated = project.read_text().replace("secrets: [{env: LF_TEST_WHSEC_NEW}, {env: LF_TEST_WHSEC_OLD}]",
                                          "secrets: [{env: LF_TEST_WHSEC_CONNECT}]", 1)
    saved_and_reloaded(project, rotated, caplog, "webhook endpoints now:")
    assert post(client, 7, CONNECT)[0] == 200
    assert post(client, 8, NEW)[0] == 400              # the retired secret no longer verifies


def test_a_store_change_and_an_unresolvable_secret_are_refused(project, monkeypatch):
    app = App(load_project(project))
    app.flows()
    text = project.read_text()
    save(project, re.sub(r"store_url: .*", "store_url: sqlite:///elsewhere.db", text, count=1))
    result = app.reload()
    assert not result.applied
    [problem] = result.problems
    assert "settings.store_url: the store cannot be switched while ledgerflow runs; restart serve" in str(problem)
    assert str(problem).startswith("ledgerflow.yaml:")          # store_url is set in this project file

    monkeypatch.delenv("LF_TEST_WHSEC_CONNECT")
    save(project, text.replace("{env: LF_TEST_WHSEC_NEW}, {env: LF_TEST_WHSEC_OLD}", "{env: LF_TEST_WHSEC_CONNECT}"))
    result = app.reload()
    assert not result.applied and "LF_TEST_WHSEC_CONNECT" in str(result.problems[0])
    assert app.project.raw["stripe"]["endpoints"]["platform"]["secrets"] == [{"env": "LF_TEST_WHSEC_NEW"},
                                                                            {"env": "LF_TEST_WHSEC_OLD"}]


def test_a_changed_connection_gets_a_new_connector_the_others_are_kept(project):
    app = App(load_project(project))
    app.flows()
    csv, iif = app.connector("csv"), app.connector("iif")
    save(project, project.read_text().replace("directory: out/csv", "directory: out/csv2"))
    result = app.reload()
    assert result.changes == ["connections.csv changed"]
    assert app.connector("iif") is iif
    assert app.connector("csv") is not csv and app.connector("csv").config["directory"] == "out/csv2"
    assert app.close_retired(grace=0) == 1


# ---- a worker process ---------------------------------------------------------------------------

@pytest.mark.prefect
def test_a_running_worker_plans_with_the_fixed_mapping(prefect_api, project, tmp_path):
    app = App(load_project(project))
    env = {**os.environ, "LEDGERFLOW_PROJECT": str(project), "PREFECT_API_URL": str(prefect_api),
           "PREFECT_LOGGING_LEVEL": "WARNING"}
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "runner.cli", "worker", "--poll", "0.2"], cwd=str(ROOT),
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        def put(n: int) -> str:
            ev = charge_event(event_id=f"evt_worker_{n}")
            app.store.add_event(ev, jsonio.dumps(ev), "test")
            return ev["id"]

        first = put(1)
        row = wait_for(lambda: planned(app, first) or proc.poll() is not None, "the worker to plan")
        assert proc.poll() is None, log.read_text()
        assert row["status"] == "failed" and "mappings/order.yaml:1:8" in row["error"]
        save(project.parent / "mappings" / "order.yaml", FIXED)
        # the watcher applies the fix, or finds it already running: the failed event's plan row may
        # have re-read the flows first (its retry reads the current files)
        wait_for(lambda: any(line in log.read_text() for line in (
            "configuration reloaded (mappings/order.yaml)",
            "configuration files saved (mappings/order.yaml); the running configuration already matches them")),
            "the worker's reload")
        second = put(2)
        wait_for(lambda: planned(app, second), "the worker to plan the second event")
        assert payload(app, second) == {"order": "none", "charge": "ch_test_1", "currency": "USD"}
    finally:
        terminate(proc)
        app.close()


def test_a_mapping_saved_within_one_clock_tick_is_compiled_again(tmp_path):
    from runner.language.spec import MAPPINGS
    from runner.language.templating import environment
    path = write(tmp_path, "mappings/m.yaml", 'a: "{{ charge.id }}"\n')
    stamp = path.stat().st_mtime_ns
    assert MAPPINGS.get(path, "m.yaml", environment()).names == {"charge"}
    path.write_text('a: "{{ invoice.id }}"\nb: "{{ charge.id }}"\n')
    os.utime(path, ns=(stamp, stamp))              # a coarse clock: the same mtime as before
    assert MAPPINGS.get(path, "m.yaml", environment()).names == {"invoice", "charge"}


def _client_per_receiver(url: str, want: int) -> dict[int, httpx.Client]:
    """A keep-alive client (one connection) per receiver process behind one port, by pid."""
    clients: dict[int, httpx.Client] = {}
    deadline = time.monotonic() + WAIT
    while len(clients) < want:
        assert time.monotonic() < deadline, f"connections reached only receivers {sorted(clients)}"
        c = httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=1))
        pid = c.get("/healthz").json()["process"]["pid"]
        if pid in clients:
            c.close()
        else:
            clients[pid] = c
    return clients


def test_every_receiver_of_serve_workers_takes_a_rotated_secret(project, tmp_path):
    """Receivers without the background services (``--workers 2 --no-background``) watch too."""
    from tests.support.servers import free_port, start_serve
    from tests.webhook_helpers import SECRETS
    port = free_port()
    env = dict(os.environ, **SECRETS, LEDGERFLOW_PROJECT=str(project))
    proc = start_serve(port, env, log=tmp_path / "serve.log", args=("--no-background", "--workers", "2"))
    clients = _client_per_receiver(f"http://127.0.0.1:{port}", 2)
    try:
        assert [post(c, 10 + i, CONNECT)[0] for i, c in enumerate(clients.values())] == [400, 400]
        save(project, project.read_text().replace("{env: LF_TEST_WHSEC_NEW}, {env: LF_TEST_WHSEC_OLD}",
                                                  "{env: LF_TEST_WHSEC_CONNECT}", 1))
        for i, c in enumerate(clients.values()):
            wait_for(lambda c=c, i=i: post(c, 20 + i, CONNECT)[0] == 200, f"receiver {i} to take the new secret")
    finally:
        for c in clients.values():
            c.close()
        terminate(proc)


def test_the_accounting_model_is_rebuilt_only_when_the_project_file_changes(project):
    app = App(load_project(project))
    app.flows()
    postings = app.postings
    save(project.parent / "mappings" / "order.yaml", FIXED)
    assert app.reload().changes == ["flow orders changed"]
    assert app.postings is postings                       # flows only: what the project file gave stays
    save(project, project.read_text() + "accounting:\n  accounts: {clearing: Stripe Clearing 2}\n")
    assert app.reload().changes == ["accounting added"]
    assert app.postings is not postings and app.postings.policy.accounts["clearing"] == "Stripe Clearing 2"
