"""Reconcile one payout of N balance transactions (pages of 100 from the Stripe
stand-in over loopback): time and peak memory, for several N.

    .venv/bin/python bench/bench_reconcile.py [N ...]      # default: 10000 50000 100000

The stand-in runs in its own process (its memory is not ours); the store has a
booking (inbox event + sent delivery) for every charge, so every transaction
goes through the matching. Each N is measured in a fresh process: peak RSS is
``ru_maxrss`` of that process, next to its RSS before reconciling.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
T0 = 1767268800


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def serve(n: int, port: int) -> None:
    """The stand-in with one platform payout of ``n`` charges (child process)."""
    import uvicorn

    from tests.standins.stripe_api import StripeStandin
    s = StripeStandin()
    total = 0
    for i in range(n):
        cid, tid = f"ch_bench{i:08d}", f"txn_bench{i:08d}"
        s.add({"id": cid, "object": "charge", "amount": 1000 + i % 97, "currency": "usd", "created": T0 + i,
               "paid": True, "status": "succeeded", "balance_transaction": tid, "payment_intent": None})
        fee = 59 + i % 7
        s.add({"id": tid, "object": "balance_transaction", "amount": 1000 + i % 97, "fee": fee,
               "net": 1000 + i % 97 - fee, "currency": "usd", "created": T0 + i, "exchange_rate": None,
               "reporting_category": "charge", "type": "charge", "source": cid, "status": "available",
               "fee_details": [], "description": None, "available_on": T0 + i, "balance_type": "payments"},
              payout="po_bench")
        total += 1000 + i % 97 - fee
    s.add({"id": "po_bench", "object": "payout", "amount": total, "currency": "usd", "automatic": True,
           "status": "paid", "created": T0 + n + 10, "arrival_date": T0 + n + 86400, "reversed_by": None,
           "original_payout": None, "failure_code": None})
    uvicorn.run(s.app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def setup_store(db: str, n: int) -> None:
    """An inbox event and a sent delivery for every charge, bulk-inserted."""
    from runner.store import open_store
    from runner.store.tables import deliveries, inbox
    store = open_store(f"sqlite:///{db}")
    now = time.time()
    with store.tx() as c:
        for lo in range(0, n, 5000):
            ev, dl = [], []
            for i in range(lo, min(n, lo + 5000)):
                eid, cid = f"evt_bench{i:08d}", f"ch_bench{i:08d}"
                payload = json.dumps({"id": eid, "type": "charge.succeeded", "data": {"object": {
                    "id": cid, "object": "charge", "amount": 1000 + i % 97, "currency": "usd"}}})
                ev.append({"event_id": eid, "type": "charge.succeeded", "payload": payload, "source": "bench",
                           "received_at": now, "status": "dispatched"})
                dl.append({"idempotency_key": f"bench:{eid}", "event_id": eid, "flow": "bench", "route": "r",
                           "connection": "csv", "connector_type": "csv", "action": "row",
                           "payload": json.dumps({"amount": f"{(1000 + i % 97) / 100:.2f}", "currency": "usd"}),
                           "state": "sent", "attempts": 1, "max_attempts": 6, "next_attempt_at": now,
                           "created_at": now, "updated_at": now})
            c.execute(inbox.insert(), ev)
            c.execute(deliveries.insert(), dl)


def child(n: int, url: str, project: str) -> None:
    os.environ["LEDGERFLOW_PROJECT"] = project
    os.environ["STRIPE_API_KEY"] = "sk_test_standin"
    from runner.app import App
    from runner.reconcile import reconcile
    from runner.store.recon import refresh_index
    app = App()
    flow = app.flow(str(Path(project).parent / "flows" / "payout-reconciliation.yaml"))
    refresh_index(app.store)             # indexing the inbox happens once, incrementally; not timed
    import stripe  # noqa: F401  (imports before the baseline)
    base = rss_mb()
    t = time.perf_counter()
    report = reconcile(app, flow, payout="po_bench", account="platform")
    elapsed = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    [res] = report.results
    print(json.dumps({"n": n, "seconds": round(elapsed, 2), "rss_before_mb": round(base, 1),
                      "peak_rss_mb": round(peak, 1), "status": res.status, "transactions": res.transactions,
                      "exceptions": len(res.exceptions)}))


def main(sizes: list[int]) -> None:
    from tests.support.servers import free_port
    print(f"{'transactions':>12} {'seconds':>8} {'tx/s':>8} {'RSS before':>11} {'peak RSS':>9}  status")
    for n in sizes:
        tmp = Path(tempfile.mkdtemp(prefix="bench-recon-"))
        port = free_port()
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(n), str(port)], cwd=ROOT)
        try:
            for sub in ("flows", "mappings"):
                shutil.copytree(ROOT / sub, tmp / sub)
            import yaml
            data = yaml.safe_load((ROOT / "ledgerflow.yaml").read_text())
            data["settings"]["store_url"] = f"sqlite:///{tmp / 'store.db'}"
            data["stripe"] = {"api_key": {"env": "STRIPE_API_KEY"}, "api_base": f"http://127.0.0.1:{port}",
                              "max_network_retries": 0}
            (tmp / "ledgerflow.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
            setup_store(str(tmp / "store.db"), n)
            import httpx
            deadline = time.time() + 120
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/v1/payouts", timeout=1)
                    break
                except httpx.HTTPError as exc:
                    if time.time() > deadline:
                        raise SystemExit("the stand-in did not start") from exc
                    time.sleep(0.2)
            out = subprocess.run([sys.executable, __file__, "--child", str(n), f"http://127.0.0.1:{port}",
                                  str(tmp / "ledgerflow.yaml")], cwd=ROOT, capture_output=True, text=True)
            if out.returncode:
                print(out.stderr[-3000:])
                raise SystemExit(out.returncode)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{r['n']:>12} {r['seconds']:>8} {int(r['n'] / r['seconds']):>8} {r['rss_before_mb']:>9} MB "
                  f"{r['peak_rss_mb']:>6} MB  {r['status']}, {r['transactions']} transactions, "
                  f"{r['exceptions']} exceptions", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=10)
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), int(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    else:
        main([int(a) for a in sys.argv[1:]] or [10_000, 50_000, 100_000])
