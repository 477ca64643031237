"""The delivery loop: a Prefect flow run per batch with an artifact, pull types skipped,
several worker processes on PostgreSQL, and a worker killed mid-batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from runner.deliver.worker import DeliveryLoop, LoopSettings
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


def _runs(run_ids: list[str]) -> dict[str, object]:
    from prefect.client.orchestration import get_client
    with get_client(sync_client=True) as client:
        return {i: client.read_flow_run(i) for i in run_ids}


def _run_logs(run_id: str, needle: str, timeout: float = 120, *, task_run: bool = False) -> list[str]:
    """The run's log messages (a task run's with ``task_run``), once one contains ``needle``
    (logs reach the API in batches)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, LogFilterTaskRunId
    from prefect.logging.handlers import APILogHandler
    APILogHandler().flush()
    deadline = time.time() + timeout
    which = dict(task_run_id=LogFilterTaskRunId(any_=[run_id])) if task_run else \
        dict(flow_run_id=LogFilterFlowRunId(any_=[run_id]))
    with get_client(sync_client=True) as client:
        while True:
            logs = [entry.message for entry in client.read_logs(log_filter=LogFilter(**which), limit=200, offset=0)]
            if any(needle in m for m in logs) or time.time() > deadline:
                return logs
            time.sleep(0.5)


@pytest.mark.prefect
def test_loop_delivers_in_batches_each_in_an_honest_flow_run(prefect_api, target, tmp_path, store_url, monkeypatch):
    """A run per batch, named after what it carries; a dead letter makes it Failed ("Dead letters")
    and says so in its name; its artifact lists every operation; ledgerflow's log lines are in it."""
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    app = load_app(http_project(tmp_path / "p", target.url))
    ids = plan_charges(app, 7)
    target.fail(app.store.delivery(ids[1])["idempotency_key"], "500")
    target.fail(app.store.delivery(ids[2])["idempotency_key"], "400")
    loop = DeliveryLoop(app, LoopSettings(batch_size=5, concurrency=1, max_batch=5, runs="per_batch"), worker="w1")
    loop.run(until_idle=True)
    assert loop.batches == 2 and loop.dead == 1
    states = {i: app.store.delivery(i)["state"] for i in ids}
    assert states[ids[1]] == "retrying" and states[ids[2]] == "dead"
    assert sum(s == "sent" for s in states.values()) == 5 and target.created == 5
    run_ids = sorted({a["flow_run_id"] for i in ids for a in app.store.attempts_of(i)})
    assert len(run_ids) == 2 and all(run_ids)
    runs = _runs(run_ids)
    failed = next(r for r in runs.values() if r.state.is_failed())
    clean = next(r for r in runs.values() if r is not failed)
    assert failed.state.name == "Dead letters" and "1 dead-lettered" in failed.state.message
    assert failed.name == "ledger_api · 5 ops · 1 dead · 1 to retry"
    assert clean.state.is_completed() and clean.name == "ledger_api · 2 ops"
    arts = _artifacts(run_ids)
    assert len(arts) == 2 and all(a["type"] == "table" for a in arts)
    table = next(json.loads(a["data"]) if isinstance(a["data"], str) else a["data"]
                 for a in arts if a["flow_run_id"] == str(failed.id))
    dead = app.store.delivery(ids[2])
    assert len(table) == 5
    assert {r["event"] for r in table} == {app.store.delivery(i)["event_id"] for i in ids[:5]}
    row = next(r for r in table if r["outcome"] == "dead")
    assert row == {"event": dead["event_id"], "flow": "charges-to-ledger", "target": "ledger_api",
                   "operation": "post", "amount": "10.02", "currency": "USD", "document": None,
                   "outcome": "dead", "error": dead["last_error"]}
    assert "HTTP 400" in row["error"]
    sent = [r for r in table if r["outcome"] == "delivered"]
    assert len(sent) == 3 and all(r["document"].startswith("doc_") and r["error"] is None for r in sent)
    assert [r["outcome"] for r in table].count("retrying") == 1
    logs = _run_logs(str(failed.id), f"dead-letter: delivery {ids[2]}")
    assert any(f"dead-letter: delivery {ids[2]}" in m for m in logs), logs
    app.close()


def test_loop_never_claims_pull_based_connector_types(target, tmp_path, store_url, monkeypatch):
    from connectors import registry
    from runner.language.planner import Operation
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    monkeypatch.setitem(registry.TYPES, "pulled", registry.TYPES["csv"])
    monkeypatch.setattr(registry, "PULL_TYPES", {"pulled"})
    app = load_app(http_project(tmp_path / "p", target.url))
    pushed = plan_charges(app, 2)
    app.store.add_deliveries([Operation("f", "r", "qbd", "pulled", "row", "pull-1", {"a": 1}, event_id="evt_x")])
    loop = DeliveryLoop(app, LoopSettings(batch_size=10), worker="w1")
    assert sorted(loop.claim()) == sorted(pushed)
    assert app.store.delivery_by_key("pull-1")["state"] == "pending"


# ---- separate worker processes -----------------------------------------------------------

def _worker(project: Path, store_url: str, *extra: str, api: str | None = None) -> subprocess.Popen:
    from prefect.settings import get_current_settings
    env = {**os.environ, "LEDGERFLOW_PROJECT": str(project), "LEDGERFLOW_STORE_URL": store_url,
           "PREFECT_API_URL": api or str(get_current_settings().api.url), "PREFECT_LOGGING_LEVEL": "WARNING",
           "PREFECT_CLIENT_MAX_RETRIES": "0"}     # Prefect's own retries would only make the test slower
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
        workers.add(attempts[0]["worker"].rsplit("/lane-", 1)[0])
    assert len(workers) == 2                                 # both processes shared the load
    app.close()


def _idle_workers_ready(procs) -> bool:
    """Workers log a line when their loop starts; give them until then."""
    return _ready_flag.setdefault(id(procs), time.time()) + 6 < time.time()


_ready_flag: dict[int, float] = {}


@contextmanager
def _slow_target_project(tmp_path, store_url, monkeypatch, n: int):
    """A project with ``n`` planned charges whose target takes 6 s over ``slow`` requests."""
    target = FlakyTarget(hang=6.0)
    with serve_app(target.app) as srv:
        monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
        project = http_project(tmp_path / "p", srv.url)
        project.write_text(project.read_text().replace("timeout: 0.5", "timeout: 60"))
        app = load_app(project)
        yield target, project, app, plan_charges(app, n)


@pytest.mark.prefect
def test_worker_killed_mid_batch_then_restarted_delivers_everything_exactly_once(prefect_api, store_url, tmp_path,
                                                                                  monkeypatch):
    with _slow_target_project(tmp_path, store_url, monkeypatch, 20) as (target, project, app, ids):
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
    loop = DeliveryLoop(app, LoopSettings(batch_size=5, concurrency=3, max_batch=5), worker="w1")
    loop.run(until_idle=True)
    assert loop.batches == 8 and loop.delivered == 40
    assert target.created == 40                      # each operation reached the target once
    assert all(app.store.delivery(i)["state"] == "sent" for i in ids)
    assert all(len(app.store.attempts_of(i)) == 1 for i in ids)
    lanes = {app.store.attempts_of(i)[0]["worker"] for i in ids}
    assert len(lanes) >= 2 and lanes <= {"w1/lane-0", "w1/lane-1", "w1/lane-2"}   # each lane its own id
    app.close()


@pytest.mark.prefect
def test_a_live_worker_renews_its_leases_through_a_slow_batch(prefect_api, store_url, tmp_path, monkeypatch):
    """The target takes longer than the lease: the worker's heartbeat keeps the claims, nobody
    takes the batch over, every operation is attempted once and counted once."""
    with _slow_target_project(tmp_path, store_url, monkeypatch, 4) as (target, project, app, ids):
        slow = app.store.delivery(ids[0])["idempotency_key"]
        target.fail(slow, "slow")
        loop = DeliveryLoop(app, LoopSettings(batch_size=4, concurrency=1, lease=1.5), worker="w1")
        runner = threading.Thread(target=loop.run, kwargs={"until_idle": True})
        runner.start()
        stolen = []
        _wait_for(lambda: slow in target.docs, 120, "the slow request to reach the target")
        while runner.is_alive():            # another worker tries to take the batch over all along
            stolen += app.store.claim("thief", ids=ids, lease=60)
            time.sleep(0.2)
        runner.join()
        assert stolen == []
        for did in ids:
            row = app.store.delivery(did)
            assert row["state"] == "sent" and row["attempts"] == 1
            assert [a["outcome"] for a in app.store.attempts_of(did)] == ["sent"]
        assert all(n == 1 for n in target.posts_by_key.values())
        app.close()


@pytest.mark.prefect
def test_a_prefect_api_outage_loses_nothing_and_until_idle_says_work_remains(prefect_api, target, tmp_path,
                                                                             store_url, monkeypatch):
    """The Prefect API answers 503: the worker gives its claims back at once, retries with backoff,
    and ``--until-idle`` exits 1 while deliveries are due; once the API is back, everything goes."""
    from prefect.settings import get_current_settings

    from tests.support.prefect_outage import OutageProxy
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    project = http_project(tmp_path / "p", target.url)
    app = load_app(project)
    ids = plan_charges(app, 30)
    proxy = OutageProxy(str(get_current_settings().api.url), down=True)
    with serve_app(proxy) as srv:
        api = srv.url + "/api"
        down = _worker(project, store_url, "--until-idle", "--give-up-after", "3", "--batch-size", "10", api=api)
        out, _ = down.communicate(timeout=180)
        assert down.returncode == 1, out
        assert "released at once, retrying in" in out and "lease ends" not in out
        assert "30 deliveries are still due" in out and "503" in out
        assert proxy.refused >= 3
        for did in ids:                     # nothing lost, nothing counted, nothing held
            row = app.store.delivery(did)
            assert row["state"] in ("pending", "retrying") and row["claimed_by"] is None and row["attempts"] == 0
        assert target.created == 0
        back = _worker(project, store_url, "--until-idle", "--give-up-after", "30", "--batch-size", "10", api=api)
        try:
            refused = proxy.refused
            _wait_for(lambda: proxy.refused >= refused + 2, 120, "the worker to retry", [back])
            proxy.down.clear()              # the API is back
            out, _ = back.communicate(timeout=180)
        finally:
            _stop([back])
        assert back.returncode == 0, out
    assert app.store.count_deliveries("sent") == 30 and target.created == 30
    assert all(n == 1 for n in target.posts_by_key.values())
    assert all([a["outcome"] for a in app.store.attempts_of(did)] == ["sent"] for did in ids)
    app.close()


@pytest.mark.prefect
def test_a_deep_queue_grows_the_batches(prefect_api, target, tmp_path, store_url, monkeypatch):
    """Full batches double (up to max_batch), spreading Prefect's cost per run over more operations;
    a batch that was not full brings the size back."""
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    app = load_app(http_project(tmp_path / "p", target.url))
    ids = plan_charges(app, 40)
    loop = DeliveryLoop(app, LoopSettings(batch_size=5, concurrency=1, max_batch=20, runs="per_batch"), worker="w1")
    loop.run(until_idle=True)
    sizes: dict[str, int] = {}
    for did in ids:
        run = app.store.attempts_of(did)[0]["flow_run_id"]
        sizes[run] = sizes.get(run, 0) + 1
    assert loop.batches == 4 and sorted(sizes.values()) == [5, 5, 10, 20]
    assert target.created == 40
    app.close()
