"""Delivery throughput: operations/s to a local target with no latency.

Prints: one worker without Prefect (the floor), one worker with a Prefect flow
run per batch of 100 (the product path), the Prefect overhead per batch, and
two worker processes on PostgreSQL (when reachable at LEDGERFLOW_TEST_PG).

    .venv/bin/python bench/bench_delivery.py [N]      # N operations per run (default 3000)
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")

BATCH = 100


async def _target_app(scope, receive, send):
    """A bare ASGI target with no latency: 201 and a document id, de-duplicated by Idempotency-Key."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        msg = await receive()
        more = msg.get("more_body", False)
    key = dict(scope["headers"]).get(b"idempotency-key", b"")
    seen = _SEEN.setdefault(key, len(_SEEN) + 1)
    body = b'{"id": "doc_%d"}' % seen
    await send({"type": "http.response.start", "status": 201,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


_SEEN: dict[bytes, int] = {}


def _serve_target(port: int) -> None:
    import uvicorn
    uvicorn.run(_target_app, host="127.0.0.1", port=port, log_level="error", access_log=False,
                http="httptools", loop="uvloop", lifespan="off")


def start_target() -> tuple[mp.Process, str]:
    from tests.support.servers import free_port
    import httpx
    port = free_port()
    proc = mp.get_context("spawn").Process(target=_serve_target, args=(port,), daemon=True)
    proc.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.post(url + "/docs", timeout=0.5, content=b"{}")
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    return proc, url


def project(root: Path, url: str) -> Path:
    from tests.delivery_helpers import http_project
    pf = http_project(root, url)
    pf.write_text(pf.read_text().replace("timeout: 0.5", "timeout: 10").replace("concurrency: 4", "concurrency: 8"))
    return pf


def fresh_app(pf: Path, store_url: str):
    os.environ["LEDGERFLOW_STORE_URL"] = store_url
    from tests.delivery_helpers import load_app
    return load_app(pf)


def seed(app, n: int) -> None:
    from tests.delivery_helpers import plan_charges
    plan_charges(app, n)


def one_worker_plain(app, n: int) -> float:
    from runner.delivery import deliver_rows
    t = time.perf_counter()
    while True:
        rows = app.store.claim("plain", limit=BATCH)
        if not rows:
            break
        deliver_rows(app, rows, worker="plain")
    return time.perf_counter() - t


def one_worker_prefect(app, n: int) -> tuple[float, int]:
    from runner.worker import DeliveryLoop, LoopSettings
    loop = DeliveryLoop(app, LoopSettings(batch_size=BATCH), worker="bench", dispatch=False)
    t = time.perf_counter()
    loop.run(until_idle=True)
    return time.perf_counter() - t, loop.batches


def two_workers_pg(pf: Path, pg_url: str, n: int) -> tuple[float, int]:
    from prefect.settings import get_current_settings
    app = fresh_app(pf, pg_url)
    seed(app, n)
    env = {**os.environ, "LEDGERFLOW_PROJECT": str(pf), "LEDGERFLOW_STORE_URL": pg_url,
           "PREFECT_API_URL": str(get_current_settings().api.url)}
    procs = [subprocess.Popen([sys.executable, "-m", "runner.cli", "worker", "--no-dispatch", "--until-idle",
                               "--batch-size", str(BATCH), "--log-level", "warning"], cwd=ROOT, env=env)
             for _ in range(2)]
    for p in procs:
        p.wait(timeout=600)
    from sqlalchemy import func, select
    from runner.store.tables import attempts
    with app.store.engine.connect() as c:
        first, last, done, workers = c.execute(select(func.min(attempts.c.at), func.max(attempts.c.at),
                                                      func.count(), func.count(attempts.c.worker.distinct()))).one()
    app.close()
    if done != n:
        print(f"  two workers: only {done} of {n} delivered")
    return n / max(last - first, 1e-9), workers


def pg_database() -> str | None:
    admin = os.environ.get("LEDGERFLOW_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        import psycopg
        name = f"ledgerflow_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return admin.rsplit("/", 1)[0] + "/" + name, admin, name
    except Exception:  # noqa: BLE001
        return None


@contextmanager
def prefect_server(tmp: Path):
    """A project Prefect server for the bench (runner.prefect_server, as every command resolves it):
    under ``tmp``, on a free port, stopped at the end; the worker processes inherit its URL."""
    from runner.prefect_server import PrefectAPI, ServerSettings
    from tests.support.servers import free_port
    api = PrefectAPI(ServerSettings(tmp / ".state", port=free_port(), port_fixed=True)).acquire(configured=False)
    try:
        yield api
    finally:
        api.release()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    target, url = start_target()
    tmp = Path(tempfile.mkdtemp(prefix="ledgerflow-bench-"))
    pf = project(tmp / "p", url)
    print(f"delivery bench: {n} operations, batches of {BATCH}, http target on loopback with no latency")
    try:
        with prefect_server(tmp):
            app = fresh_app(pf, f"sqlite:///{tmp / 'plain.db'}")
            seed(app, n)
            plain = one_worker_plain(app, n)
            print(f"  1 worker, no Prefect (SQLite):        {n / plain:8.0f} ops/s")
            app.close()
            app = fresh_app(pf, f"sqlite:///{tmp / 'prefect.db'}")
            seed(app, 200)
            one_worker_prefect(app, 200)          # warm-up: first flow run registers the flow
            app.close()
            app = fresh_app(pf, f"sqlite:///{tmp / 'prefect2.db'}")
            seed(app, n)
            took, batches = one_worker_prefect(app, n)
            sent = app.store.count_deliveries("sent")
            print(f"  1 worker, flow run per batch (SQLite): {sent / took:8.0f} ops/s  ({batches} flow runs)")
            print(f"  Prefect overhead per batch:           {(took - plain) / max(batches, 1) * 1000:8.1f} ms")
            app.close()
            pg = pg_database()
            if pg:
                pg_url, admin, name = pg
                try:
                    app = fresh_app(pf, pg_url)
                    seed(app, n)
                    took, batches = one_worker_prefect(app, n)
                    print(f"  1 worker, flow run per batch (PostgreSQL): {n / took:6.0f} ops/s")
                    app.close()
                    db2 = pg_database()
                    if db2:
                        rate, workers = two_workers_pg(pf, db2[0], n)
                        print(f"  2 worker processes (PostgreSQL):       {rate:8.0f} ops/s  ({workers} workers took part)")
                        _drop(db2[1], db2[2])
                finally:
                    from runner.store.db import _STORES
                    for s in list(_STORES.values()):
                        s.close()
                    _drop(admin, name)
            else:
                print("  PostgreSQL not reachable: two-worker figure skipped")
    finally:
        target.terminate()


def _drop(admin: str, name: str) -> None:
    import psycopg
    from runner.store.db import _STORES
    for key in [k for k in _STORES if name in k]:
        _STORES.pop(key).close()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
