"""The demo behind ``make demo``: the product's whole story on embedded defaults.

1. A local Stripe stand-in (tests/standins/stripe_api.py) holds a seeded month of a
   Stripe Connect platform: charges in USD, EUR, GBP, JPY, BHD and ISK, partial and
   full refunds, disputes won and lost, application fees, a destination charge and
   its transfer, payouts (one negative, one failed). One charge's events are held
   back, as if a webhook had been lost.
2. Stripe events in: every event is signed and POSTed to ``ledgerflow serve`` (duplicates
   and out-of-order deliveries included), which answers 200 once it is on disk.
3. ``ledgerflow stripe dispatch`` plans them with the shipped file flows (the accounting
   model reads each movement's balance transaction from the Stripe stand-in);
   ``ledgerflow worker --until-idle`` delivers them in Prefect flow runs.
4. ``ledgerflow reconcile payouts``: every payout's balance transactions against what was
   booked, with its report (the held-back charge shows as missing, with its fix); the
   payouts are booked into the IIF.
5. Books out: the IIF and CSV ledgers, their trial balances (Stripe Clearing = what Stripe
   still holds), and the same webhooks sent again change nothing.

Everything lives under .ledgerflow/demo/ (SQLite store, the project copy, out/).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runner.ingest.webhooks import sign  # noqa: E402
from tests.books.scenario import generate  # noqa: E402
from tests.standins.stripe_api import DEFAULT_KEY, StripeStandin  # noqa: E402
from tests.support import servers  # noqa: E402
from tests.support.servers import free_port, serve_app  # noqa: E402

DEMO = ROOT / ".ledgerflow" / "demo"
FLOWS = ["stripe-movements-to-iif.yaml", "stripe-movements-to-csv.yaml", "payout-reconciliation.yaml"]
SECRET = "whsec_demo_local_only_0000000000000000"


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def cli(*args: str, env: dict, check: bool = True) -> int:
    print("$ ledgerflow " + " ".join(args), flush=True)
    rc = subprocess.call([sys.executable, "-m", "runner.cli", *args], cwd=DEMO, env=env)
    if check and rc:
        raise SystemExit(f"ledgerflow {' '.join(args)} exited {rc}")
    return rc


def write_project(stripe_url: str, accounts: list[str]) -> None:
    if DEMO.exists():
        shutil.rmtree(DEMO)
    (DEMO / "flows").mkdir(parents=True)
    shutil.copytree(ROOT / "mappings", DEMO / "mappings")
    for f in FLOWS:
        shutil.copy(ROOT / "flows" / f, DEMO / "flows" / f)
    # the demo keeps the file books only: the reconciliation's journal routes into the others go
    recon = DEMO / "flows" / "payout-reconciliation.yaml"
    flow = yaml.safe_load(recon.read_text())
    flow["routes"] = [r for r in flow["routes"] if r["target"] in ("iif", "csv")]
    recon.write_text(yaml.safe_dump(flow, sort_keys=False))
    data = yaml.safe_load((ROOT / "ledgerflow.yaml").read_text())
    data["settings"].update(state_dir=".state", timezone="UTC")
    data["connections"] = {"csv": {"type": "csv", "directory": "out/csv"},
                           "iif": {"type": "iif", "directory": "out/iif"}}
    data["stripe"] = {"api_key": {"env": "STRIPE_API_KEY"}, "api_base": stripe_url, "connected_accounts": accounts,
                      "endpoints": {"platform": {"path": "/webhooks/stripe",
                                                 "secrets": [{"env": "STRIPE_WEBHOOK_SECRET"}]},
                                    "connect": {"path": "/webhooks/stripe/connect",
                                                "secrets": [{"env": "STRIPE_WEBHOOK_SECRET"}]}},
                      "catch_up": {"interval": "0s"}}
    (DEMO / "ledgerflow.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def start_serve(env: dict, port: int) -> subprocess.Popen:
    print(f"$ ledgerflow serve --no-background --port {port}    (receives webhooks only)", flush=True)
    return servers.start_serve(port, env, cwd=DEMO, timeout=600)     # a busy machine can be slow to start


def post_events(port: int, events: list[dict]) -> dict[int, int]:
    codes: dict[int, int] = defaultdict(int)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        for ev in events:
            body = json.dumps(ev)            # as Stripe sends it (exchange_rate is a JSON number)
            path = "/webhooks/stripe/connect" if ev.get("account") else "/webhooks/stripe"
            r = client.post(path, content=body.encode(), headers={
                "Stripe-Signature": sign(body, SECRET, int(time.time())),
                "Content-Type": "application/json; charset=utf-8"})
            codes[r.status_code] += 1
    return dict(codes)


def trial_balance(kind: str) -> dict[str, Decimal]:
    from tests.books.files import csv_books, iif_books
    from tests.standins.ledger import trial_balance as tb
    txns = iif_books(DEMO / "out" / kind) if kind == "iif" else csv_books(DEMO / "out" / kind)[0]
    result = tb(txns, "USD")
    if result.errors:
        print(f"  Beancount: {len(result.errors)} problem(s): {result.errors[:3]}")
    else:
        print(f"  {len(txns)} transactions; Beancount: every transaction balances")
    return result.balances


def main() -> int:
    scenario = generate(1, size="small", missing=1)      # seed 1 holds back a platform charge's events
    standin = StripeStandin()
    scenario.standin(standin)
    with serve_app(standin.app) as stripe:
        step(f"a local Stripe stand-in at {stripe.url}: {len(scenario.events)} webhook events, "
             f"{len(scenario.balance_transactions)} balance transactions, {len(scenario.payouts)} payouts, "
             f"platform + {len(scenario.accounts)} connected accounts")
        write_project(stripe.url, scenario.accounts)
        env = dict(os.environ, STRIPE_API_KEY=DEFAULT_KEY, STRIPE_WEBHOOK_SECRET=SECRET,
                   LEDGERFLOW_PROJECT=str(DEMO / "ledgerflow.yaml"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
        step("ledgerflow validate (the demo project: the shipped file flows and the payout reconciliation)")
        cli("validate", env=env)
        with demo_prefect(env):
            run_demo(scenario, env)
    where_to_look()
    return 0


def demo_prefect(env: dict):
    """The demo project's own Prefect server for the whole demo (runner.operate.prefect_server, as every
    command resolves it): the commands below find it recorded under .ledgerflow/demo/.state and
    use it; it stops when the demo ends. With PREFECT_API_URL set, that server is used instead."""
    from runner.language.spec import load_project
    from runner.operate.prefect_server import project_api
    step("the demo project's Prefect server (PREFECT_API_URL, else the project's own: started once, "
         "shared by the commands below, stopped at the end)")
    return project_api(load_project(env["LEDGERFLOW_PROJECT"]))


def run_demo(scenario, env: dict) -> None:
    port = free_port()
    serve = start_serve(env, port)
    try:
        step("Stripe events in: signed webhooks, duplicates and out-of-order deliveries included")
        codes = post_events(port, scenario.events)
        print(f"  answers: {codes}  (one charge's events held back: {', '.join(sorted(scenario.missing))})")
    finally:
        serve.terminate()
        serve.wait(30)
    step("plan: each movement's balance transaction is read from Stripe (cached), postings in USD")
    cli("stripe", "dispatch", env=env)
    step("deliver: batches in Prefect flow runs (on the demo project's Prefect server)")
    cli("worker", "--until-idle", "--log-level", "warning", env=env)
    cli("inbox", "list", env=env, check=False)
    first = min(datetime.fromtimestamp(p["arrival_date"], timezone.utc).date() for p, _ in scenario.payouts)
    step("the payout reconciliation, with its report (exit 1: the held-back charge is an exception)")
    rc = cli("reconcile", "payouts", "--since", (first - timedelta(days=1)).isoformat(), env=env, check=False)
    print(f"  exit {rc}")
    cli("worker", "--until-idle", "--log-level", "warning", env=env)
    step("books out")
    for kind in ("iif", "csv"):
        files = sorted((DEMO / "out" / kind).glob(f"*.{kind}"))
        print(f"--- out/{kind}: {', '.join(f.name for f in files)}; first lines of {files[0].name}:")
        print("\n".join(files[0].read_text().splitlines()[:8]).replace("\t", "  "))
    truth = scenario.truth(None)
    for kind in ("iif", "csv"):
        print(f"--- trial balance, {kind}")
        balances = trial_balance(kind)
        for account in sorted(balances):
            print(f"  {account:<30} {balances[account]:>12}")
        held = sum((bt["net"] for bt, acct in scenario.balance_transactions.values()
                    if acct is None and bt.get("source") in scenario.missing), 0)
        held = Decimal(held) / 100
        clearing = balances.get("Stripe Clearing", Decimal(0))
        print(f"  Stripe Clearing {clearing} USD; Stripe still holds {truth['balance']} USD: "
              + ("they agree" if clearing == truth["balance"] else
                 f"they differ by {truth['balance'] - clearing} USD"
                 + (", the held-back charge's net, booked once `ledgerflow stripe catch-up` brings its events"
                    if clearing + held == truth["balance"] else "")))
    step("the same webhooks again: nothing is booked twice")
    serve = start_serve(env, port)
    try:
        print(f"  answers: {post_events(port, scenario.events)}")
    finally:
        serve.terminate()
        serve.wait(30)
    cli("stripe", "dispatch", env=env)


def where_to_look() -> None:
    step("where to look")
    print("  CLI:  ledgerflow inbox list | inbox show EVT | dlq list | reconcile payouts --since ... "
          "(run in .ledgerflow/demo with LEDGERFLOW_PROJECT=.ledgerflow/demo/ledgerflow.yaml)")
    print("  UI:   ledgerflow serve starts the project's Prefect server: http://127.0.0.1:4200 — Runs "
          "(ledgerflow-deliver, one per batch; artifacts list each operation; ledgerflow-reconcile-payout, one per "
          "payout event, red 'Exceptions' when one did not reconcile), Deployments "
          "(ledgerflow-scheduled/payout-reconciliation, daily at 07:00), Artifacts (payout-reconciliation)")
    print(f"  Files: {DEMO / 'out'}")


if __name__ == "__main__":
    sys.exit(main())
