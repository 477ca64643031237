"""The dispatcher's throughput: events/s planned and written, on SQLite and on PostgreSQL.

Months of generated Stripe activity (tests/books/scenario.py, seeds 1, 2, ... until N distinct
events: charges, payment intents, refunds, disputes, application fees, transfers, payouts, on
the platform and two connected accounts each) go into the inbox as the webhook receiver puts
them (``Store.add_events``), then ``dispatch_pending`` plans them with the repository's shipped
flows (``flows/``: QuickBooks Online and Desktop, Sage, CSV, IIF; not the payout
reconciliation, a job of its own measured by bench/bench_reconcile.py) and writes their
delivery and posting rows. The balance transactions the postings read are in the store's cache
first (as after a catch-up or a payout's listing: fetching them is Stripe's read limit, measured
by bench/bench_postings.py (b)); the Stripe stand-in serves anything else, and the requests it
got during the timed run are printed. Goal: >= 1,000 events/s.

    python bench/bench_dispatch.py [EVENTS] [--sqlite-only | --postgresql-only]     (default 5000)

PostgreSQL: a database of its own on LEDGERFLOW_TEST_PG's server (default
postgresql://postgres@127.0.0.1:5432/postgres), dropped afterwards.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runner.core import jsonio  # noqa: E402

PG_ADMIN = os.environ.get("LEDGERFLOW_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
UNREACHABLE = "http://127.0.0.1:9"     # QuickBooks Online / Sage: planning never calls them


def scenarios(n: int) -> list:
    from tests.books.scenario import generate
    out, seen, seed = [], 0, 0
    while seen < n:
        seed += 1
        s = generate(seed, size="medium")
        out.append(s)
        seen += len({e["id"] for e in s.events})
    return out


def events_of(months: list, n: int) -> list[dict]:
    events, ids = [], set()
    for s in months:
        for ev in s.events:            # delivery order; a duplicate delivery is the receiver's to drop
            if ev["id"] not in ids and len(events) < n:
                ids.add(ev["id"])
                events.append(ev)
    return events


@contextmanager
def pg_database() -> Iterator[str]:
    import psycopg
    name = f"ledgerflow_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        from runner.store.db import _STORES
        for key in [k for k in _STORES if name in k]:
            _STORES.pop(key).close()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def project(root: Path, months: list, store_url: str, stripe_url: str) -> Path:
    from tests.books.harness import make_project
    keep = tuple(f.stem for f in (Path(__file__).resolve().parent.parent / "flows").glob("*.yaml")
                 if f.stem != "payout-reconciliation")
    import yaml
    path = make_project(root, months[0], store_url=store_url, stripe_url=stripe_url, qbo_url=UNREACHABLE,
                        sage_url=UNREACHABLE, multicurrency=False, flows=keep)
    data = yaml.safe_load(path.read_text())      # connected_accounts: every month's, not the first's only
    data["stripe"]["connected_accounts"] = sorted({a for s in months for a in s.accounts})
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def warm_up(app, events: list[dict]) -> float:
    """A running dispatcher has loaded its flows, compiled its mappings and read its FX tables:
    plan one event of each type once (nothing written); the seconds it took."""
    t = time.perf_counter()
    for ev in {e["type"]: e for e in events}.values():
        for flow in app.flows_for(ev["type"]):
            if flow.raw.get("reconcile") is None:
                try:
                    app.plan_event(jsonio.loads(json.dumps(ev)), flow)
                except Exception:  # noqa: BLE001 - the timed run reports planning errors
                    pass
    return time.perf_counter() - t


class timed_phases(dict):
    """Wall time spent planning and writing, read by wrapping the dispatcher's two steps."""

    def __init__(self):
        from runner.ingest import dispatch
        super().__init__(plan=0.0, write=0.0)
        self._real = {"plan": dispatch._plan_chunk, "write": dispatch._write}
        for phase, real in self._real.items():
            setattr(dispatch, f"_{phase}_chunk" if phase == "plan" else "_write", self._timing(phase, real))

    def _timing(self, phase, real):
        def timed(*args, **kw):
            t = time.perf_counter()
            try:
                return real(*args, **kw)
            finally:
                self[phase] += time.perf_counter() - t
        return timed

    def close(self) -> None:
        from runner.ingest import dispatch
        dispatch._plan_chunk, dispatch._write = self._real["plan"], self._real["write"]


def run(label: str, months: list, events: list[dict], store_url: str, stripe, stripe_url: str) -> None:
    from sqlalchemy import func, select

    from runner.app import App
    from runner.ingest.dispatch import dispatch_pending
    from runner.language.spec import load_project
    from runner.store.tables import delivery_postings

    with tempfile.TemporaryDirectory() as tmp:
        path = project(Path(tmp) / "project", months, store_url, stripe_url)
        cwd = os.getcwd()
        os.chdir(path.parent)
        try:
            app = App(load_project(path))
            for i in range(0, len(events), 500):        # as the webhook receiver's group commit writes them
                app.store.add_events([(ev, json.dumps(ev), "bench") for ev in events[i:i + 500]])
            by_account = defaultdict(list)
            for s in months:
                for bt, account in s.balance_transactions.values():
                    by_account[account].append(jsonio.loads(json.dumps(bt)))   # as Stripe's JSON reads
            for account, bts in by_account.items():
                app.postings.objects.prefill(bts, account)
            warm = warm_up(app, events)
            app.postings.objects._memo.clear()           # the store's cache, not memory
            stripe.reset_stats()
            phases = timed_phases()
            t, cpu = time.perf_counter(), time.process_time()
            total = Counter()
            errors: list[str] = []
            while True:
                s = dispatch_pending(app, 5000)
                if not s.events:
                    break
                total.update(events=s.events, dispatched=s.dispatched, ignored=s.ignored, failed=s.failed,
                             operations=s.operations, new=s.new_deliveries)
                errors += list(s.errors.values())
            elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
            phases.close()
            with app.store.engine.connect() as c:
                postings = c.execute(select(func.count()).select_from(delivery_postings)).scalar_one()
            requests = stripe.stats()["requests"]
            print(f"{label} (after {warm:.1f} s of warm-up: flows loaded, mappings compiled, FX tables read):")
            print(f"    {total['events']} events in {elapsed:.2f} s = {total['events'] / elapsed:,.0f} events/s "
                  f"planned and written (goal >= 1,000)")
            print(f"    {total['dispatched']} dispatched, {total['ignored']} ignored, {total['failed']} failed; "
                  f"{total['new']} delivery rows ({total['new'] / elapsed:,.0f}/s), {postings} posting rows; "
                  f"Stripe requests during the run: {requests}")
            print(f"    {cpu:.1f} CPU-seconds = {total['events'] / cpu:,.0f} events per CPU-second (what one free "
                  f"core would do); wall time planning {phases['plan']:.1f} s, writing {phases['write']:.1f} s "
                  f"({total['new'] / max(phases['write'], 1e-9):,.0f} delivery rows/s written)")
            for e in errors[:3]:
                print(f"    error: {e[:300]}")
            app.close()
        finally:
            os.chdir(cwd)


def main(argv: list[str]) -> None:
    from cryptography.fernet import Fernet

    from tests.books.harness import SECRETS, environ
    from tests.standins.stripe_api import DEFAULT_KEY, StripeStandin
    from tests.support.servers import serve_app

    args = [a for a in argv if not a.startswith("--")]
    n = int(args[0]) if args else 5000
    t = time.perf_counter()
    months = scenarios(n)
    events = events_of(months, n)
    kinds = Counter(e["type"].split(".")[0] for e in events)
    print(f"{len(events)} events from {len(months)} generated months ({time.perf_counter() - t:.1f} s to "
          f"generate): " + ", ".join(f"{k} {v}" for k, v in kinds.most_common()))
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} "
          "(shared with other work: figures are lower bounds)")
    stripe = StripeStandin()
    for s in months:
        s.standin(stripe, events=False)
    env = {**SECRETS, "STRIPE_API_KEY": DEFAULT_KEY, "LEDGERFLOW_TOKEN_KEY": Fernet.generate_key().decode(),
           "QBWC_PASSWORD": "bench", "QBO_CLIENT_ID": "bench", "QBO_CLIENT_SECRET": "bench",
           "SAGE_CLIENT_ID": "bench", "SAGE_CLIENT_SECRET": "bench"}
    with ExitStack() as stack:
        stack.enter_context(environ(env))
        srv = stack.enter_context(serve_app(stripe.app))
        if "--postgresql-only" not in argv:
            with tempfile.TemporaryDirectory() as tmp:
                run("SQLite", months, events, f"sqlite:///{Path(tmp) / 'store.db'}", stripe, srv.url)
        if "--sqlite-only" not in argv:
            with pg_database() as url:
                run("PostgreSQL", months, events, url, stripe, srv.url)


if __name__ == "__main__":
    main(sys.argv[1:])
