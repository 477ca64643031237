"""Delivery throughput: operations/s to a local target with no latency.

Prints, in one run, the same delivery loop (same claims, lanes and adaptive
batches) in three variants: without Prefect (the floor: each batch straight to
``deliver_rows``), a flow run per batch (``delivery_runs: per_batch``) and a
long-lived flow run per lane with a task run per batch (``long_lived``); one
worker, then two worker processes, on PostgreSQL (LEDGERFLOW_TEST_PG; SQLite
when it is not reachable). For each: ops/s, CPU-seconds per 1,000 operations
of the worker(s) and of the Prefect server, and the load average. The machine
may be shared: CPU per operation is the steadier figure; compare within one
run, not across runs. The target is a bare ASGI app (uvicorn, httptools,
uvloop) in its own process that answers at once.

    .venv/bin/python bench/bench_delivery.py [N]      # N operations per run (default 3000)
    BENCH_FIXED_BATCH=1 .venv/bin/python bench/bench_delivery.py [N]   # batches stay at 100:
                                                                       # Prefect's cost per batch
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
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
    import httpx

    from tests.support.servers import free_port
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


VARIANTS = (("without Prefect (the floor)", "plain"), ("a flow run per batch", "per_batch"),
            ("long-lived flow, a task run per batch", "long_lived"))


def make_loop(app, runs: str, worker: str = "bench"):
    """The product's delivery loop with ``runs`` (per_batch | long_lived); ``plain``: each batch
    goes straight to ``deliver_rows``, no Prefect."""
    from runner.deliver.delivery import deliver_rows
    from runner.deliver.worker import DeliveryLoop, LoopSettings

    class PlainLoop(DeliveryLoop):
        def deliver(self, rows, lane=0):
            report = deliver_rows(self.app, rows, worker=self.lane_id(lane))
            with self._count_lock:
                self.batches += 1
                self.delivered += len(report.sent)
            return report

    settings = LoopSettings(batch_size=BATCH, runs=None if runs == "plain" else runs,
                            max_batch=BATCH if os.environ.get("BENCH_FIXED_BATCH") else 0)
    return (PlainLoop if runs == "plain" else DeliveryLoop)(app, settings, worker=worker)


def cpu_seconds() -> float:
    """This process's CPU time, every thread."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def tree_cpu(pid: int | None) -> float:
    """CPU-seconds of a process and its live descendants (the Prefect server and its services)."""
    if not pid:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                f = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(d.name)] = (int(f[1]), (int(f[11]) + int(f[12])) / tick)
    tree, grew = {pid}, True
    while grew:
        more = {p for p, (pp, _) in stats.items() if pp in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(stats[p][1] for p in tree if p in stats)


def one_worker(app, runs: str) -> tuple[float, int, float]:
    """Seconds to deliver everything due, the number of batches, the worker's CPU-seconds."""
    loop = make_loop(app, runs)
    cpu, t = cpu_seconds(), time.perf_counter()
    loop.run(until_idle=True)
    return time.perf_counter() - t, loop.batches, cpu_seconds() - cpu


def worker_process(runs: str) -> None:
    """``--worker plain|per_batch|long_lived``: one worker process (project and store from the
    environment); prints the CPU-seconds of its delivery loop."""
    from runner.app import App
    from runner.language.spec import load_project
    app = App(load_project(os.environ["LEDGERFLOW_PROJECT"]))
    loop = make_loop(app, runs, worker=f"bench-{os.getpid()}")      # imports Prefect
    app.connector("ledger_api")
    print("ready", flush=True)
    sys.stdin.readline()                                           # both workers start together
    cpu, t = cpu_seconds(), time.time()
    loop.run(until_idle=True)
    print(f"cpu {cpu_seconds() - cpu:.3f} {t:.3f} {time.time():.3f}", flush=True)
    app.close()


def two_workers(pf: Path, store_url: str, n: int, runs: str, server_pid: int | None) -> tuple[float, int, float, float]:
    """Two worker processes on one store, started together once both are ready: ops/s (from the
    start to the last one done), workers that took part, their delivery loops' CPU-seconds, the
    Prefect server's meanwhile."""
    from prefect.settings import get_current_settings
    app = fresh_app(pf, store_url)
    seed(app, n)
    env = {**os.environ, "LEDGERFLOW_PROJECT": str(pf), "LEDGERFLOW_STORE_URL": store_url,
           "PREFECT_API_URL": str(get_current_settings().api.url)}
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", runs], cwd=ROOT, env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready", f"worker {p.pid} did not start"
    server = tree_cpu(server_pid)
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    cpu, starts, ends = 0.0, [], []
    for p in procs:
        out, _ = p.communicate(timeout=900)
        for line in out.splitlines():
            if line.startswith("cpu "):
                _, c, t0, t1 = line.split()
                cpu, starts, ends = cpu + float(c), starts + [float(t0)], ends + [float(t1)]
    server = tree_cpu(server_pid) - server
    from sqlalchemy import func, select

    from runner.store.tables import attempts
    with app.store.engine.connect() as c:
        done = c.execute(select(func.count()).select_from(attempts)).scalar()
        workers = {w.split("/lane-")[0] for (w,) in c.execute(select(attempts.c.worker).distinct())}
    app.close()
    if done != n:
        print(f"  two workers: only {done} of {n} delivered")
    return n / max(max(ends) - min(starts), 1e-9), len(workers), cpu, server


def pg_database() -> tuple[str, str, str] | None:
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
    """A project Prefect server for the bench (runner.operate.prefect_server, as every command resolves it):
    under ``tmp``, on a free port, stopped at the end; the worker processes inherit its URL."""
    from runner.operate.prefect_server import PrefectAPI, ServerSettings
    from tests.support.servers import free_port
    api = PrefectAPI(ServerSettings(tmp / ".state", port=free_port(), port_fixed=True)).acquire(configured=False)
    try:
        yield api
    finally:
        api.release()


def row(label: str, ops: float, worker_cpu: float, server_cpu: float, n: int, extra: str = "") -> None:
    print(f"  {label:<40} {ops:7.0f} ops/s  CPU-s per 1,000 ops: {worker_cpu / n * 1000:5.2f} worker(s)"
          f" + {server_cpu / n * 1000:5.2f} Prefect server  load {os.getloadavg()[0]:4.1f}{extra}")


def single(pf: Path, url, n: int, server_pid: int | None) -> dict[str, float]:
    """One worker, each variant on a fresh database (``url()``): ops/s by variant."""
    out = {}
    for label, runs in VARIANTS:
        app = fresh_app(pf, url())
        seed(app, n)
        server = tree_cpu(server_pid)
        took, batches, cpu = one_worker(app, runs)
        server = tree_cpu(server_pid) - server
        sent = app.store.count_deliveries("sent")
        app.close()
        out[runs] = sent / took
        row(label, sent / took, cpu, server, n, f"  ({batches} batches)" + (
            "" if runs == "plain" else f"  {out[runs] / out['plain']:.0%} of the floor"))
    return out


def double(pf: Path, url, n: int, server_pid: int | None, one: dict[str, float]) -> None:
    for label, runs in VARIANTS:
        ops, workers, cpu, server = two_workers(pf, url(), n, runs, server_pid)
        row(label, ops, cpu, server, n,
            f"  {ops / one[runs]:.2f}x one worker; {workers} workers took part")


def server_pid(tmp: Path) -> int | None:
    import json
    for rec in tmp.glob(".state/**/server.json"):
        return int(json.loads(rec.read_text())["pid"])
    return None


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        return worker_process(sys.argv[2])
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    target, url = start_target()
    tmp = Path(tempfile.mkdtemp(prefix="ledgerflow-bench-"))
    pf = project(tmp / "p", url)
    growth = "fixed" if os.environ.get("BENCH_FIXED_BATCH") else "doubling while the queue is deep"
    print(f"delivery bench: {n} operations, batches from {BATCH} ({growth}), "
          f"http target on loopback with no latency; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    dbs: list[tuple[str, str]] = []

    def pg() -> str:
        url_, admin, name = pg_database()
        dbs.append((admin, name))
        return url_
    sqlite_dbs = iter(range(1000))
    try:
        with prefect_server(tmp):
            pid = server_pid(tmp)
            app = fresh_app(pf, f"sqlite:///{tmp / 'warm.db'}")
            seed(app, 200)
            one_worker(app, "per_batch")          # warm-up: the first runs register the flow and the task
            one_worker(app, "long_lived")
            app.close()
            probe = pg_database()
            if probe is None:
                print("  PostgreSQL not reachable: one worker on SQLite only")
                single(pf, lambda: f"sqlite:///{tmp / f'{next(sqlite_dbs)}.db'}", n, pid)
                return
            dbs.append(probe[1:])
            print(" one worker (postgresql):")
            one = single(pf, pg, n, pid)
            print(" two worker processes (postgresql):")
            double(pf, pg, n, pid, one)
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
