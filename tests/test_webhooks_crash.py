"""SIGKILL `ledgerflow serve` in the middle of a load run: every event that got
a 2xx is in the inbox after the restart."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess

import httpx

from runner.language.fixtures import event_from_fixture
from runner.store.db import Store
from tests.support import servers
from tests.support.servers import free_port
from tests.webhook_helpers import SECRETS, signed, stripe_project


def start_serve(project, port: int) -> subprocess.Popen:
    return servers.start_serve(port, dict(os.environ, **SECRETS, LEDGERFLOW_PROJECT=str(project)))


async def load(url: str, bodies: list[tuple[str, bytes, dict]], kill_after: int, pid: int) -> tuple[list[str], int]:
    acked: list[str] = []
    failed = 0
    queue = iter(bodies)
    killed = False

    async def worker(client: httpx.AsyncClient):
        nonlocal failed, killed
        for eid, body, headers in queue:
            try:
                r = await client.post("/webhooks/stripe", content=body, headers=headers)
            except httpx.HTTPError:
                failed += 1
                return                      # the server is gone
            if 200 <= r.status_code < 300:
                acked.append(eid)
                if len(acked) >= kill_after and not killed:
                    killed = True
                    os.kill(pid, signal.SIGKILL)   # mid-load: other requests are in flight right now

    async with httpx.AsyncClient(base_url=url, timeout=10, limits=httpx.Limits(max_connections=32)) as client:
        await asyncio.gather(*(worker(client) for _ in range(32)))
    return acked, failed


def test_sigkill_mid_load_loses_no_acknowledged_event(tmp_path, store_url, stripe_fixtures):
    project = stripe_project(tmp_path / "proj", store_url)
    port = free_port()
    proc = start_serve(project, port)
    base = event_from_fixture("charge.succeeded")
    bodies = []
    for i in range(2000):
        base["id"] = f"evt_crash_{i:05d}"
        body, headers = signed(base)
        bodies.append((base["id"], body, headers))
    try:
        acked, failed = asyncio.run(load(f"http://127.0.0.1:{port}", bodies, kill_after=300, pid=proc.pid))
    finally:
        proc.kill()
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    assert len(acked) >= 300 and failed > 0        # it really died under load

    proc = start_serve(project, port)               # restart on the same store
    try:
        body, headers = signed(event_from_fixture("charge.succeeded", overrides={"amount": 4242}))
        assert httpx.post(f"http://127.0.0.1:{port}/webhooks/stripe", content=body, headers=headers).status_code == 200
    finally:
        proc.terminate()
        proc.wait(15)
    store = Store(store_url)
    try:
        assert store.event_ids(acked) == set(acked)   # every 2xx is in the inbox
        if store.dialect == "sqlite":
            with store.engine.connect() as c:
                assert c.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    finally:
        store.close()
