"""Signed Stripe webhooks accepted and durably queued per second.

Starts ``ledgerflow serve --no-background`` as its own process (uvicorn, the
group-commit inbox writer) on a loopback port, then drives it from this
process with pre-signed requests over keep-alive connections (raw asyncio
streams, so the load generator costs little CPU) and reports events/s and
latency percentiles. Every 2xx is then checked against the inbox: a 2xx
means the row is committed (SQLite: WAL, synchronous=FULL).

    .venv/bin/python bench/bench_webhooks.py [--events 20000] [--concurrency 32] [--backend sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runner import jsonio  # noqa: E402
from runner.fixtures import event_from_fixture  # noqa: E402
from runner.webhooks import sign  # noqa: E402

SECRET = "whsec_bench_only_0123456789abcdef"
PG_ADMIN = os.environ.get("LEDGERFLOW_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


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


async def drive(port: int, reqs: list[tuple[str, bytes]], concurrency: int) -> tuple[float, list[float], list[str], int]:
    it = iter(reqs)
    latencies: list[float] = []
    acked: list[str] = []
    errors = 0

    async def worker():
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for eid, raw in it:
            t0 = time.perf_counter()
            writer.write(raw)
            status = await _read_response(reader)
            latencies.append(time.perf_counter() - t0)
            if 200 <= status < 300:
                acked.append(eid)
            else:
                errors += 1
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, latencies, acked, errors


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(project_dir: Path, port: int) -> subprocess.Popen:
    env = dict(os.environ, LF_BENCH_WHSEC=SECRET, LEDGERFLOW_PROJECT=str(project_dir / "ledgerflow.yaml"))
    proc = subprocess.Popen([sys.executable, "-m", "runner.cli", "serve", "--no-background", "--port", str(port),
                             "--log-level", "warning"], cwd=ROOT, env=env)
    import httpx
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("serve did not start")


def run(backend: str, n: int, concurrency: int) -> None:
    from tests.support.servers import free_port
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pg_db = None
        if backend == "sqlite":
            url = f"sqlite:///{tmp / 'store.db'}"
        else:
            import psycopg
            pg_db = f"ledgerflow_bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(PG_ADMIN, autocommit=True) as c:
                c.execute(f'CREATE DATABASE "{pg_db}"')
            url = PG_ADMIN.rsplit("/", 1)[0] + "/" + pg_db
        (tmp / "flows").mkdir()
        (tmp / "ledgerflow.yaml").write_text(
            f"settings: {{home_currency: USD, store_url: '{url}'}}\nconnections: {{}}\n"
            "stripe:\n  endpoints:\n    platform: {path: /webhooks/stripe, secrets: [{env: LF_BENCH_WHSEC}]}\n")
        port = free_port()
        load_before = os.getloadavg()[0]     # other work on the box skews the figures; say how busy it was
        proc = start_server(tmp, port)
        try:
            warm = build_requests(min(1000, n // 10 + 1), port, "warm" + uuid.uuid4().hex[:6])
            reqs = build_requests(n, port, uuid.uuid4().hex[:6])
            asyncio.run(drive(port, warm, concurrency))
            cpu0 = _cpu_seconds(proc.pid)
            elapsed, lat, acked, errors = asyncio.run(drive(port, reqs, concurrency))
            server_cpu = _cpu_seconds(proc.pid) - cpu0
            import httpx
            health = httpx.get(f"http://127.0.0.1:{port}/healthz").json()
        finally:
            proc.terminate()
            proc.wait(15)
        from runner.store.db import Store
        store = Store(url)
        durable = len(store.event_ids(acked))
        store.close()
        if pg_db:
            import psycopg
            with psycopg.connect(PG_ADMIN, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{pg_db}" WITH (FORCE)')
        lat.sort()
        q = statistics.quantiles(lat, n=100)
        print(json.dumps({
            "backend": backend, "events": n, "concurrency": concurrency, "events_per_s": round(len(acked) / elapsed),
            "p50_ms": round(q[49] * 1000, 2), "p99_ms": round(q[98] * 1000, 2), "max_ms": round(lat[-1] * 1000, 2),
            "server_cpu_us_per_event": round(server_cpu / max(1, len(acked)) * 1e6),
            "non_2xx": errors, "acked_in_inbox": f"{durable}/{len(acked)}",
            "commits": health["batches"], "loadavg_1m_before": load_before, "avg_batch": round((health["accepted"]) / max(1, health["batches"]), 1),
        }))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    args = ap.parse_args()
    os.environ.setdefault("LEDGERFLOW_STRIPE_FIXTURES", str(ROOT.parent / "shared/reference/stripe/fixtures3.json"))
    for backend in (["sqlite", "postgresql"] if args.backend == "both" else [args.backend]):
        run(backend, args.events, args.concurrency)


if __name__ == "__main__":
    main()
