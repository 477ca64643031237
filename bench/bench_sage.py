"""Sage connector throughput against the local Sage stand-in (loopback HTTP).

Delivers N charges (contact + invoice + allocated receipt each, one customer per
10 charges) through SageConnector, then delivers them all again (every document
found by reference, nothing created). Prints wall time per charge and Sage API
calls per charge for both passes.

    .venv/bin/python bench/bench_sage.py [N=200]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=200)
    args = ap.parse_args()
    from cryptography.fernet import Fernet

    from connectors.base import Item
    from connectors.oauth import TokenSet
    from connectors.sage.connector import SageConnector
    from runner.connector_runtime import connector_runtime
    from runner.core.secrets import SecretResolver
    from runner.store import open_store
    from tests.standins.sage import SageStandIn, connection_config
    from tests.support.servers import serve_app

    os.environ["LEDGERFLOW_TOKEN_KEY"] = Fernet.generate_key().decode()
    standin = SageStandIn()
    with tempfile.TemporaryDirectory() as tmp, serve_app(standin.app()) as server:
        store = open_store(f"sqlite:///{tmp}/store.db")
        env = {"SAGE_CLIENT_ID": standin.client_id, "SAGE_CLIENT_SECRET": standin.client_secret}
        conn = SageConnector("sage", connection_config(server.url, business_id=standin.business_id),
                             connector_runtime(tmp, {}, SecretResolver(env), store))
        conn.client.session.save(TokenSet.from_response(standin.seed_tokens()))
        items = [Item(i, f"sage:charge:ch_{i:06d}", "sales_invoice_payment", {
            "date": f"2026-03-{1 + i % 28:02d}", "contact": {"name": f"Customer {i % (args.n // 10 + 1)}",
                                                            "reference": f"cus_{i % (args.n // 10 + 1):06d}"},
            "lines": [{"description": f"Charge {i}", "ledger_account": "Sales", "tax_rate": "No Tax",
                       "unit_price": Decimal("19.99")}],
            "payment": {"bank_account": "Stripe Clearing", "amount": Decimal("19.99")}}) for i in range(args.n)]
        for label in ("first delivery", "repeat (all found)"):
            calls = len(standin.calls)
            t0 = time.perf_counter()
            outs = conn.deliver(items)
            dt = time.perf_counter() - t0
            assert all(o.ok for o in outs), [o.error for o in outs if not o.ok][:3]
            made = len(standin.calls) - calls
            print(f"{label}: {args.n} charges in {dt:.2f} s = {1000 * dt / args.n:.1f} ms/charge, "
                  f"{made / args.n:.2f} Sage calls/charge")
        print(f"documents: {len(standin.records('sales_invoices'))} invoices, "
              f"{len(standin.records('contact_payments'))} receipts, {len(standin.records('contacts'))} contacts")
        conn.close()


if __name__ == "__main__":
    main()
