"""The demo behind ``make demo``: the shipped flows, end to end, on embedded defaults.

SQLite store under .ledgerflow/, the temporary local Prefect API, CSV and IIF
files under out/. Events are Stripe's own example objects (fixtures3.json)
wrapped as events. Every step prints what it did; running it twice shows that
nothing is delivered twice.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from . import jsonio
from .app import App
from .fixtures import event_from_fixture
from .run import run_event

ROOT = Path(__file__).resolve().parent.parent

SCENARIO = [
    ("flows/stripe-charges-to-csv.yaml", "charge.succeeded", {}),
    ("flows/stripe-refunds-to-iif.yaml", "charge.refunded", {"amount_refunded": 100, "refunded": True}),
    ("flows/stripe-payouts-to-iif.yaml", "payout.paid", {"status": "paid"}),
]


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def main() -> int:
    step("ledgerflow validate")
    rc = subprocess.call([sys.executable, "-m", "runner.cli", "validate"], cwd=ROOT)
    if rc:
        return rc
    app = App()
    events_dir = app.project.state_dir / "demo-events"
    events_dir.mkdir(parents=True, exist_ok=True)
    for flow_file, event_type, overrides in SCENARIO:
        event = event_from_fixture(event_type, overrides=overrides, project_dir=ROOT)
        path = events_dir / f"{event_type}.json"
        raw = jsonio.dumps(event, indent=2)
        path.write_text(raw)
        flow = app.flow(str(ROOT / flow_file))
        step(f"ledgerflow preview {flow_file} --event {path.relative_to(ROOT)}")
        for op in app.plan_event(event, flow):
            print(f"{op.route} -> {op.connection}.{op.action}  key={op.idempotency_key}")
            print(jsonio.dumps(op.payload, indent=2))
        for attempt in ("first run", "same event again"):
            step(f"ledgerflow run {flow_file} ({attempt})")
            for line in run_event(app, flow, event, raw, source="demo").lines():
                print(line)
    step("files written")
    for f in sorted((ROOT / "out").rglob("*")):
        if f.is_file() and not f.name.startswith("."):
            print(f"--- {f.relative_to(ROOT)}")
            print(f.read_text().replace("\t", "  "))
    store = app.store
    step("store")
    print(f"inbox: {store.count_events()} events; deliveries: {store.count_deliveries()} rows, "
          f"{store.count_deliveries('sent')} sent ({app.project.store_url})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
