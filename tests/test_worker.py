"""The delivery loop: a Prefect flow run per batch with an artifact, pull types skipped,
several worker processes on PostgreSQL, and a worker killed mid-batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.worker import DeliveryLoop, LoopSettings
from tests.delivery_helpers import http_project, load_app, plan_charges
from tests.standins.flaky_target import FlakyTarget
from tests.support.servers import serve_app

ROOT = Path(__file__).resolve().parent.parent


def _artifacts(run_ids: list[str]) -> list[dict]:
    """The delivery artifacts of these flow runs, read from the Prefect API."""
    import httpx
    from prefect.settings import get_current_settings
    body = {"artifacts": {"key": {"any_": ["ledgerflow-delivery"]}, "flow_run_id": {"any_": run_ids}},
            "limit": 50, "offset": 0, "sort": "CREATED_DESC"}
    resp = httpx.post(f"{get_current_settings().api.url}/artifacts/filter", json=body, timeout=30)
    resp.raise_for_status()
    return resp.json()


@pytest.mark.prefect
def test_loop_delivers_in_batches_each_in_a_flow_run_with_an_artifact(prefect_api, target, tmp_path, store_url,
                                                                       monkeypatch):
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    app = load_app(http_project(tmp_path / "p", target.url))
    ids = plan_charges(app, 7)
    target.fail(app.store.delivery(ids[1])["idempotency_key"], "500")
    target.fail(app.store.delivery(ids[2])["idempotency_key"], "400")
    loop = DeliveryLoop(app, LoopSettings(batch_size=5), worker="w1", dispatch=False)
    loop.run(until_idle=True)
    assert loop.batches == 2
    states = {i: app.store.delivery(i)["state"] for i in ids}
    assert states[ids[1]] == "retrying" and states[ids[2]] == "dead"
    assert sum(s == "sent" for s in states.values()) == 5 and target.created == 5
    run_ids = sorted({a["flow_run_id"] for i in ids for a in app.store.attempts_of(i)})
    assert len(run_ids) == 2 and all(run_ids)
    arts = _artifacts(run_ids)
    assert len(arts) == 2
    assert all(a["type"] == "table" for a in arts)
    tables = [json.loads(a["data"]) if isinstance(a["data"], str) else a["data"] for a in arts]
    first = next(t for t in tables if any(r["dead"] for r in t))
    assert first == [{"flow": "charges-to-ledger", "target": "ledger_api", "delivered": 3, "retried": 1, "dead": 1}]
    assert [t for t in tables if t is not first] == [[{"flow": "charges-to-ledger", "target": "ledger_api",
                                                       "delivered": 2, "retried": 0, "dead": 0}]]
    app.close()


def test_loop_never_claims_pull_based_connector_types(target, tmp_path, store_url, monkeypatch):
    from connectors import registry
    from runner.planner import Operation
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    monkeypatch.setitem(registry.TYPES, "pulled", registry.TYPES["csv"])
    monkeypatch.setattr(registry, "PULL_TYPES", {"pulled"})
    app = load_app(http_project(tmp_path / "p", target.url))
    pushed = plan_charges(app, 2)
    app.store.add_deliveries([Operation("f", "r", "qbd", "pulled", "row", "pull-1", {"a": 1}, event_id="evt_x")])
    loop = DeliveryLoop(app, LoopSettings(batch_size=10), worker="w1", dispatch=False)
    assert sorted(loop.claim()) == sorted(pushed)
    assert app.store.delivery_by_key("pull-1")["state"] == "pending"


# ---- separate worker processes -----------------------------------------------------------

def _worker(project: Path, store_url: str, *extra: str) -> subprocess.Popen:
    from prefect.settings import get_current_settings
    env = {**os.environ, "LEDGERFLOW_PROJECT": str(project), "LEDGERFLOW_STORE_URL": store_url,
           "PREFECT_API_URL": str(get_current_settings().api.url), "PREFECT_LOGGING_LEVEL": "WARNING"}
    return subprocess.Popen([sys.executable, "-m", "runner.cli", "worker", "--poll", "0.1", "--no-dispatch", *extra],
                            cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(cond, timeout: float, what: str, procs=()) -> None:
    deadline = time.time() + timeout
    while not cond():
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"a worker exited early ({p.returncode}):\n{p.stdout.read()}")
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _stop(procs) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _clean(url: str):
    from runner.store import open_store
    from runner.store.tables import metadata
    store = open_store(url)
    with store.engine.begin() as c:
        for t in reversed(metadata.sorted_tables):
            c.execute(t.delete())
    return store


@pytest.mark.postgres
@pytest.mark.prefect
def test_two_worker_processes_on_postgresql_deliver_each_operation_once(prefect_api, pg_url, target, tmp_path,
                                                                         monkeypatch):
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", pg_url)
    _clean(pg_url)
    project = http_project(tmp_path / "p", target.url)
    app = load_app(project)
    procs = [_worker(project, pg_url, "--batch-size", "25") for _ in range(2)]
    try:
        # both workers are up (they touched the store) before the load arrives
        time.sleep(0.5)
        _wait_for(lambda: all(p.poll() is None for p in procs) and _idle_workers_ready(procs), 60, "workers", procs)
        n = 400
        ids = plan_charges(app, n)
        _wait_for(lambda: app.store.count_deliveries("sent") == n, 120, f"{n} deliveries", procs)
    finally:
        _stop(procs)
    assert target.created == n
    assert sum(target.posts_by_key.values()) == n           # nothing was sent twice
    workers = set()
    for did in ids:
        attempts = app.store.attempts_of(did)
        assert [a["outcome"] for a in attempts] == ["sent"]
        workers.add(attempts[0]["worker"])
    assert len(workers) == 2                                 # both shared the load
    app.close()


def _idle_workers_ready(procs) -> bool:
    """Workers log a line when their loop starts; give them until then."""
    return _ready_flag.setdefault(id(procs), time.time()) + 6 < time.time()


_ready_flag: dict[int, float] = {}


@pytest.mark.prefect
def test_worker_killed_mid_batch_then_restarted_delivers_everything_exactly_once(prefect_api, store_url, tmp_path,
                                                                                  monkeypatch):
    target = FlakyTarget(hang=6.0)
    with serve_app(target.app) as srv:
        monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
        project = http_project(tmp_path / "p", srv.url)
        project.write_text(project.read_text().replace("timeout: 0.5", "timeout: 30"))
        app = load_app(project)
        ids = plan_charges(app, 20)
        keys = [app.store.delivery(i)["idempotency_key"] for i in ids]
        target.fail(keys[6], "slow")                 # the batch is in flight while this one hangs
        first = _worker(project, store_url, "--batch-size", "20", "--lease", "3")
        try:
            _wait_for(lambda: keys[6] in target.docs, 60, "the batch to be in flight", [first])
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        finally:
            if first.poll() is None:
                first.kill()
        assert app.store.count_deliveries("sending") == 20   # claims held by a dead worker
        delivered_before = target.created
        assert 0 < delivered_before < 20 or target.created >= 1
        second = _worker(project, store_url, "--batch-size", "20", "--lease", "3")
        try:
            _wait_for(lambda: app.store.count_deliveries("sent") == 20, 90, "the restart to finish", [second])
        finally:
            _stop([second])
        assert target.created == 20 and sorted(target.docs) == sorted(keys)
        assert any(target.posts_by_key[k] == 2 for k in keys)     # some were really sent again...
        assert all(target.posts_by_key[k] <= 2 for k in keys)
        for did in ids:      # ...each recorded once as sent, after the dead worker's attempt counted as lost
            assert [a["outcome"] for a in app.store.attempts_of(did)] == ["lost", "sent"]
        app.close()


@pytest.mark.prefect
def test_lanes_overlap_batches_and_deliver_each_operation_once(prefect_api, target, tmp_path, store_url, monkeypatch):
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    app = load_app(http_project(tmp_path / "p", target.url))
    ids = plan_charges(app, 40)
    loop = DeliveryLoop(app, LoopSettings(batch_size=5, concurrency=3), worker="w1", dispatch=False)
    loop.run(until_idle=True)
    assert loop.batches == 8 and loop.delivered == 40
    assert target.created == 40                      # each operation reached the target once
    assert all(app.store.delivery(i)["state"] == "sent" for i in ids)
    assert all(len(app.store.attempts_of(i)) == 1 for i in ids)
    app.close()
