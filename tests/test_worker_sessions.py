"""The long-lived run structure (settings.delivery_runs: long_lived): a flow run per worker lane,
a task run per batch; honest states and names on both, artifacts and logs on the task run, and
nothing delivered twice or lost when a session's flow run rotates."""

from __future__ import annotations

import json
import time

import pytest

from runner.deliver.worker import DeliveryLoop, LoopSettings
from tests.delivery_helpers import http_project, load_app, plan_charges
from tests.test_worker import _artifacts, _run_logs, _runs


def _task_runs(flow_run_ids: list[str], count: int, timeout: float = 120) -> list:
    """The task runs of these flow runs once ``count`` of them are final (task runs reach the API
    as events, recorded a moment later)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort
    deadline = time.time() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids)),
                                         sort=TaskRunSort.EXPECTED_START_TIME_DESC, limit=200)
            final = [r for r in runs if r.state is not None and r.state.is_final()]
            if len(final) >= count or time.time() > deadline:
                return final
            time.sleep(0.5)


def _flow_run_ids(app, ids: list[int]) -> list[str]:
    return sorted({a["flow_run_id"] for i in ids for a in app.store.attempts_of(i)})


@pytest.mark.prefect
def test_long_lived_a_task_run_per_batch_honest_states_names_artifacts_and_logs(prefect_api, target, tmp_path,
                                                                                store_url, monkeypatch):
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    app = load_app(http_project(tmp_path / "p", target.url))
    ids = plan_charges(app, 7)
    target.fail(app.store.delivery(ids[1])["idempotency_key"], "500")
    target.fail(app.store.delivery(ids[2])["idempotency_key"], "400")
    loop = DeliveryLoop(app, LoopSettings(batch_size=5, concurrency=1, max_batch=5, runs="long_lived"), worker="w1")
    loop.run(until_idle=True)
    assert loop.batches == 2 and loop.dead == 1 and target.created == 5
    (run_id,) = _flow_run_ids(app, ids)                 # both batches in the lane's one session
    session = _runs([run_id])[run_id]
    assert session.state.is_failed() and session.state.name == "Dead letters"
    assert session.name == "ledger_api · 2 batches · 7 ops · 1 dead · 1 to retry"
    tasks = _task_runs([run_id], 2)
    assert sorted(t.name for t in tasks) == ["ledger_api · 2 ops", "ledger_api · 5 ops · 1 dead · 1 to retry"]
    failed = next(t for t in tasks if t.name.endswith("1 to retry"))
    clean = next(t for t in tasks if t is not failed)
    assert failed.state.is_failed() and failed.state.name == "Dead letters"
    assert "1 dead-lettered" in failed.state.message
    assert clean.state.is_completed()
    arts = _artifacts([run_id])
    assert sorted(str(a["task_run_id"]) for a in arts) == sorted([str(failed.id), str(clean.id)])
    art = next(a for a in arts if str(a["task_run_id"]) == str(failed.id))
    table = json.loads(art["data"]) if isinstance(art["data"], str) else art["data"]
    dead = app.store.delivery(ids[2])
    assert len(table) == 5
    assert next(r for r in table if r["outcome"] == "dead")["error"] == dead["last_error"]
    logs = _run_logs(str(failed.id), f"dead-letter: delivery {ids[2]}", task_run=True)
    assert any(f"dead-letter: delivery {ids[2]}" in m for m in logs), logs
    app.close()


@pytest.mark.prefect
def test_long_lived_sessions_rotate_without_delivering_twice_or_losing(prefect_api, target, tmp_path, store_url,
                                                                      monkeypatch):
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    app = load_app(http_project(tmp_path / "p", target.url))
    ids = plan_charges(app, 23)
    settings = LoopSettings(batch_size=3, concurrency=2, max_batch=3, runs="long_lived", session_batches=2)
    loop = DeliveryLoop(app, settings, worker="w1")
    loop.run(until_idle=True)
    assert loop.batches == 8 and loop.delivered == 23
    first = _flow_run_ids(app, ids)
    assert len(first) >= 4                               # 8 batches, 2 per session
    more = plan_charges(app, 4, start=100)
    DeliveryLoop(app, settings, worker="w1").run(until_idle=True)    # a new start opens new sessions
    second = _flow_run_ids(app, more)
    assert not set(second) & set(first)
    assert target.created == 27 and set(target.posts_by_key.values()) == {1}
    for i in ids + more:
        assert [a["outcome"] for a in app.store.attempts_of(i)] == ["sent"]
    runs = _runs(first + second)
    assert all(r.state.is_completed() for r in runs.values()), {r.name: r.state.name for r in runs.values()}
    assert sum(int(r.name.split(" · ")[2].split()[0]) for r in runs.values()) == 27      # "... · N ops"
    app.close()


@pytest.mark.prefect
def test_long_lived_session_of_a_loop_going_down_on_an_error_is_crashed_and_the_next_opens_anew(
        prefect_api, target, tmp_path, store_url, monkeypatch):
    """What ``run()`` does when it goes down on an error (KeyboardInterrupt, say): the lanes'
    sessions are cancelled and Prefect records them Crashed; the next batch opens a new session."""
    from runner.deliver.prefect_flows import PrefectRuntime
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    app = load_app(http_project(tmp_path / "p", target.url))
    ids = plan_charges(app, 6)
    loop = DeliveryLoop(app, LoopSettings(batch_size=3, runs="long_lived"), worker="w1")
    loop._runtime = PrefectRuntime()
    try:
        assert loop.tick() == 3
        loop._close_sessions(crashed=True)
        assert loop.tick() == 3
        loop._close_sessions(crashed=False)
    finally:
        loop._runtime.close()
    crashed, finished = (_flow_run_ids(app, part) for part in (ids[:3], ids[3:]))
    assert len(crashed) == len(finished) == 1 and crashed != finished
    runs = _runs(crashed + finished)
    assert runs[crashed[0]].state.is_crashed(), runs[crashed[0]].state
    assert runs[finished[0]].state.is_completed() and runs[finished[0]].name == "ledger_api · 1 batch · 3 ops"
    assert target.created == 6
    app.close()
