"""Web Connector throughput: requests per round trip and server time per round trip.

Plans N Stripe charge events through the shipped qbd-charges flow (a sales
receipt each, plus one customer per 10 charges), then drains the backlog with
one simulated Web Connector session over real HTTP (raw SOAP envelopes, a
stand-in QuickBooks that validates every request against Intuit's XSD).

    .venv/bin/python bench/bench_qbwc.py [N=500] [--per-message 50]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class TimedSoap:
    """RawSoap that records the wall time of each sendRequestXML + receiveResponseXML pair (server side only)."""

    def __init__(self, raw):
        self.raw = raw
        self.times: dict[str, list[float]] = {"sendRequestXML": [], "receiveResponseXML": []}

    def call(self, op, **params):
        t0 = time.perf_counter()
        result = self.raw.call(op, **params)
        if op in self.times:
            self.times[op].append(time.perf_counter() - t0)
        return result


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=500, help="charges in the backlog (default 500)")
    ap.add_argument("--per-message", type=int, default=50, help="requests_per_message (default 50)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-qbwc-"))
    try:
        for part in ("flows", "mappings"):
            shutil.copytree(ROOT / part, tmp / part)
        shutil.copy(ROOT / "ledgerflow.yaml", tmp / "ledgerflow.yaml")
        os.environ.update(LEDGERFLOW_PROJECT=str(tmp / "ledgerflow.yaml"), QBWC_PASSWORD="bench",
                          LEDGERFLOW_STORE_URL=f"sqlite:///{tmp / 'store.db'}")
        os.environ.setdefault("LEDGERFLOW_STRIPE_FIXTURES",
                              str(ROOT.parent / "shared" / "reference" / "stripe" / "fixtures3.json"))
        from starlette.applications import Starlette
        from starlette.routing import Mount

        from connectors.quickbooks_desktop.service import build_service
        from connectors.quickbooks_desktop.webconnector import QbdConnection, WebConnectorBackend, connections_of
        from runner.app import App
        from runner.language.fixtures import event_from_fixture
        from runner.qbwc_queue import QbwcQueue
        from tests.standins.web_connector import FakeQuickBooks, RawSoap, WebConnector
        from tests.support.servers import serve_app

        app = App()
        flow = app.flow("qbd-charges")
        t0 = time.perf_counter()
        ops = []
        for i in range(args.n):
            ev = event_from_fixture("charge.succeeded", overrides={"id": f"ch_3Bench{i:07d}", "amount": 100 + i,
                                                                   "customer": f"cus_B{i % max(1, args.n // 10)}",
                                                                   "transfer_data": None,
                                                                   "balance_transaction": f"txn_3Bench{i:07d}"})
            fee = 30 + (100 + i) * 29 // 1000
            bt = {"id": f"txn_3Bench{i:07d}", "object": "balance_transaction", "amount": 100 + i, "fee": fee,
                  "fee_details": [{"amount": fee, "currency": "usd", "type": "stripe_fee"}], "net": 100 + i - fee,
                  "currency": "usd", "exchange_rate": None, "reporting_category": "charge", "type": "charge",
                  "created": ev["data"]["object"]["created"], "source": f"ch_3Bench{i:07d}"}
            ops += app.plan_event(ev, flow, pinned_lookups={"balance_transaction": bt})   # as Stripe would answer
        app.store.add_deliveries(ops)
        backlog = app.store.count_deliveries("pending")
        print(f"backlog: {backlog} deliveries planned in {time.perf_counter() - t0:.2f}s")

        conns = [QbdConnection(**{**c.__dict__, "requests_per_message": args.per_message})
                 for c in connections_of(app.project.connections)]
        backend = WebConnectorBackend(QbwcQueue(app.store), conns, app.secrets)
        qb = FakeQuickBooks()
        with serve_app(Starlette(routes=[Mount("/qbwc", app=build_service(backend))])) as srv:
            soap = TimedSoap(RawSoap(srv.url + "/qbwc/"))
            t0 = time.perf_counter()
            log = WebConnector(soap, qb).run_session("ledgerflow", "bench", max_trips=100_000)
            wall = time.perf_counter() - t0
        trips = len(log.requests_per_trip)
        per_trip = [s + r for s, r in zip(soap.times["sendRequestXML"], soap.times["receiveResponseXML"])]
        sent = app.store.count_deliveries("sent")
        print(f"drained: {sent}/{backlog} sent, {len(qb.txns)} transactions + {len(qb.customers)} customers "
              f"in QuickBooks, session {wall:.2f}s (incl. stand-in QuickBooks and XSD validation)")
        print(f"round trips: {trips}; requests per round trip: mean {statistics.mean(log.requests_per_trip):.1f}, "
              f"max {max(log.requests_per_trip)}")
        print(f"server time per round trip (sendRequestXML + receiveResponseXML over HTTP): "
              f"mean {1000 * statistics.mean(per_trip):.1f} ms, median {1000 * statistics.median(per_trip):.1f} ms, "
              f"max {1000 * max(per_trip):.1f} ms")
        app.close()
        return 0 if sent == backlog else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
