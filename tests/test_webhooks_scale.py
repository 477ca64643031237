"""Receivers that scale out: ``serve --workers 2`` and two separate ``serve`` processes on one
store take a burst of signed webhooks, each event sent to both receivers at once, and the inbox
holds every event exactly once; the background services run in one process only."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from runner.language.fixtures import event_from_fixture
from runner.store.db import Store
from runner.store.tables import inbox
from tests.support import servers
from tests.support.servers import free_port
from tests.webhook_helpers import SECRETS, signed, stripe_project

EVENTS = 300


def _serve(project: Path, port: int, log: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    env = dict(os.environ, **SECRETS, LEDGERFLOW_PROJECT=str(project), **(env or {}))
    return servers.start_serve(port, env, log=log, args=args)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)


def _bodies(tag: str) -> list[tuple[str, bytes, dict]]:
    base = event_from_fixture("charge.succeeded")
    out = []
    for i in range(EVENTS):
        base["id"] = f"evt_scale_{tag}_{i:04d}"
        base["data"]["object"]["amount"] = 100 + i
        body, headers = signed(base)
        out.append((base["id"], body, headers))
    return out


async def _send_twice(pair: list[list[httpx.AsyncClient]], bodies) -> list[tuple[str, int, int, dict, dict]]:
    """Each event POSTed at the same time through a client of each receiver; (id, status a, status b,
    answer a, answer b) per event."""
    sem = asyncio.Semaphore(len(pair[0]))
    free = [list(pair[0]), list(pair[1])]

    async def one(eid, body, headers):
        async with sem:
            ca, cb = free[0].pop(), free[1].pop()
            try:
                ra, rb = await asyncio.gather(ca.post("/webhooks/stripe", content=body, headers=headers),
                                              cb.post("/webhooks/stripe", content=body, headers=headers))
            finally:
                free[0].append(ca)
                free[1].append(cb)
        return eid, ra.status_code, rb.status_code, ra.json(), rb.json()

    return await asyncio.gather(*(one(*b) for b in bodies))


def _assert_each_once(results, store_url: str) -> None:
    assert [r for r in results if (r[1], r[2]) != (200, 200)] == []
    new = [(a["duplicate"], b["duplicate"]) for _, _, _, a, b in results]
    assert all(sorted(n) == [False, True] for n in new), "exactly one of the two answers is the new one"
    store = Store(store_url)
    try:
        ids = [r[0] for r in results]
        assert store.event_ids(ids) == set(ids)
        with store.engine.connect() as c:
            rows = c.execute(inbox.select().with_only_columns(inbox.c.event_id)).scalars().all()
        assert sorted(rows) == sorted(ids), "every event once, nothing else"
    finally:
        store.close()


async def _clients_by_process(url: str, want: int, per_process: int, deadline: float):
    """Keep-alive clients (one connection each) grouped by the pid of the receiver that accepted it."""
    by_pid: dict[int, list[httpx.AsyncClient]] = {}
    spare: list[httpx.AsyncClient] = []
    while len(by_pid) < want or any(len(v) < per_process for v in by_pid.values()):
        if time.monotonic() > deadline:
            raise AssertionError(f"connections reached only receivers {sorted(by_pid)}")
        c = httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=1))
        pid = (await c.get("/healthz")).json()["process"]["pid"]
        group = by_pid.setdefault(pid, [])
        (group if len(group) < per_process else spare).append(c)
    for c in spare:
        await c.aclose()
    return by_pid


def _healthz_by_pid(url: str, want: int, timeout: float = 120) -> dict[int, dict]:
    """/healthz of every receiver behind one port (new connections until each has answered)."""
    seen: dict[int, dict] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < want:
        if time.monotonic() > deadline:
            raise AssertionError(f"only receivers {sorted(seen)} answered /healthz")
        with httpx.Client(timeout=30) as c:        # a new connection each time: any receiver may take it
            h = c.get(f"{url}/healthz").json()
        seen[h["process"]["pid"]] = h
    return seen


def test_serve_workers_2_receives_each_event_once(tmp_path, store_url, stripe_fixtures):
    # idle keep-alive connections stay open, however long a busy machine takes to group them by receiver
    # (the keep-alive timeout, and the header deadline that runs from the previous answer)
    project = stripe_project(tmp_path / "proj", store_url,
                             extra="serve:\n  limits: {keep_alive_timeout: 600, header_timeout: 600}\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _serve(project, port, tmp_path / "serve.log", "--no-background", "--workers", "2")
    try:
        async def run():
            by_pid = await _clients_by_process(url, 2, 8, time.monotonic() + 180)
            pair = list(by_pid.values())
            try:
                return await _send_twice(pair, _bodies("w")), sorted(by_pid)
            finally:
                for c in pair[0] + pair[1]:
                    await c.aclose()

        results, pids = asyncio.run(run())
        _assert_each_once(results, store_url)
        health = _healthz_by_pid(url, 2)
        assert sorted(health) == pids and proc.pid in pids
        assert sorted(h["process"]["receiver"] for h in health.values()) == [0, 1]
        assert {h["process"]["receivers"] for h in health.values()} == {2}
        assert sum(h["accepted"] for h in health.values()) == EVENTS
        assert sum(h["duplicate"] for h in health.values()) == EVENTS
        # each event went to both receivers; both took part (a connection that is closed and opened
        # again may land on the other receiver, so not exactly EVENTS each)
        assert all(h["accepted"] + h["duplicate"] > 0 for h in health.values()), health
        assert [h["services"] for h in health.values()] == [{}, {}]     # --no-background: none anywhere
        child = next(pid for pid, h in health.items() if h["process"]["receiver"] == 1)
        os.kill(child, signal.SIGKILL)                                    # a receiver dies: it is started again
        deadline = time.monotonic() + 180
        while True:
            again = _healthz_by_pid(url, 2)
            if child not in again and sorted(h["process"]["receiver"] for h in again.values()) == [0, 1]:
                break
            assert time.monotonic() < deadline, f"receiver 1 was not started again: {sorted(again)}"
            time.sleep(1)
    finally:
        _stop(proc)
    assert proc.returncode == 0, (tmp_path / "serve.log").read_text()[-3000:]


def test_two_serve_processes_on_one_store_receive_each_event_once(tmp_path, store_url, stripe_fixtures):
    project = stripe_project(tmp_path / "proj", store_url)
    ports = [free_port(), free_port()]
    procs = [_serve(project, p, tmp_path / f"serve{p}.log") for p in ports]
    try:
        async def run():
            pair = [[httpx.AsyncClient(base_url=f"http://127.0.0.1:{p}", timeout=60,
                                       limits=httpx.Limits(max_connections=1)) for _ in range(8)] for p in ports]
            try:
                return await _send_twice(pair, _bodies("s"))
            finally:
                for c in pair[0] + pair[1]:
                    await c.aclose()

        _assert_each_once(asyncio.run(run()), store_url)
        health = [httpx.get(f"http://127.0.0.1:{p}/healthz", timeout=30).json() for p in ports]
        assert sum(h["accepted"] for h in health) == EVENTS and sum(h["duplicate"] for h in health) == EVENTS
    finally:
        for p in procs:
            _stop(p)


def test_serve_workers_runs_the_background_services_once(tmp_path, pg_url, prefect_api, stripe_fixtures):
    """With background services on: receiver 0 (the supervisor) runs them, receiver 1 none; stopping
    the supervisor stops its receivers."""
    from prefect.settings import get_current_settings
    project = stripe_project(tmp_path / "proj", pg_url)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _serve(project, port, tmp_path / "serve.log", "--workers", "2",
                  env={"PREFECT_API_URL": str(get_current_settings().api.url), "PREFECT_LOGGING_LEVEL": "WARNING"})
    try:
        health = _healthz_by_pid(url, 2)
        first = next(h for h in health.values() if h["process"]["receiver"] == 0)
        other = next(h for h in health.values() if h["process"]["receiver"] == 1)
        assert first["process"]["pid"] == proc.pid
        assert "runner.ingest.dispatch:background" in first["services"]
        assert other["services"] == {}
        child = other["process"]["pid"]
    finally:
        _stop(proc)
    assert proc.returncode == 0, (tmp_path / "serve.log").read_text()[-3000:]
    deadline = time.monotonic() + 60
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(f"/proc/{child}").exists(), "the receiver stopped with its supervisor"


def test_the_inbox_insert_reads_nothing_first(tmp_path):
    """SQLite too: one INSERT ... ON CONFLICT DO NOTHING RETURNING says which ids were new; no SELECT."""
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        statements: list[str] = []
        with store.engine.connect() as conn:
            conn.connection.driver_connection.set_trace_callback(statements.append)
            with conn.begin():
                new = store.add_events([({"id": "evt_a", "type": "x"}, "{}", "t"), ({"id": "evt_a", "type": "x"}, "{}", "t"),
                                        ({"id": "evt_b", "type": "x"}, "{}", "t")], conn=conn)
            with conn.begin():
                again = store.add_events([({"id": "evt_b", "type": "x"}, "{}", "t"),
                                          ({"id": "evt_c", "type": "x"}, "{}", "t")], conn=conn)
            conn.connection.driver_connection.set_trace_callback(None)
        assert new == [True, False, True] and again == [False, True]
        inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT")]
        assert len(inserts) == 2 and not [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    finally:
        store.close()
