"""Planning throughput: events per second through plan() for a flow with two
routes and ten mapped fields, on one core. Templates compile once per flow.

    python bench/bench_plan.py [EVENTS]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runner.app import App  # noqa: E402
from runner.language.planner import plan  # noqa: E402
from runner.language.spec import load_project  # noqa: E402

PROJECT = """\
settings: {home_currency: USD, timezone: America/New_York}
vars: {clearing_account: Stripe Clearing, sales_account: Sales}
connections:
  csv: {type: csv, directory: out/csv}
  iif: {type: iif, directory: out/iif}
"""
FLOW = """\
name: bench
trigger: {stripe: ["charge.succeeded"]}
filter: "{{ charge.paid }}"
routes:
  - name: row
    target: csv
    action: row
    mapping: mappings/row.yaml
  - name: journal
    when: "{{ charge.amount > 0 }}"
    target: iif
    action: journal
    mapping: mappings/journal.yaml
"""
ROW = """\
id: "{{ charge.id }}"
date: "{{ charge.created | date }}"
amount: "{{ charge.amount | money(charge.currency) }}"
currency: "{{ charge.currency | upper }}"
customer: "{{ charge.customer or '' }}"
description: "{{ charge.description | clip(100) }}"
account: "{{ account or 'platform' }}"
fee: "{{ charge.application_fee_amount or 0 }}"
status: "{{ charge.status }}"
memo?: "{{ charge.metadata.order_id }}"
"""
JOURNAL = """\
date: "{{ charge.created | date }}"
docnum: "{{ charge.id | clip(11) }}"
memo: "Stripe charge {{ charge.id }}"
lines:
  - account: "{{ vars.clearing_account }}"
    amount: "{{ charge.amount | money(charge.currency) }}"
  - account: "{{ vars.sales_account }}"
    amount: "{{ charge.amount | money(charge.currency) | negate }}"
"""


def event(i: int) -> dict:
    return {"id": f"evt_{i}", "type": "charge.succeeded", "created": 1767225600 + i,
            "data": {"object": {"id": f"ch_{i:024d}", "object": "charge", "amount": 1000 + i, "currency": "usd",
                                "created": 1767225600 + i, "paid": True, "status": "succeeded",
                                "customer": f"cus_{i}", "description": f"Order {i}",
                                "application_fee_amount": None, "metadata": {"order_id": str(i)}}}}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "flows").mkdir()
        (root / "mappings").mkdir()
        (root / "ledgerflow.yaml").write_text(PROJECT)
        (root / "flows" / "bench.yaml").write_text(FLOW)
        (root / "mappings" / "row.yaml").write_text(ROW)
        (root / "mappings" / "journal.yaml").write_text(JOURNAL)
        app = App(load_project(root / "ledgerflow.yaml"))
        t0 = time.perf_counter()
        flow = app.flow(str(root / "flows" / "bench.yaml"))
        compile_ms = (time.perf_counter() - t0) * 1000
        ctx = app.context()
        events = [event(i) for i in range(n)]
        for ev in events[:200]:
            plan(ev, flow, ctx)                      # warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        ops = 0
        for ev in events:
            ops += len(plan(ev, flow, ctx))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"plan: {n} events, {ops} operations, 2 routes, 10 + 6 mapped fields")
    print(f"plan: compile {compile_ms:.1f} ms once; {n / elapsed:,.0f} events/s wall ({elapsed * 1e6 / n:.1f} µs/event), "
          f"{n / cpu:,.0f} events per CPU-second, one core (target >= 5,000)")


if __name__ == "__main__":
    main()
