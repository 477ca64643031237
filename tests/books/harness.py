"""The books harness: a generated Stripe month through the shipped flows into every target,
and each target's books scored by Beancount against the scenario's truth.

One :func:`run` is what a user would see:

1. a temporary project: the repository's ``ledgerflow.yaml``, ``flows/`` and ``mappings/``
   (or a subset), a store (SQLite in the temp folder, or a PostgreSQL URL), ``stripe`` pointed
   at the Stripe stand-in loaded with the scenario (``connected_accounts`` = its accounts),
   QuickBooks Online and Sage pointed at their stand-ins with tokens as after ``connect``,
   QuickBooks Desktop behind the Web Connector simulator, CSV/IIF directories in the project;
2. ``ledgerflow serve --no-background`` as a subprocess; every scenario event POSTed to it
   signed, in delivery order, duplicates and reorderings included (Connect events, which
   carry ``account``, to the Connect endpoint); each must get a 2xx;
3. in-process: ``dispatch_pending`` until nothing is pending; every due delivery row claimed
   and delivered (plan rows included) until none is due; QuickBooks Desktop's rows pulled
   by Web Connector sessions into ``FakeQuickBooks``; the payout reconciliation for the
   month (platform and connected accounts) and its rows delivered;
4. each target's books as :class:`JournalTxn` (files parsed back by ``tests/books/files.py``,
   the stand-ins' own ledgers) and :func:`check_books` comparing Beancount's trial balance
   with :func:`expected_platform` (computed from the balance transactions alone).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections import Counter, defaultdict
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import httpx
import yaml

from tests.books.files import csv_books, iif_books
from tests.books.scenario import EXPONENT, Scenario
from tests.standins.ledger import JournalTxn, TrialBalance, trial_balance
from tests.support import servers

ROOT = Path(__file__).resolve().parents[2]
HOME = "USD"
REALM = "9130350000000001"
QBD_USER = "ledgerflow"
QBD_PASSWORD = "books-harness qbwc password"
SECRETS = {"STRIPE_WEBHOOK_SECRET": "whsec_books_harness_platform_0123456789",
           "STRIPE_CONNECT_WEBHOOK_SECRET": "whsec_books_harness_connect_0123456789"}
TARGETS = ("iif", "csv", "quickbooks_online", "quickbooks_desktop", "sage")
SERVE_START_TIMEOUT = float(os.environ.get("LEDGERFLOW_BOOKS_SERVE_TIMEOUT", "240"))
PERIOD = (date(2026, 2, 20), date(2026, 4, 30))
FILE_FLOWS = ("stripe-movements-to-iif", "stripe-movements-to-csv", "payout-reconciliation")


@contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---------------------------------------------------------------------------------------------
# the project


def make_project(root: Path, scenario: Scenario, *, store_url: str, stripe_url: str, qbo_url: str | None,
                 sage_url: str | None, multicurrency: bool, flows: tuple[str, ...] | None = None,
                 reconcile_mode: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "flows", root / "flows")
    shutil.copytree(ROOT / "mappings", root / "mappings")
    if flows is not None:
        for f in (root / "flows").glob("*.yaml"):
            if f.stem not in flows:
                f.unlink()
    if reconcile_mode:
        rf = root / "flows" / "payout-reconciliation.yaml"
        rf.write_text(rf.read_text().replace("mode: per_transaction", f"mode: {reconcile_mode}"))
    data = yaml.safe_load((ROOT / "ledgerflow.yaml").read_text())
    data.setdefault("settings", {}).update(store_url=store_url, timezone="UTC", home_currency=HOME)
    conns = data["connections"]
    conns["csv"]["directory"] = "out/csv"
    conns["iif"]["directory"] = "out/iif"
    conns["quickbooks_online"].update(base_url=qbo_url, token_url=f"{qbo_url}/oauth2/v1/tokens/bearer",
                                      multicurrency=multicurrency)
    conns["sage"].update(base_url=f"{sage_url}/v3.1", token_url=f"{sage_url}/token", multicurrency=multicurrency)
    conns["quickbooks_desktop"].update(multicurrency=multicurrency)
    stripe = data["stripe"]
    stripe.update(api_base=stripe_url, connected_accounts=list(scenario.accounts), max_network_retries=0)
    # the scenario's events are signed now but created in March 2026: tolerance is about the signature time
    (root / "ledgerflow.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root / "ledgerflow.yaml"


# ---------------------------------------------------------------------------------------------
# events in


def start_serve(project: Path, port: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    return servers.start_serve(port, env, log=log, timeout=SERVE_START_TIMEOUT)


def post_events(url: str, events: list[dict]) -> list[tuple[str, int, str]]:
    """POST each event signed, in order; (event id, status, body) per request."""
    import json

    from runner.ingest.webhooks import sign
    out = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for ev in events:
            connect = bool(ev.get("account"))
            body = json.dumps(ev)      # as Stripe sends it: exchange_rate is a JSON float
            secret = SECRETS["STRIPE_CONNECT_WEBHOOK_SECRET" if connect else "STRIPE_WEBHOOK_SECRET"]
            headers = {"Stripe-Signature": sign(body, secret, int(time.time())),
                       "Content-Type": "application/json; charset=utf-8"}
            r = client.post("/webhooks/stripe/connect" if connect else "/webhooks/stripe", content=body.encode(),
                            headers=headers)
            out.append((ev["id"], r.status_code, r.text[:300]))
    return out


# ---------------------------------------------------------------------------------------------
# the runner, in-process


def dispatch_all(app, *, rounds: int = 50) -> list:
    from runner.ingest.dispatch import dispatch_pending
    summaries = []
    for _ in range(rounds):
        s = dispatch_pending(app, 500)
        summaries.append(s)
        if not s.events:
            break
    return summaries


def deliver_due(app, *, worker: str = "books-harness", passes: int = 40) -> int:
    """Claim and deliver every due push/plan row until none is due. Rows waiting for a retry
    are made due at once (claim's ``now`` moves forward), so a run never sleeps through backoff;
    a row that keeps failing goes dead after its flow's attempts."""
    from runner.deliver.delivery import deliver_rows
    conns = [n for n, c in app.project.connections.items() if c.get("type") != "quickbooks_desktop"] + ["(plan)"]
    done = 0
    skew = 0.0
    for _ in range(passes):
        rows = app.store.claim(worker, limit=200, connections=conns, now=time.time() + skew)
        if not rows:
            if not _waiting(app, conns):
                break
            skew += 3600.0
            continue
        deliver_rows(app, rows, worker=worker)
        done += len(rows)
    return done


def _waiting(app, conns: list[str]) -> int:
    from runner.store.tables import deliveries as d
    return len(app.store.deliveries_where(d.c.state.in_(("pending", "retrying")), d.c.connection.in_(conns)))


def drain_qbd(app, quickbooks, *, sessions: int = 30) -> list:
    """Web Connector sessions until no QuickBooks Desktop row waits."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from connectors.quickbooks_desktop.service import build_service
    from connectors.quickbooks_desktop.webconnector import WebConnectorBackend, connections_of
    from runner.qbwc_queue import QbwcQueue
    from runner.store.tables import deliveries as d
    from tests.standins.web_connector import RawSoap, WebConnector
    from tests.support.servers import serve_app

    logs = []
    conns = connections_of(app.project.connections)
    names = [c.name for c in conns]
    skew = [0.0]
    backend = WebConnectorBackend(QbwcQueue(app.store), conns, app.secrets, clock=lambda: time.time() + skew[0])
    with serve_app(Starlette(routes=[Mount("/qbwc", app=build_service(backend))])) as srv:
        for i in range(sessions):
            waiting = app.store.deliveries_where(d.c.state.in_(("pending", "retrying", "sending")),
                                                 d.c.connection.in_(names))
            if not waiting:
                break
            wc = WebConnector(RawSoap(srv.url + "/qbwc/"), quickbooks)
            logs.append(wc.run_session(QBD_USER, QBD_PASSWORD))
            if i:
                skew[0] += 3600.0        # what waits for a retry is due in the next session
    return logs


def drain(app, quickbooks) -> None:
    for _ in range(6):
        dispatch_all(app)
        n = deliver_due(app)
        logs = drain_qbd(app, quickbooks)
        from runner.store import tables
        pending = app.store.count_events("pending")
        if not n and not logs and not pending:
            break
        _ = tables


# ---------------------------------------------------------------------------------------------
# one run


@dataclass
class Run:
    scenario: Scenario
    project: Path
    app: Any
    multicurrency: bool
    posted: list[tuple[str, int, str]]
    qbo: Any = None
    sage: Any = None
    qbd: Any = None
    report: Any = None
    timings: dict[str, float] = field(default_factory=dict)

    # ---- books per target ----
    def books(self, target: str) -> list[JournalTxn]:
        if target == "iif":
            return iif_books(self.project / "out" / "iif")
        if target == "csv":
            return csv_books(self.project / "out" / "csv")[0]
        if target == "quickbooks_online":
            return self.qbo.company(REALM).journal()
        if target == "quickbooks_desktop":
            return self.qbd.journal()
        if target == "sage":
            return self.sage.journal()
        raise KeyError(target)

    def deliveries(self, connection: str | None = None) -> list[dict]:
        from runner.store.tables import deliveries as d
        conds = [d.c.connection == connection] if connection else []
        return self.app.store.deliveries_where(*conds)

    def failures(self, connection: str | None = None) -> list[str]:
        """Rows that did not reach their target, and events that failed to plan."""
        bad = [f"{r['connection']} {r['flow']}/{r['route']} {r['idempotency_key']}: {r['state']}: "
               f"{(r.get('last_error') or '')[:300]}"
               for r in self.deliveries(connection) if r["state"] not in ("sent", "skipped")]
        return bad


def run(tmp: Path, scenario: Scenario, *, store_url: str | None = None, multicurrency: bool = False,
        flows: tuple[str, ...] | None = None, reconcile_mode: str | None = None) -> Run:
    from cryptography.fernet import Fernet

    from connectors.oauth import TokenSet, TokenStore
    from runner.app import App
    from runner.language.spec import load_project
    from runner.reconcile import reconcile
    from runner.store import open_store
    from runner.store.tokens import TokenRows
    from tests.standins.qbo import QboStandin
    from tests.standins.sage import SageStandIn
    from tests.standins.stripe_api import DEFAULT_KEY, StripeStandin
    from tests.standins.web_connector import FakeQuickBooks
    from tests.support.servers import free_port, serve_app

    t0 = time.monotonic()
    timings: dict[str, float] = {}
    store_url = store_url or f"sqlite:///{tmp / 'store.db'}"
    stripe = scenario.standin(StripeStandin())
    qbo = QboStandin()
    qbo.company(REALM, chart=True, multicurrency=multicurrency)
    sage = SageStandIn(base_currency=HOME, multicurrency=multicurrency)
    qbd = FakeQuickBooks(multicurrency=multicurrency)
    env = {**SECRETS, "STRIPE_API_KEY": DEFAULT_KEY, "QBWC_PASSWORD": QBD_PASSWORD,
           "LEDGERFLOW_TOKEN_KEY": Fernet.generate_key().decode(),
           "QBO_CLIENT_ID": qbo.authority.client_id, "QBO_CLIENT_SECRET": qbo.authority.client_secret,
           "SAGE_CLIENT_ID": sage.client_id, "SAGE_CLIENT_SECRET": sage.client_secret}
    with ExitStack() as stack:
        stack.enter_context(environ(env))
        s_stripe = stack.enter_context(serve_app(stripe.app))
        s_qbo = stack.enter_context(serve_app(qbo.app()))
        s_sage = stack.enter_context(serve_app(sage.app()))
        sage.url = s_sage.url
        project = make_project(tmp / "project", scenario, store_url=store_url, stripe_url=s_stripe.url,
                               qbo_url=s_qbo.url, sage_url=s_sage.url, multicurrency=multicurrency, flows=flows,
                               reconcile_mode=reconcile_mode)
        store = open_store(store_url)
        ts = TokenSet.from_response(qbo.connect(REALM))
        ts.extra["realm_id"] = REALM
        TokenStore(TokenRows(store)).write("quickbooks_online", ts)
        st = TokenSet.from_response(sage.seed_tokens())
        st.extra["business_id"] = sage.business_id
        TokenStore(TokenRows(store)).write("sage", st)
        timings["setup"] = time.monotonic() - t0

        port = free_port()
        penv = dict(os.environ, LEDGERFLOW_PROJECT=str(project))
        penv.pop("LEDGERFLOW_STORE_URL", None)
        proc = start_serve(project, port, penv, tmp / "serve.log")
        timings["serve_start"] = time.monotonic() - t0 - timings["setup"]
        try:
            t1 = time.monotonic()
            posted = post_events(f"http://127.0.0.1:{port}", scenario.events)
            timings["post"] = time.monotonic() - t1
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)

        t1 = time.monotonic()
        app = App(load_project(project))
        cwd = os.getcwd()
        os.chdir(project.parent)
        try:
            drain(app, qbd)
            timings["dispatch_deliver"] = time.monotonic() - t1
            t1 = time.monotonic()
            report = None
            if (project.parent / "flows" / "payout-reconciliation.yaml").exists():
                flow = app.flow(str(project.parent / "flows" / "payout-reconciliation.yaml"))
                report = reconcile(app, flow, since=PERIOD[0], until=PERIOD[1])
            drain(app, qbd)
            timings["reconcile"] = time.monotonic() - t1
        finally:
            os.chdir(cwd)
        timings["total"] = time.monotonic() - t0
        return Run(scenario, project.parent, app, multicurrency, posted, qbo=qbo, sage=sage, qbd=qbd,
                   report=report, timings=timings)


# ---------------------------------------------------------------------------------------------
# the truth, from the balance transactions alone


def _major(v: int, cur: str) -> Decimal:
    return Decimal(v).scaleb(-EXPONENT[cur.lower()])


def destination_amounts(scenario: Scenario) -> dict[str, int]:
    """charge id -> transfer_data amount (minor units) for the platform's destination charges."""
    out = {}
    for obj, acct, _ in scenario.objects:
        if acct is None and obj.get("object") == "charge" and obj.get("transfer_data"):
            out[obj["id"]] = obj["transfer_data"]["amount"]
    return out


def expected_platform(scenario: Scenario, exclude: set[str] = frozenset()) -> dict[str, Decimal]:
    """What the platform's books (home currency USD, settled in USD) must hold per account,
    agent treatment of destination charges (ACCOUNTING.md "Postings per movement" and
    "Stripe Connect"); ``exclude``: movement ids whose events never arrived."""
    dest = destination_amounts(scenario)
    cur = scenario.settlement[None]
    exp: dict[str, Decimal] = defaultdict(Decimal)
    for _tid, (bt, acct) in scenario.balance_transactions.items():
        if acct is not None or bt.get("source") in exclude:
            continue
        m = lambda v: _major(v, cur)    # noqa: E731
        amt, fee, net = m(bt["amount"]), m(bt["fee"]), m(bt["net"])
        cat = bt["reporting_category"]
        exp["Stripe Clearing"] += net
        if cat == "charge":
            if bt["source"] in dest:
                n = m(dest[bt["source"]])
                exp["Connected Accounts Payable"] -= n
                exp["Application Fee Revenue"] -= amt - n
            else:
                exp["Sales"] -= amt
            exp["Stripe Fees"] += fee
        elif cat == "refund":
            exp["Sales Refunds"] -= amt
            exp["Stripe Fees"] += fee
        elif cat in ("dispute", "dispute_reversal"):
            exp["Chargebacks"] -= amt
            exp["Dispute Fees"] += fee
        elif cat in ("platform_earning", "platform_earning_refund"):
            exp["Application Fee Revenue"] -= amt
            exp["Stripe Fees"] += fee
        elif cat == "transfer":
            exp["Connected Accounts Payable"] -= amt
            exp["Stripe Fees"] += fee
        elif cat in ("payout", "payout_reversal"):
            exp["Operating Bank"] -= amt
        elif cat == "other_adjustment":
            exp["Stripe Adjustments"] -= amt
        else:
            raise AssertionError(f"category {cat!r} not modelled by the harness")
    return {k: v for k, v in exp.items()}


def expected_summary(scenario: Scenario) -> dict[str, Decimal]:
    """Summary mode (only the reconciliation books, one journal per paid payout): the bank gets
    each paid payout; the categories get the movements those payouts paid out, a failed payout's
    movements included where its returned funds (payout_reversal) were paid out again; nothing
    goes through clearing."""
    paid = [po["id"] for po, acct in scenario.payouts if acct is None and po["status"] == "paid"]
    failed = {po["id"] for po, acct in scenario.payouts if acct is None and po["status"] == "failed"}

    def txns(po_id: str) -> list[str]:
        out = []
        for tid in scenario.payout_txns[po_id]:
            bt = scenario.balance_transactions[tid][0]
            if bt["reporting_category"] == "payout_reversal" and bt["source"] in failed:
                out += txns(bt["source"])
            else:
                out.append(tid)
        return out

    keep = {t for po in paid for t in txns(po)}
    sub = copy_scenario_with(scenario, keep)
    exp = expected_platform(sub)
    exp.pop("Stripe Clearing", None)
    exp["Operating Bank"] = sum((_major(po["amount"], po["currency"]) for po, acct in scenario.payouts
                                 if acct is None and po["id"] in paid), Decimal(0))
    return exp


def copy_scenario_with(scenario: Scenario, txn_ids: set[str]) -> Scenario:
    import dataclasses
    bts = {t: v for t, v in scenario.balance_transactions.items() if t in txn_ids}
    return dataclasses.replace(scenario, balance_transactions=bts)


GROUPS = {"Chargebacks + Dispute Fees": ("Chargebacks", "Dispute Fees")}
# accounts the vendors post through that must net to zero once the sale is paid
ZERO = ("Accounts Receivable", "Debtors Control", "Undeposited Funds", "Connected Accounts Payable",
        "FX Gain/Loss", "FX Gains and Losses")


# ---------------------------------------------------------------------------------------------
# the checks


INVARIANTS = ("balanced", "clearing", "categories", "once", "currencies", "connect")


@dataclass
class BooksCheck:
    target: str
    tb: TrialBalance
    problems: dict[str, list[str]]     # invariant -> what breaks it
    txns: list[JournalTxn]

    def __bool__(self) -> bool:
        return not any(self.problems.values())

    def all(self) -> list[str]:
        return [f"{k}: {p}" for k, ps in self.problems.items() for p in ps]


_STRIPE_ID = __import__("re").compile(r"\b(?:ch|py|re|dp|du|fee|fr|tr|po|txn|pyr)_[A-Za-z0-9]{6,}")


def connected_ids(scenario: Scenario) -> set[str]:
    """Ids of the objects that exist only on connected accounts (their direct charges, refunds,
    disputes, payouts and balance transactions)."""
    ids = set()
    for obj, acct, _ in scenario.objects:
        if acct is not None and obj.get("id") and obj.get("object") != "account":
            ids.add(obj["id"])
    return ids


def connect_leaks(scenario: Scenario, txns: list[JournalTxn]) -> list[str]:
    """Documents that book a connected account's own movement: the movement a document books
    is the first Stripe id of its memo (or its document number); a platform document may name
    a connected charge as context (an application fee "on charge ch_..."), which is no leak."""
    conn = connected_ids(scenario)
    tails = {c[-11:]: c for c in conn}
    out = []
    for t in txns:
        ids = _STRIPE_ID.findall(t.memo or "")
        primary = ids[0] if ids else None
        if primary in conn or (t.doc_number or "") in conn or (t.doc_number or "") in tails:
            out.append(f"{t.doc_type} {t.doc_number}: {primary or tails.get(t.doc_number or '')} "
                       f"{[(p.account, str(p.amount)) for p in t.postings]}")
    return sorted(out)


def movement_key(t: JournalTxn) -> tuple[str, str | None, str]:
    if (t.doc_number or "").startswith("R") and "payout" in (t.memo or ""):
        # the payout reconciliation's journal of what no event books (adjustments, FX within tolerance):
        # numbered R + the payout id's tail, a document of its own beside the payout's
        return t.doc_type, t.doc_number, "reconciliation"
    ids = _STRIPE_ID.findall(t.memo or "")
    clearing = sum((p.amount for p in t.postings if p.account == "Stripe Clearing"), Decimal(0))
    first = t.postings[0].amount if t.postings else Decimal(0)
    direction = "in" if (clearing or first) > 0 else "out"
    return t.doc_type, (ids[0] if ids else t.doc_number), direction


def check_books(run: Run, target: str, *, exclude: set[str] = frozenset(), multicurrency: bool | None = None,
                expected: dict[str, Decimal] | None = None) -> BooksCheck:
    """Every invariant of ACCOUNTING.md on one target's books (see :data:`INVARIANTS`)."""
    multicurrency = run.multicurrency if multicurrency is None else multicurrency
    txns = run.books(target)
    tb = trial_balance(txns, HOME)
    pr: dict[str, list[str]] = {k: [] for k in INVARIANTS}
    if not txns:
        pr["balanced"].append("no transactions in the books")
    # debits = credits, per transaction, as Beancount sees it
    pr["balanced"] += [f"beancount: {e}" for e in tb.errors]
    pr["balanced"] += [f"unbalanced {t.doc_type} {t.id} {t.doc_number}: {t.total()}" for t in txns if t.total() != 0]
    exp = expected if expected is not None else expected_platform(run.scenario, exclude)

    def diff(name: str, want: Decimal, got: Decimal) -> str:
        return f"{name}: expected {want}, booked {got} (diff {got - want})"

    # clearing mirrors what Stripe still holds; the bank got what was paid out
    for name in ("Stripe Clearing", "Operating Bank"):
        want = exp.get(name, Decimal(0))
        if tb[name] != want:
            pr["clearing"].append(diff(name, want, tb[name]))
    # every other account: the model's amount per category (home currency), or zero
    grouped = {a for g in GROUPS.values() for a in g}
    for name in sorted((set(exp) | set(tb.balances)) - grouped - {"Stripe Clearing", "Operating Bank"}):
        want = exp.get(name, Decimal(0))
        if tb[name] != want:
            extra = "" if name in exp or name in ZERO else " (an account the model does not use)"
            pr["categories"].append(diff(name, want, tb[name]) + extra)
    for gname, accounts in GROUPS.items():
        want = sum((exp.get(a, Decimal(0)) for a in accounts), Decimal(0))
        got = sum((tb[a] for a in accounts), Decimal(0))
        if got != want:
            pr["categories"].append(diff(gname, want, got))
    # no movement booked twice: per document type, the movement a document books (the first
    # Stripe id of its memo, else its document number) and its direction in clearing appear once
    # (a failed payout's out and back are two directions of one id)
    seen = Counter(movement_key(t) for t in txns)
    pr["once"] += [f"{k[0]} {k[1]} ({k[2]}) booked {n} times" for k, n in seen.items() if n > 1 and k[1]]
    # currencies
    foreign = {p.currency for t in txns for p in t.postings if p.currency and p.currency != HOME}
    if not multicurrency and foreign:
        pr["currencies"].append(f"single-currency books hold foreign currencies {sorted(foreign)}")
    if multicurrency and target in ("quickbooks_online", "quickbooks_desktop", "sage"):
        customers = currency_customers(run, target)
        for cur in sorted(foreign):
            if not customers.get(cur):
                pr["currencies"].append(f"{cur} documents but no customer/contact in {cur}")
        names = Counter(n for ns in customers.values() for n in ns)
        pr["currencies"] += [f"customer/contact {n!r} exists in {k} currencies" for n, k in names.items() if k > 1]
        if not foreign:
            pr["currencies"].append("multicurrency books hold no presentment currency at all")
    # Connect: nothing of a connected account's own in the platform's books
    pr["connect"] += connect_leaks(run.scenario, txns)
    return BooksCheck(target, tb, pr, txns)


def expected_exceptions(scenario: Scenario) -> set[tuple[str, str]]:
    """(txn id, 'missing') for every paid-out balance transaction of a seeded missing movement."""
    paid = {t for tids in scenario.payout_txns.values() for t in tids}
    return {(tid, "missing") for tid, (bt, acct) in scenario.balance_transactions.items()
            if acct is None and bt.get("source") in scenario.missing and tid in paid}


def currency_customers(run: Run, target: str) -> dict[str, list[str]]:
    """Currency -> customer/contact names that target holds (multicurrency checks)."""
    out: dict[str, list[str]] = defaultdict(list)
    if target == "quickbooks_online":
        for c in run.qbo.company(REALM).all("Customer"):
            out[(c.get("CurrencyRef") or {}).get("value", HOME)].append(c["DisplayName"])
    elif target == "quickbooks_desktop":
        for name in run.qbd.customers:
            out[run.qbd.customer_currency.get(name, HOME)].append(name)
    elif target == "sage":
        for c in run.sage.records("contacts"):
            out[(c.get("currency") or {}).get("id", HOME)].append(c.get("name") or c.get("displayed_as"))
    return dict(out)


def document_currencies(run: Run, target: str) -> set[str]:
    return {p.currency for t in run.books(target) for p in t.postings if p.currency and p.currency != HOME}
