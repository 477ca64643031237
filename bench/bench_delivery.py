"""Delivery throughput: operations/s to a local target with no latency.

Prints, in one run, the same delivery loop (same claims, lanes and adaptive
batches) with each batch in a Prefect flow run (the product path) and with the
flow run left out (the floor): one worker on SQLite and PostgreSQL, then two
worker processes on PostgreSQL (when reachable at LEDGERFLOW_TEST_PG). The
machine may be shared: compare figures within one run, not across runs.

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


def make_loop(app, prefect: bool, worker: str = "bench"):
    """The product's delivery loop; without Prefect, each batch goes straight to ``deliver_rows``."""
    from runner.delivery import deliver_rows
    from runner.worker import DeliveryLoop, LoopSettings

    class PlainLoop(DeliveryLoop):
        def deliver(self, rows, lane=0):
            report = deliver_rows(self.app, rows, worker=self.lane_id(lane))
            with self._count_lock:
                self.batches += 1
                self.delivered += len(report.sent)
            return report

    return (DeliveryLoop if prefect else PlainLoop)(app, LoopSettings(batch_size=BATCH), worker=worker)


def one_worker(app, prefect: bool) -> tuple[float, int]:
    """Seconds to deliver everything due, and the number of batches."""
    loop = make_loop(app, prefect)
    t = time.perf_counter()
    loop.run(until_idle=True)
    return time.perf_counter() - t, loop.batches


def worker_process(prefect: bool) -> None:
    """``--worker prefect|plain``: one worker process (project and store from the environment)."""
    from runner.app import App
    from runner.spec import load_project
    app = App(load_project(os.environ["LEDGERFLOW_PROJECT"]))
    make_loop(app, prefect, worker=f"bench-{os.getpid()}").run(until_idle=True)
    app.close()


def two_workers_pg(pf: Path, pg_url: str, n: int, prefect: bool) -> tuple[float, int]:
    """ops/s of two worker processes on one PostgreSQL store (first to last attempt), workers that took part."""
    from prefect.settings import get_current_settings
    app = fresh_app(pf, pg_url)
    seed(app, n)
    env = {**os.environ, "LEDGERFLOW_PROJECT": str(pf), "LEDGERFLOW_STORE_URL": pg_url,
           "PREFECT_API_URL": str(get_current_settings().api.url)}
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", "prefect" if prefect else "plain"],
                              cwd=ROOT, env=env) for _ in range(2)]
    for p in procs:
        p.wait(timeout=900)
    from sqlalchemy import func, select
    from runner.store.tables import attempts
    with app.store.engine.connect() as c:
        first, last, done = c.execute(select(func.min(attempts.c.at), func.max(attempts.c.at), func.count())).one()
        workers = {w.split("/lane-")[0] for (w,) in c.execute(select(attempts.c.worker).distinct())}
    app.close()
    if done != n:
        print(f"  two workers: only {done} of {n} delivered")
    return n / max(last - first, 1e-9), len(workers)


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


def row(label: str, plain: float, prefect: float, extra: str = "") -> None:
    print(f"  {label:<34} {prefect:8.0f} ops/s with Prefect   {plain:8.0f} without   "
          f"({prefect / plain:4.0%} of the floor){extra}")


def single(pf: Path, label: str, url, n: int) -> tuple[float, float]:
    """One worker on a fresh database per variant (``url(variant)``): ops/s without and with Prefect."""
    app = fresh_app(pf, url("plain"))
    seed(app, n)
    plain, _ = one_worker(app, prefect=False)
    app.close()
    app = fresh_app(pf, url("prefect"))
    seed(app, n)
    took, batches = one_worker(app, prefect=True)
    sent = app.store.count_deliveries("sent")
    app.close()
    row(f"1 worker ({label})", n / plain, sent / took,
        f"  {batches} flow runs, {max(took - plain, 0) / max(batches, 1) * 1000:.0f} ms each over the floor")
    return n / plain, sent / took


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        return worker_process(sys.argv[2] == "prefect")
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    target, url = start_target()
    tmp = Path(tempfile.mkdtemp(prefix="ledgerflow-bench-"))
    pf = project(tmp / "p", url)
    print(f"delivery bench: {n} operations, batches from {BATCH} (doubling while the queue is deep), "
          f"http target on loopback with no latency; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    dbs: list[tuple[str, str]] = []

    def pg(_variant: str) -> str:
        url_, admin, name = pg_database()
        dbs.append((admin, name))
        return url_
    try:
        with prefect_server(tmp):
            app = fresh_app(pf, f"sqlite:///{tmp / 'warm.db'}")
            seed(app, 200)
            one_worker(app, prefect=True)          # warm-up: the first flow run registers the flow
            app.close()
            single(pf, "sqlite", lambda v: f"sqlite:///{tmp / (v + '.db')}", n)
            try:
                pg("probe")
            except TypeError:                      # pg_database() gave None
                print("  PostgreSQL not reachable: PostgreSQL figures skipped")
                return
            _, one = single(pf, "postgresql", pg, n)
            plain2, w_plain = two_workers_pg(pf, pg("two-plain"), n, prefect=False)
            pref2, w_pref = two_workers_pg(pf, pg("two-prefect"), n, prefect=True)
            row("2 worker processes (postgresql)", plain2, pref2,
                f"  {pref2 / one:.2f}x one worker with Prefect; workers that took part: {w_pref} with Prefect, "
                f"{w_plain} without")
    finally:
        target.terminate()
        from runner.store.db import _STORES
        for s_ in list(_STORES.values()):
            s_.close()
        for admin, name in dbs:
            _drop(admin, name)
    print(f"  load average after: {os.getloadavg()[0]:.1f}")


def _drop(admin: str, name: str) -> None:
    import psycopg
    from runner.store.db import _STORES
    for key in [k for k in _STORES if name in k]:
        _STORES.pop(key).close()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
