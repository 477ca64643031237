"""The accounting model's throughput.

(a) Planning without fetches: events/s through ``App.plan_event`` for a flow that reads
    ``posting`` (one route, eight posting fields), every balance transaction already in the
    store's cache, on one core. Goal: >= 5,000 events/s.
(b) Dispatch of N ``charge.succeeded`` events whose balance transactions must be fetched from
    the Stripe stand-in (20 ms per answer, 100 requests/s per key, 429 beyond): the fetch rate
    achieved against the limit (% busy; goal >= 90 %), the 429s Stripe answered, and the events
    that failed because of one (goal 0).

    python bench/bench_postings.py [EVENTS_A] [EVENTS_B]     (defaults 5000 and 1000)
    python bench/bench_postings.py --profile ...             (cProfile of (a), top 15)
"""

from __future__ import annotations

import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runner.app import App  # noqa: E402
from runner.core import jsonio  # noqa: E402
from runner.language.spec import load_project  # noqa: E402

KEY = "sk_test_standin"
T = 1767225600
LIMIT = 100
LATENCY = 0.02

FLOW = """\
name: bench-postings
trigger: {stripe: [charge.succeeded]}
routes:
  - name: row
    target: csv
    action: row
    mapping: mappings/row.yaml
"""
ROW = """\
key: "{{ posting.key }}"
date: "{{ posting.date }}"
kind: "{{ posting.kind }}"
gross: "{{ posting.gross }}"
fee: "{{ posting.fee }}"
net: "{{ posting.net }}"
currency: "{{ doc.currency }}"
memo: "{{ posting.memo | clip(100) }}"
"""


def project(root: Path, api_base: str, rate_limit: float = LIMIT) -> Path:
    (root / "flows").mkdir(parents=True, exist_ok=True)
    (root / "mappings").mkdir(exist_ok=True)
    (root / "flows" / "bench.yaml").write_text(FLOW)
    (root / "mappings" / "row.yaml").write_text(ROW)
    (root / "ledgerflow.yaml").write_text(f"""\
settings:
  store_url: sqlite:///{root / 'store.db'}
  home_currency: USD
  timezone: UTC
stripe:
  api_key: {{env: LF_BENCH_STRIPE_KEY}}
  api_base: {api_base}
  max_network_retries: 0
  fetch: {{rate_limit: {rate_limit}, concurrency: 8}}
connections:
  csv: {{type: csv, directory: out/csv}}
""")
    return root / "ledgerflow.yaml"


def txn(n: int) -> dict:
    amount = 1000 + n % 9000
    fee = 30 + amount * 29 // 1000
    return {"id": f"txn_b{n:07d}", "object": "balance_transaction", "amount": amount, "fee": fee,
            "net": amount - fee, "currency": "usd", "created": T + n, "reporting_category": "charge",
            "type": "charge", "source": f"ch_b{n:07d}", "exchange_rate": None, "status": "available",
            "fee_details": [{"amount": fee, "currency": "usd", "type": "stripe_fee",
                             "description": "Stripe processing fees"}]}


def event(n: int) -> dict:
    b = txn(n)
    return {"id": f"evt_b{n:07d}", "object": "event", "type": "charge.succeeded", "created": T + n,
            "data": {"object": {"id": b["source"], "object": "charge", "amount": b["amount"], "currency": "usd",
                                "created": T + n, "paid": True, "status": "succeeded",
                                "balance_transaction": b["id"], "customer": None, "metadata": {}}}}


def bench_plan(n: int, profile: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        app = App(load_project(project(Path(tmp), "http://127.0.0.1:9")))     # nothing listens: no fetch
        app.postings.objects.prefill([txn(i) for i in range(n)], None)
        app.postings.objects._memo.clear()             # as a fresh worker: the store's cache, not memory
        flow = app.flow("bench-postings")
        events = [event(i) for i in range(n)]
        app.plan_event(events[0], flow)                 # compile templates and schemas once
        prof = cProfile.Profile() if profile else None
        if prof:
            prof.enable()
        t = time.perf_counter()
        ops = 0
        for ev in events:
            ops += len(app.plan_event(ev, flow))
        elapsed = time.perf_counter() - t
        if prof:
            prof.disable()
        print(f"(a) planning without fetches, one event at a time (a store read each): {n} events, {ops} "
              f"operations in {elapsed:.2f} s = {n / elapsed:,.0f} events/s on one core")
        app.postings.objects._memo.clear()
        t = time.perf_counter()
        for i in range(0, n, 500):                      # as the dispatcher does: one store read per batch
            batch = events[i:i + 500]
            app.postings.objects.balance_transactions(
                [(ev["data"]["object"]["balance_transaction"], None) for ev in batch])
            for ev in batch:
                app.plan_event(ev, flow)
        batched = time.perf_counter() - t
        print(f"    as the dispatcher plans (balance transactions read from the store per batch of 500): "
              f"{n / batched:,.0f} events/s on one core (goal >= 5,000)")
        warm = time.perf_counter()
        for ev in events[: min(n, 2000)]:
            app.plan_event(ev, flow)
        warm = time.perf_counter() - warm
        print(f"    again with the balance transactions in memory: {min(n, 2000) / warm:,.0f} events/s")
        if prof:
            pstats.Stats(prof).sort_stats("cumulative").print_stats(15)


def bench_dispatch(n: int) -> None:
    from runner.ingest.dispatch import dispatch_pending
    from tests.standins.stripe_api import StripeStandin
    from tests.support.servers import serve_app

    stand = StripeStandin(rate_limit=LIMIT, latency=LATENCY)
    for i in range(n):
        stand.add(txn(i))
    with serve_app(stand.app) as srv, tempfile.TemporaryDirectory() as tmp:
        app = App(load_project(project(Path(tmp), srv.url)))
        for i in range(n):
            ev = event(i)
            app.store.add_event(ev, jsonio.dumps(ev), "bench")
        time.sleep(1.1)                                  # the stand-in's bucket full, as after a quiet second
        stand.reset_stats()
        t = time.perf_counter()
        failed = dispatched = 0
        errors: list[str] = []
        while True:
            s = dispatch_pending(app, limit=500)
            if not s.events:
                break
            failed += s.failed
            dispatched += s.dispatched
            errors += list(s.errors.values())
        elapsed = time.perf_counter() - t
        st = stand.stats()
        bt = st["by_prefix"].get("/v1/balance_transactions", {"requests": 0, "limited": 0})
        served = bt["requests"] - bt["limited"]
        rate = served / elapsed
        by_429 = sum(1 for e in errors if "429" in e or "rate limit" in e.lower())
        print(f"(b) dispatch of {n} charge events, balance transactions fetched from the stand-in "
              f"({LATENCY * 1000:.0f} ms, {LIMIT}/s, 429 beyond):")
        print(f"    {dispatched} dispatched, {failed} failed in {elapsed:.2f} s; {served} fetches = {rate:.1f}/s "
              f"= {100 * rate / LIMIT:.0f} % of the limit busy (goal >= 90 %)")
        print(f"    429s answered by Stripe: {bt['limited']}; events failed by a 429: {by_429} (goal 0); "
              f"busiest second: {st['peak_per_second']} requests; other errors: {st['errors']}")
        if errors[:1]:
            print(f"    first error: {errors[0][:300]}")


def main(argv: list[str]) -> None:
    profile = "--profile" in argv
    args = [a for a in argv if not a.startswith("--")]
    n_a = int(args[0]) if args else 5000
    n_b = int(args[1]) if len(args) > 1 else 1000
    os.environ.setdefault("LF_BENCH_STRIPE_KEY", KEY)
    bench_plan(n_a, profile)
    bench_dispatch(n_b)


if __name__ == "__main__":
    main(sys.argv[1:])
