"""Documents per minute into QuickBooks Online, against the stand-in set to Intuit's limits.

    .venv/bin/python bench/bench_qbo.py [DOCUMENTS]      (default 2400: about a minute)

The stand-in enforces Intuit's real limits per company: 500 requests a minute,
10 in flight, 40 batch requests a minute of at most 30 items, answering 429
past them. Batching allows at most 40 x 30 = 1200 documents a minute. The
figure counts documents per *started* minute since the first batch (so a run
that spills a few seconds into another minute is charged the whole minute),
and compares it with that ceiling. No delivery may fail by throttling.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.fernet import Fernet  # noqa: E402


def main(n: int) -> int:
    import os

    os.environ["LEDGERFLOW_TOKEN_KEY"] = Fernet.generate_key().decode()
    from connectors.base import Item
    from connectors.oauth import TokenSet, TokenStore
    from connectors.quickbooks_online.connector import QuickBooksOnlineConnector
    from runner.connector_runtime import connector_runtime
    from runner.core.secrets import SecretResolver
    from runner.store import open_store
    from tests.qbo_support import REALM, seed_company
    from tests.standins.qbo import QboStandin
    from tests.support.servers import serve_app

    standin = QboStandin(per_minute=500, concurrency=10, batch_per_minute=40, batch_max=30, latency=0.05)
    company = standin.company(REALM)
    seed_company(company)
    tmp = tempfile.mkdtemp(prefix="bench-qbo-")
    store = open_store(f"sqlite:///{tmp}/store.db")
    ts = TokenSet.from_response(standin.connect(REALM))
    ts.extra["realm_id"] = REALM
    env = {"QBO_ID": standin.authority.client_id, "QBO_SECRET": standin.authority.client_secret}
    runtime = connector_runtime(tmp, {"home_currency": "USD"}, SecretResolver(env), store)
    TokenStore(runtime.tokens).write("quickbooks_online", ts)
    with serve_app(standin.app()) as srv:
        cfg = {"type": "quickbooks_online", "base_url": srv.url, "token_url": srv.url + "/oauth2/v1/tokens/bearer",
               "client_id": {"env": "QBO_ID"}, "client_secret": {"env": "QBO_SECRET"}}
        connector = QuickBooksOnlineConnector("quickbooks_online", cfg, runtime)
        items = [Item(i, f"qbo-charge:ch_bench{i:07d}", "sales_receipt", {
            "DocNumber": f"b{i:07d}", "TxnDate": "2024-05-01", "CustomerRef": {"name": "Stripe Customers"},
            "DepositToAccountRef": {"name": "Stripe Clearing"},
            "Line": [{"Amount": Decimal("12.34"), "DetailType": "SalesItemLineDetail",
                      "SalesItemLineDetail": {"ItemRef": {"name": "Stripe Sales"}}}]}) for i in range(1, n + 1)]
        per_call = 300                              # what a worker claims per round: 10 batches of 30
        sent = failed = throttled = 0
        start = time.time()
        pending = items
        while pending:
            retry = []
            for i in range(0, len(pending), per_call):
                group = pending[i:i + per_call]
                for it, out in zip(group, connector.deliver(group)):
                    if out.ok:
                        sent += 1
                    elif out.error.kind.value == "throttled":
                        throttled += 1
                        retry.append(it)
                    else:
                        failed += 1
                        print("failed:", out.error, file=sys.stderr)
            pending = retry
        elapsed = time.time() - start
        connector.close()
    times = [t for t, _ in standin.batch_log]
    minutes = max(1, math.floor((max(times) - min(times)) / 60.0) + 1)
    ceiling = 40 * 30
    rate = sent / minutes
    print(f"documents: {sent} sent, {failed} failed, {throttled} throttled deliveries; "
          f"{len(standin.batch_log)} batches; HTTP 429 from the stand-in: {standin.throttled}")
    print(f"elapsed {elapsed:.1f} s over {minutes} started minute(s)")
    print(f"QBO documents per minute: {rate:.0f} (ceiling with batching {ceiling}/min: {100 * rate / ceiling:.1f}%)")
    return 0 if failed == 0 and throttled == 0 and sent == n else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2400))
