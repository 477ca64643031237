"""Signed Stripe webhooks accepted and durably queued per second, beside a minimal receiver.

For each store (SQLite, PostgreSQL) and each number of receiver processes (1, 2)
it runs, one after the other in the same conditions:

* ``ledgerflow``: ``ledgerflow serve --no-background --workers N`` (uvicorn with
  its guarded h11 protocol, the full request checks, the group-commit inbox
  writer);
* ``minimal``: the floor, written below in ~60 lines: N processes on one shared
  socket, uvicorn h11, the same Stripe signature check
  (``runner.ingest.webhooks._check_signature``), ``orjson`` for the id, and a
  group-commit writer thread doing ``INSERT ... ON CONFLICT DO NOTHING`` into the
  same kind of database, durably (SQLite WAL + synchronous=FULL; PostgreSQL
  commit), answering once committed.

The load comes from several client processes (``--clients``) over keep-alive
raw sockets with pre-signed requests, so the generator costs little CPU and is
not one GIL. Every 2xx is then checked against the store: a 2xx means the row
is committed. Figures: events/s, p50/p99/max latency, CPU per event of the
receivers and of the clients, and ledgerflow / minimal. The machine may be
busy with other work: the 1-minute load average is printed with each run, and
``--rounds`` repeats the whole side-by-side series.

    .venv/bin/python bench/bench_webhooks.py [--events 20000] [--concurrency 32] [--clients 2]
        [--backend sqlite|postgresql|both] [--receivers 1,2] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runner.core import jsonio  # noqa: E402
from runner.ingest.webhooks import sign  # noqa: E402
from runner.language.fixtures import event_from_fixture  # noqa: E402

SECRET = "whsec_bench_only_0123456789abcdef"
TOLERANCE = 3600      # requests are signed before the run; on a busy machine a run can outlast Stripe's 300 s
PG_ADMIN = os.environ.get("LEDGERFLOW_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


# ---- the minimal receiver (the floor) -------------------------------------------------------

def minimal_app(url: str):
    """An ASGI app: verify, group-commit the event, answer 200 once committed."""
    import orjson

    from runner.ingest.webhooks import Rejected, _check_signature
    q: queue.SimpleQueue = queue.SimpleQueue()

    cols = "INSERT INTO inbox (event_id, type, account, created, payload, source, received_at, status, updated_at)"

    def writer() -> None:
        if url.startswith("sqlite"):
            import sqlite3
            db = sqlite3.connect(url.split("///", 1)[1], isolation_level=None, check_same_thread=False)
            for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=30000"):
                db.execute(f"PRAGMA {pragma}")
            sql = f"{cols} VALUES (?, ?, ?, ?, ?, 'bench', ?, 'pending', ?) ON CONFLICT (event_id) DO NOTHING"
        else:
            import psycopg
            db = psycopg.connect(url)
            sql = f"{cols} VALUES (%s, %s, %s, %s, %s, 'bench', %s, 'pending', %s) ON CONFLICT (event_id) DO NOTHING"
        while True:
            batch = [q.get()]
            while len(batch) < 1000:
                try:
                    batch.append(q.get_nowait())
                except queue.Empty:
                    break
            now = time.time()
            cur = db.cursor()
            if url.startswith("sqlite"):
                cur.execute("BEGIN IMMEDIATE")
            cur.executemany(sql, [(*row, now, now) for row, _, _ in batch])
            db.commit()           # sqlite3 without isolation_level: the BEGIN IMMEDIATE above is ours to end
            for _, fut, loop in batch:
                loop.call_soon_threadsafe(fut.set_result, True)

    threading.Thread(target=writer, daemon=True).start()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        header = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"stripe-signature"), None)
        body, more = b"", True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        try:
            _check_signature(body, header, [SECRET], TOLERANCE)
            event = orjson.loads(body)
            status, answer = 200, b'{"received":true}'
        except (Rejected, orjson.JSONDecodeError):
            status, answer = 400, b'{"error":"bad request"}'
        if status == 200:
            loop = asyncio.get_running_loop()
            fut = loop.create_future()
            q.put(((event["id"], event["type"], event.get("account"), event.get("created"), body.decode()), fut, loop))
            await fut
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]})
        await send({"type": "http.response.body", "body": answer})

    return app


def minimal_serve(fd: int, url: str) -> None:
    import uvicorn
    sys.setswitchinterval(0.001)         # as ledgerflow serve: the writer thread gets the GIL back at once
    sock = socket.socket(fileno=fd)
    config = uvicorn.Config(minimal_app(url), http="h11", lifespan="off", log_level="warning", access_log=False)
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


# ---- the load ---------------------------------------------------------------------------------

def build_requests(n: int, port: int, tag: str) -> list[tuple[str, bytes]]:
    base = event_from_fixture("charge.succeeded")
    out = []
    t = int(time.time()) + 5
    for i in range(n):
        base["id"] = f"evt_bench_{tag}_{i:07d}"
        base["data"]["object"]["amount"] = 100 + i
        body = jsonio.dumps(base).encode()
        head = (f"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: Stripe/1.0\r\n"
                f"Content-Type: application/json; charset=utf-8\r\nStripe-Signature: {sign(body.decode(), SECRET, t)}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        out.append((base["id"], head + body))
    return out


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if length:
        await reader.readexactly(length)
    return status


async def drive(port: int, reqs: list[tuple[str, bytes]], concurrency: int) -> tuple[list[float], list[str], dict]:
    it = iter(reqs)
    latencies: list[float] = []
    acked: list[str] = []
    errors: dict[int, int] = {}

    async def worker():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for eid, raw in it:
            t0 = time.perf_counter()
            writer.write(raw)
            status = await _read_response(reader)
            latencies.append(time.perf_counter() - t0)
            if 200 <= status < 300:
                acked.append(eid)
            else:
                errors[status] = errors.get(status, 0) + 1
        writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, acked, errors


def _client(port: int, reqs, concurrency: int, go, out) -> None:
    go.wait()
    t0, c0 = time.time(), time.process_time()
    lat, acked, errors = asyncio.run(drive(port, reqs, concurrency))
    out.put((t0, time.time(), time.process_time() - c0, lat, acked, errors))


def load(port: int, reqs, concurrency: int, clients: int) -> dict:
    """Drive ``reqs`` from ``clients`` processes at once; wall time from the first start to the last end."""
    ctx = mp.get_context("fork")
    go, out = ctx.Event(), ctx.Queue()
    per = [reqs[i::clients] for i in range(clients)]
    procs = [ctx.Process(target=_client, args=(port, part, max(1, concurrency // clients), go, out)) for part in per]
    for p in procs:
        p.start()
    time.sleep(0.5)
    go.set()
    parts = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return {"elapsed": max(p[1] for p in parts) - min(p[0] for p in parts), "client_cpu": sum(p[2] for p in parts),
            "lat": sorted(x for p in parts for x in p[3]), "acked": [x for p in parts for x in p[4]],
            "errors": {k: sum(p[5].get(k, 0) for p in parts) for k in {k for p in parts for k in p[5]}}}


# ---- the receivers under test -----------------------------------------------------------------

def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    """The process and its children (``serve --workers`` receivers)."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        kids = []
    return [pid, *(int(k) for k in kids)]


def _wait_ready(port: int, procs: list[subprocess.Popen]) -> None:
    deadline = time.time() + 240
    while time.time() < deadline:
        if any(p.poll() is not None for p in procs):
            raise SystemExit("a receiver exited during start-up")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the receiver did not start")


def start_ledgerflow(project: Path, port: int, receivers: int) -> list[subprocess.Popen]:
    env = dict(os.environ, LF_BENCH_WHSEC=SECRET, LEDGERFLOW_PROJECT=str(project / "ledgerflow.yaml"))
    proc = subprocess.Popen([sys.executable, "-m", "runner.cli", "serve", "--no-background", "--port", str(port),
                             "--workers", str(receivers), "--log-level", "warning"], cwd=ROOT, env=env)
    _wait_ready(port, [proc])
    deadline = time.time() + 240
    while len(_tree(proc.pid)) < receivers and time.time() < deadline:   # the children are up too
        time.sleep(0.2)
    time.sleep(2.0)
    return [proc]


def start_minimal(url: str, port: int, receivers: int) -> list[subprocess.Popen]:
    sock = socket.create_server(("127.0.0.1", port), backlog=2048)
    sock.set_inheritable(True)
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from bench.bench_webhooks import minimal_serve; " \
           f"minimal_serve({sock.fileno()}, {url!r})"
    procs = [subprocess.Popen([sys.executable, "-c", code], pass_fds=(sock.fileno(),), cwd=ROOT)
             for _ in range(receivers)]
    sock.close()
    _wait_ready(port, procs)
    time.sleep(2.0)
    return procs


def _store(backend: str, tmp: Path) -> tuple[str, str | None]:
    if backend == "sqlite":
        return f"sqlite:///{tmp / f'store-{uuid.uuid4().hex[:6]}.db'}", None
    import psycopg
    name = f"ledgerflow_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name, name


def run_one(kind: str, backend: str, receivers: int, args, tmp: Path) -> dict:
    from runner.store.db import Store
    from tests.support.servers import free_port
    url, pg_db = _store(backend, tmp)
    Store(url).close()                                  # the schema, as ledgerflow creates it
    project = tmp / f"proj-{uuid.uuid4().hex[:6]}"
    (project / "flows").mkdir(parents=True)
    (project / "ledgerflow.yaml").write_text(
        f"settings: {{home_currency: USD, store_url: '{url}'}}\nconnections: {{}}\n"
        "stripe:\n  endpoints:\n    platform: {path: /webhooks/stripe, secrets: [{env: LF_BENCH_WHSEC}], "
        f"tolerance: {TOLERANCE}}}\n")
    port = free_port()
    loadavg = os.getloadavg()[0]
    procs = start_ledgerflow(project, port, receivers) if kind == "ledgerflow" else start_minimal(url, port, receivers)
    try:
        tag = uuid.uuid4().hex[:6]
        load(port, build_requests(min(2000, args.events // 10 + 1), port, "warm" + tag), args.concurrency, args.clients)
        reqs = build_requests(args.events, port, tag)
        pids = [q for p in procs for q in _tree(p.pid)]
        cpu0 = sum(_cpu_seconds(p) for p in pids)
        r = load(port, reqs, args.concurrency, args.clients)
        server_cpu = sum(_cpu_seconds(p) for p in pids) - cpu0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
    store = Store(url)
    durable = len(store.event_ids(r["acked"]))
    store.close()
    if pg_db:
        import psycopg
        with psycopg.connect(PG_ADMIN, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{pg_db}" WITH (FORCE)')
    lat, acked = r["lat"], r["acked"]
    q = statistics.quantiles(lat, n=100)
    return {"receiver": kind, "backend": backend, "processes": receivers, "events": args.events,
            "events_per_s": round(len(acked) / r["elapsed"]), "p50_ms": round(q[49] * 1000, 2),
            "p99_ms": round(q[98] * 1000, 2), "max_ms": round(lat[-1] * 1000, 2),
            "server_cpu_us_per_event": round(server_cpu / max(1, len(acked)) * 1e6),
            "client_cpu_us_per_event": round(r["client_cpu"] / max(1, len(acked)) * 1e6),
            "non_2xx_by_status": r["errors"], "acked_in_store": f"{durable}/{len(acked)}", "loadavg_1m_before": loadavg}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=32, help="keep-alive connections in all")
    ap.add_argument("--clients", type=int, default=2, help="load-generating processes")
    ap.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--receivers", default="1,2", help="receiver process counts to run, e.g. 1,2")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the whole side-by-side series")
    args = ap.parse_args()
    os.environ.setdefault("LEDGERFLOW_STRIPE_FIXTURES", str(ROOT.parent / "shared/reference/stripe/fixtures3.json"))
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for backend in backends:
                for n in [int(x) for x in args.receivers.split(",")]:
                    pair = {}
                    for kind in ("minimal", "ledgerflow"):
                        pair[kind] = run_one(kind, backend, n, args, Path(tmp))
                        print(json.dumps(pair[kind]), flush=True)
                    ratio = pair["ledgerflow"]["events_per_s"] / max(1, pair["minimal"]["events_per_s"])
                    rows.append((backend, n, pair, ratio))
    # "cpu ratio": minimal's CPU per event over ledgerflow's, the per-process efficiency (steadier than
    # events/s when other work shares the cores)
    print(f"\n{'store':<11}{'procs':>6}{'minimal/s':>11}{'ledgerflow/s':>14}{'ratio':>7}{'lf p99 ms':>11}"
          f"{'lf cpu us/ev':>14}{'min cpu us/ev':>15}{'cpu ratio':>11}{'load':>6}")
    for backend, n, pair, ratio in rows:
        lf, mn = pair["ledgerflow"], pair["minimal"]
        cpu_ratio = mn["server_cpu_us_per_event"] / max(1, lf["server_cpu_us_per_event"])
        print(f"{backend:<11}{n:>6}{mn['events_per_s']:>11}{lf['events_per_s']:>14}{ratio:>7.2f}{lf['p99_ms']:>11}"
              f"{lf['server_cpu_us_per_event']:>14}{mn['server_cpu_us_per_event']:>15}{cpu_ratio:>11.2f}"
              f"{lf['loadavg_1m_before']:>6.1f}")


if __name__ == "__main__":
    main()
