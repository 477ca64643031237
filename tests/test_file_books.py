"""The file books (IIF and CSV) end to end: Stripe events through the shipped flows
(stripe-movements-to-iif, stripe-movements-to-csv, and the payout reconciliation's
transfer into the IIF), delivered by the real connectors, the written files read back
by parsers written from the formats' documentation (not from the connectors), and the
books scored by Beancount (tests/standins/ledger.py).

* IIF (Intuit Interchange Format, QuickBooks Desktop "IIF import" reference): a
  tab-separated text file. A row whose first field starts with ``!`` is a header naming
  the columns of the rows of that record type (``!TRNS``, ``!SPL``, ``!ENDTRNS``); a
  transaction is one ``TRNS`` row, its ``SPL`` (distribution) rows, and ``ENDTRNS``.
  TRNSTYPE, ACCNT and AMOUNT are required; DATE is MM/DD/YY or MM/DD/YYYY; AMOUNT is
  signed (debit positive) and a transaction's rows sum to zero. Fields may be quoted.
* CSV (QuickBooks Online "Import journal entries"): Journal No., Journal Date
  (MM/DD/YYYY), Account Name, Debits, Credits, Description, Name; the rows sharing a
  Journal No. are one entry and its debits equal its credits.

The truth is computed here from the balance transactions (Stripe's numbers), never
from ledgerflow's postings.
"""

from __future__ import annotations

import csv
import io
import shutil
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from connectors.base import ErrorKind, Item, Runtime
from connectors.files.csv_file import CsvConnector
from tests.conftest import ROOT
from tests.standins.ledger import JournalTxn, Posting, trial_balance

T0 = 1767225600          # 2026-01-01 00:00 UTC (still Dec 31 in New York)
ACCT = "acct_1SellerDirect0001"


# ---- parsers --------------------------------------------------------------------------

class FormatError(ValueError):
    pass


def _iif_fields(line: str) -> list[str]:
    out = []
    for f in line.split("\t"):
        if len(f) >= 2 and f[0] == f[-1] == '"':
            f = f[1:-1].replace('""', '"')
        out.append(f)
    return out


def _iif_date(text: str) -> str:
    for fmt in ("%m/%d/%Y", "%m/%d/%y"):
        try:
            return datetime.strptime(text.strip(), fmt).date().isoformat()
        except ValueError:
            continue
    raise FormatError(f"IIF DATE {text!r}: expected MM/DD/YY or MM/DD/YYYY")


def parse_iif(text: str, source: str = "iif") -> list[JournalTxn]:
    """TRNS/SPL/ENDTRNS transactions (any TRNSTYPE: GENERAL JOURNAL, TRANSFER, ...)."""
    headers: dict[str, list[str]] = {}
    txns: list[JournalTxn] = []
    current: JournalTxn | None = None
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        fields = _iif_fields(raw)
        key = fields[0].strip()
        if key.startswith("!"):
            headers[key[1:]] = [c.strip() for c in fields[1:]]
            continue
        if key == "ENDTRNS":
            if current is None:
                raise FormatError(f"{source}:{n}: ENDTRNS without TRNS")
            txns.append(current)
            current = None
            continue
        if key not in ("TRNS", "SPL"):
            raise FormatError(f"{source}:{n}: unknown record type {key!r}")
        if key not in headers:
            raise FormatError(f"{source}:{n}: {key} row before its !{key} header")
        row = dict(zip(headers[key], fields[1:]))
        for col in ("TRNSTYPE", "ACCNT", "AMOUNT"):
            if not row.get(col, "").strip():
                raise FormatError(f"{source}:{n}: {col} is required")
        if key == "TRNS":
            if current is not None:
                raise FormatError(f"{source}:{n}: TRNS before the previous transaction's ENDTRNS")
            current = JournalTxn(id=f"{source}#{n}", date=_iif_date(row.get("DATE", "")),
                                 doc_type=f"IIF {row['TRNSTYPE']}", memo=row.get("MEMO", ""),
                                 doc_number=row.get("DOCNUM") or None)
        elif current is None:
            raise FormatError(f"{source}:{n}: SPL outside a transaction")
        current.postings.append(Posting(row["ACCNT"], Decimal(row["AMOUNT"].replace(",", ""))))
    if current is not None:
        raise FormatError(f"{source}: the last transaction has no ENDTRNS")
    return txns


def parse_journal_csv(text: str, source: str = "csv") -> list[JournalTxn]:
    """QuickBooks Online journal-entry import rows, grouped by Journal No."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    need = {"Journal No.", "Journal Date", "Account Name", "Debits", "Credits"}
    if not need <= set(reader.fieldnames or []):
        raise FormatError(f"{source}: columns {reader.fieldnames}, expected at least {sorted(need)}")
    txns: list[JournalTxn] = []
    by_no: dict[str, JournalTxn] = {}
    for n, row in enumerate(reader, 2):
        no = row["Journal No."]
        date = datetime.strptime(row["Journal Date"], "%m/%d/%Y").date().isoformat()
        debit = Decimal(row["Debits"]) if row["Debits"] else Decimal(0)
        credit = Decimal(row["Credits"]) if row["Credits"] else Decimal(0)
        if debit and credit or debit < 0 or credit < 0:
            raise FormatError(f"{source}:{n}: a line is a debit or a credit, not both nor negative")
        txn = by_no.get(no)
        if txn is None:
            txn = by_no[no] = JournalTxn(id=f"{source}#{no}", date=date, doc_type="JournalEntry",
                                         memo=row.get("Description", ""), doc_number=no)
            txns.append(txn)
        elif txn.date != date:
            raise FormatError(f"{source}:{n}: journal {no} has rows on two dates")
        txn.postings.append(Posting(row["Account Name"], debit - credit))
    return txns


def read_books(directory: Path, kind: str) -> list[JournalTxn]:
    txns: list[JournalTxn] = []
    for path in sorted(directory.glob(f"*.{kind}")):
        text = path.read_bytes().decode("utf-8")
        txns += parse_iif(text, path.name) if kind == "iif" else parse_journal_csv(text, path.name)
    return txns


# ---- the parsers on hand-written files (the formats as documented) ---------------------

def test_iif_parser_reads_quickbooks_desktop_journals_and_transfers():
    text = ('!TRNS\tTRNSTYPE\tDATE\tACCNT\tAMOUNT\tMEMO\r\n!SPL\tTRNSTYPE\tDATE\tACCNT\tAMOUNT\tMEMO\r\n!ENDTRNS\r\n'
            'TRNS\tGENERAL JOURNAL\t1/15/26\tWages Expense\t100.00\tPayroll\r\n'
            'SPL\tGENERAL JOURNAL\t1/15/26\t"Payable, net"\t-100.00\t\r\nENDTRNS\r\n'
            'TRNS\tTRANSFER\t01/16/2026\tChecking\t-5.00\t\r\nSPL\tTRANSFER\t01/16/2026\tSavings\t5.00\t\r\nENDTRNS\r\n')
    a, b = parse_iif(text)
    assert (a.date, a.doc_type, [(p.account, p.amount) for p in a.postings]) == \
        ("2026-01-15", "IIF GENERAL JOURNAL", [("Wages Expense", Decimal("100.00")), ("Payable, net", Decimal("-100.00"))])
    assert b.date == "2026-01-16" and b.total() == 0
    with pytest.raises(FormatError, match="ENDTRNS"):
        parse_iif(text.rsplit("ENDTRNS", 1)[0])
    with pytest.raises(FormatError, match="SPL outside"):
        parse_iif("!SPL\tTRNSTYPE\tACCNT\tAMOUNT\r\nSPL\tGENERAL JOURNAL\tX\t1\r\n")


def test_csv_journal_layout_is_quickbooks_online_journal_import(tmp_path):
    c = CsvConnector("books", {"directory": "out"}, Runtime(project_dir=tmp_path, settings={"timezone": "UTC"}))
    ok = Item(1, "k1", "journal", {"date": "2026-01-31", "number": "1PgafuB7WZ01zgkWXYmPNZs8", "memo": "Stripe, \"x\"",
                                   "lines": [{"account": "Sales", "amount": Decimal("-20.00")},
                                             {"account": "Stripe Clearing", "amount": Decimal("19.12")},
                                             {"account": "Stripe Fees", "amount": Decimal("0.88"), "memo": "fee"}]})
    bad = Item(2, "k2", "journal", {"date": "2026-01-31", "number": "2",
                                    "lines": [{"account": "A", "amount": Decimal("1")},
                                              {"account": "B", "amount": Decimal("-2")}]})
    o1, o2 = c.deliver([ok, bad])
    assert o1.ok and not o2.ok and o2.error.kind == ErrorKind.PERMANENT and "sum to zero" in str(o2.error)
    again = c.deliver([ok])
    assert again[0].ok and again[0].detail["duplicate"]
    [path] = (tmp_path / "out").glob("books-journal-*.csv")
    assert path.read_bytes().decode() == (
        "Journal No.,Journal Date,Account Name,Debits,Credits,Description,Name\r\n"
        '1PgafuB7WZ01zgkWXYmPNZs8,01/31/2026,Sales,,20.00,"Stripe, ""x""",\r\n'
        '1PgafuB7WZ01zgkWXYmPNZs8,01/31/2026,Stripe Clearing,19.12,,"Stripe, ""x""",\r\n'
        "1PgafuB7WZ01zgkWXYmPNZs8,01/31/2026,Stripe Fees,0.88,,fee,\r\n")
    [txn] = parse_journal_csv(path.read_text())
    assert txn.total() == 0 and txn.date == "2026-01-31"


# ---- a Stripe month for the platform ---------------------------------------------------

def bt(id_, amount, category, source, fee=0, rate=None, fee_type="stripe_fee", t=T0):
    return {"id": id_, "object": "balance_transaction", "amount": amount, "currency": "usd", "fee": fee,
            "fee_details": [{"amount": fee, "currency": "usd", "type": fee_type}] if fee else [],
            "net": amount - fee, "exchange_rate": rate, "reporting_category": category,
            "type": {"charge": "charge", "refund": "refund", "dispute": "adjustment", "dispute_reversal": "adjustment",
                     "platform_earning": "application_fee", "platform_earning_refund": "application_fee_refund",
                     "transfer": "transfer", "payout": "payout", "payout_reversal": "payout_failure"}[category],
            "created": t, "source": source}


class Month:
    """Events, each with the balance transaction a look-up would fetch, and Stripe's truth."""

    def __init__(self):
        self.events: list[tuple[dict, dict | None]] = []
        self.bts: list[dict] = []              # every platform balance transaction (the truth)
        self.n = 0

    def event(self, type_, obj, bt_=None, account=None, truth=True):
        self.n += 1
        ev = {"id": f"evt_{self.n:04d}", "object": "event", "type": type_, "created": T0 + self.n,
              "data": {"object": obj}}
        if account:
            ev["account"] = account
        self.events.append((ev, bt_))
        if bt_ is not None and truth and not account and bt_ not in self.bts:
            self.bts.append(bt_)
        return ev

    def charge(self, id_, amount, currency, usd, fee, rate=None, account=None, **extra):
        b = bt(f"txn_{id_}", usd, "charge", id_, fee=fee, rate=rate)
        obj = {"id": id_, "object": "charge", "amount": amount, "currency": currency, "captured": True, "paid": True,
               "status": "succeeded", "created": T0, "balance_transaction": b["id"], "customer": None,
               "transfer_data": None, "application_fee_amount": None, **extra}
        self.event("charge.succeeded", obj, b, account)
        return obj, b

    def refund(self, id_, charge, amount, currency, usd, *types, rate=None):
        b = bt(f"txn_{id_}", -usd, "refund", id_, rate=rate)
        obj = {"id": id_, "object": "refund", "amount": amount, "currency": currency, "charge": charge,
               "status": "succeeded", "created": T0, "balance_transaction": b["id"]}
        for t in types or ("refund.created",):
            self.event(t, obj, b)

    def dispute(self, id_, charge, amount, currency, usd, rate, won=False):
        w = bt(f"txn_{id_[3:6]}W1", -usd, "dispute", id_, fee=1500, rate=rate)
        obj = {"id": id_, "object": "dispute", "amount": amount, "currency": currency, "charge": charge,
               "created": T0, "status": "lost", "balance_transactions": [w]}
        self.event("charge.dispute.funds_withdrawn", obj, None)
        self.bts.append(w)
        if won:
            r = bt(f"txn_{id_[3:6]}R1", usd, "dispute_reversal", id_, fee=-1500, rate=rate)
            self.event("charge.dispute.funds_reinstated", {**obj, "status": "won", "balance_transactions": [w, r]},
                       None)
            self.bts.append(r)


def platform_month() -> tuple[Month, dict]:
    m = Month()
    m.charge("ch_USDCH00000000000000001", 2000, "usd", 2000, 88)
    m.charge("ch_EURCH00000000000000001", 2500, "eur", 2709, 109, rate="1.0834")
    m.charge("ch_JPYCH00000000000000001", 3000, "jpy", 2034, 89, rate="0.00678")        # ¥3,000 = $20.34
    m.charge("ch_BHDCH00000000000000001", 10000, "bhd", 2660, 107, rate="2.6596")      # BHD 10.000 = $26.60
    # a destination charge (agent), transfer_data[amount] form: $50 of which $45 is transferred to the
    # seller, $5 is ours (with application_fee_amount Stripe would transfer $50 and collect $5 back as
    # an application fee of its own)
    m.charge("ch_DSTCH00000000000000001", 5000, "usd", 5000, 175,
             transfer_data={"destination": "acct_1SellerDest00001", "amount": 4500})
    tr = bt("txn_tr_dst", -4500, "transfer", "tr_DSTTR0000000000000001")
    m.event("transfer.created", {"id": "tr_DSTTR0000000000000001", "object": "transfer", "amount": 4500,
                                 "currency": "usd", "destination": "acct_1SellerDest00001", "created": T0,
                                 "balance_transaction": tr["id"]}, tr)
    # a direct charge on a connected account: the seller's sale; the platform books its application fee
    m.charge("ch_DIRCH00000000000000001", 3000, "usd", 3000, 317, account=ACCT)
    fee = bt("txn_fee_dir", 200, "platform_earning", "fee_DIRFEE00000000000001")
    fee_obj = {"id": "fee_DIRFEE00000000000001", "object": "application_fee", "account": ACCT, "amount": 200,
               "amount_refunded": 0, "currency": "usd", "charge": "ch_DIRCH00000000000000001", "created": T0,
               "balance_transaction": fee["id"], "refunds": {"object": "list", "data": []}}
    m.event("application_fee.created", fee_obj, fee)
    fr = bt("txn_fr_dir", -100, "platform_earning_refund", "fr_DIRFR0000000000000001")
    m.event("application_fee.refunded", {**fee_obj, "amount_refunded": 100, "refunds": {"object": "list", "data": [
        {"id": "fr_DIRFR0000000000000001", "object": "fee_refund", "amount": 100, "currency": "usd",
         "created": T0 + 5, "fee": fee_obj["id"], "balance_transaction": fr["id"]}]}}, fr)
    # two partial refunds of the USD charge ($5 then $5: $10, not 5 + 10); refund.updated repeats the first
    m.refund("re_USDRE00000000000000001", "ch_USDCH00000000000000001", 500, "usd", 500,
             "refund.created", "refund.updated")
    m.event("charge.refunded", {"id": "ch_USDCH00000000000000001", "object": "charge", "amount": 2000,
                                "amount_refunded": 500, "currency": "usd", "balance_transaction": "txn_x"}, None)
    m.refund("re_USDRE00000000000000002", "ch_USDCH00000000000000001", 500, "usd", 500)
    m.event("charge.refunded", {"id": "ch_USDCH00000000000000001", "object": "charge", "amount": 2000,
                                "amount_refunded": 1000, "currency": "usd", "balance_transaction": "txn_x"}, None)
    m.refund("re_JPYRE00000000000000001", "ch_JPYCH00000000000000001", 1000, "jpy", 678, rate="0.00678")
    # disputes: the EUR one lost, the BHD one won
    m.dispute("dp_EURDP00000000000000001", "ch_EURCH00000000000000001", 2500, "eur", 2709, "1.0834")
    m.dispute("dp_BHDDP00000000000000001", "ch_BHDCH00000000000000001", 10000, "bhd", 2660, "2.6596",
              won=True)
    # Stripe re-sends an event, out of order
    m.events.append(m.events[1])
    m.events.insert(0, m.events[3])
    # the payout pays out the net of everything
    total = sum(b["net"] for b in m.bts)
    pay = bt("txn_po_1", -total, "payout", "po_MONTHPO000000000000001", t=T0 + 86400 * 3)
    payout = {"id": "po_MONTHPO000000000000001", "object": "payout", "amount": total, "currency": "usd",
              "arrival_date": T0 + 86400 * 5, "automatic": True, "status": "paid", "created": T0 + 86400 * 3,
              "balance_transaction": pay["id"], "failure_balance_transaction": None}
    m.event("payout.paid", payout, pay, truth=False)
    return m, payout


def truth(bts: list[dict]) -> dict[str, Decimal]:
    """What the books must say, from Stripe's balance transactions (minor units -> dollars)."""
    cents = defaultdict(int)
    for b in bts:
        cat = b["reporting_category"]
        cents[cat] += b["amount"]
        cents["fee:" + ("dispute" if cat.startswith("dispute") else "stripe")] += b["fee"]
        cents["net"] += b["net"]
    return {k: Decimal(v) / 100 for k, v in cents.items()}


@pytest.fixture
def app(tmp_path, monkeypatch):
    """The shipped ledgerflow.yaml with only the file books' flows (and the payout reconciliation)."""
    root = tmp_path / "project"
    (root / "flows").mkdir(parents=True)
    shutil.copy(ROOT / "ledgerflow.yaml", root / "ledgerflow.yaml")
    for name in ("stripe-movements-to-iif.yaml", "stripe-movements-to-csv.yaml", "payout-reconciliation.yaml"):
        shutil.copy(ROOT / "flows" / name, root / "flows" / name)
    # a project that keeps only the file books: the reconciliation's journal routes into the other books go
    recon = root / "flows" / "payout-reconciliation.yaml"
    data = yaml.safe_load(recon.read_text())
    data["routes"] = [r for r in data["routes"] if r["target"] in ("iif", "csv")]
    recon.write_text(yaml.safe_dump(data, sort_keys=False))
    shutil.copytree(ROOT / "mappings" / "csv", root / "mappings" / "csv")
    shutil.copytree(ROOT / "mappings" / "iif", root / "mappings" / "iif")
    monkeypatch.chdir(root)
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", f"sqlite:///{tmp_path / 'store.db'}")
    monkeypatch.delenv("STRIPE_API_KEY", raising=False)
    from runner.app import App
    from runner.language.spec import load_project
    a = App(load_project(root / "ledgerflow.yaml"))
    yield a
    a.close()


def deliver(app, events, recon_payouts=()) -> list:
    """Plan every event through every flow it triggers (as the dispatcher does), plus the payout
    reconciliation's transfer per paid payout, and hand all operations, duplicates included, to
    the connectors."""
    ops = []
    for ev, bt_ in events:
        for flow in app.flows_for(ev["type"]):
            pinned = {"balance_transaction": bt_} if bt_ is not None else None
            ops += app.plan_event(ev, flow, pinned_lookups=pinned)
    recon = app.flow("payout-reconciliation")
    for payout, arrival in recon_payouts:
        params = {"reconciled": True, "mode": "per_transaction", "journal": None, "currency": "usd", "date": arrival,
                  "transfer": {"from_account": "Stripe Clearing", "to_account": "Operating Bank",
                               "amount": Decimal(payout["amount"]) / 100, "date": arrival,
                               "memo": f"Stripe payout {payout['id']}", "currency": "usd"}}
        ops += app.plan_event({"id": f"recon_{payout['id']}", "object": "event", "type": "payout.reconciled",
                               "created": payout["created"], "data": {"object": payout}}, recon, params=params)
    by_conn = defaultdict(list)
    for i, op in enumerate(ops):
        by_conn[op.connection].append(Item(i, op.idempotency_key, op.action, op.payload))
    for conn, items in by_conn.items():
        outcomes = app.connector(conn).deliver(items)
        assert all(o.ok for o in outcomes), [str(o.error) for o in outcomes if not o.ok]
    return ops


def check_books(txns: list[JournalTxn], t: dict[str, Decimal], bank: Decimal):
    tb = trial_balance(txns)
    assert tb.errors == []                                          # every entry balances (Beancount)
    assert all(txn.total() == 0 for txn in txns)
    assert sum(tb.balances.values(), Decimal(0)) == 0               # debits = credits
    assert tb["Stripe Clearing"] == 0                               # the payout nets clearing to zero
    assert tb["Operating Bank"] == bank
    # revenue and the rest equal Stripe's balance transactions, in dollars
    dest_gross, dest_fee = Decimal("50.00"), Decimal("5.00")
    assert tb["Sales"] == -(t["charge"] - dest_gross)
    assert tb["Application Fee Revenue"] == -(dest_fee + t["platform_earning"] + t["platform_earning_refund"])
    assert tb["Connected Accounts Payable"] == -(dest_gross - dest_fee) - t["transfer"] == 0
    assert tb["Sales Refunds"] == -t["refund"] == Decimal("16.78")   # $5 + $5 + ¥1,000 at Stripe's rate
    assert tb["Chargebacks"] == -(t["dispute"] + t["dispute_reversal"]) == Decimal("27.09")   # the lost one
    assert tb["Dispute Fees"] == t["fee:dispute"] == Decimal("15.00")
    assert tb["Stripe Fees"] == t["fee:stripe"]
    return tb


def test_a_platform_month_balances_in_the_iif_with_the_reconciliations_transfer(app, tmp_path):
    m, payout = platform_month()
    ops = deliver(app, m.events, recon_payouts=[(payout, "2026-01-05")])
    iif_ops = [op for op in ops if op.connection == "iif"]
    # payouts come from the reconciliation only; the connected account's direct charge is not booked
    assert [op.flow for op in iif_ops if op.action == "transfer"] == ["payout-reconciliation"]
    assert not any(op.posting and op.posting["account"] == ACCT for op in ops)
    txns = read_books(app.project.dir / "out" / "iif", "iif")
    # one entry per movement: 14 platform movements + the payout's transfer, duplicates written once
    assert len(txns) == len(m.bts) + 1
    assert len({op.idempotency_key for op in iif_ops}) == len(txns) < len(iif_ops)
    assert [t.doc_type for t in txns].count("IIF TRANSFER") == 1
    t = truth(m.bts)
    check_books(txns, t, bank=Decimal(payout["amount"]) / 100)
    # the JPY charge is $20.34 of sales, never ¥3,000 booked as dollars
    jpy = next(x for x in txns if x.memo.startswith("Stripe charge ch_JPY"))
    assert [(p.account, p.amount) for p in jpy.postings] == [("Sales", Decimal("-20.34")),
                                                             ("Stripe Clearing", Decimal("19.45")),
                                                             ("Stripe Fees", Decimal("0.89"))]


def test_a_platform_month_balances_in_the_csv_journal_with_its_payout(app):
    m, payout = platform_month()
    ops = deliver(app, m.events)
    csv_ops = [op for op in ops if op.connection == "csv"]
    txns = read_books(app.project.dir / "out" / "csv", "csv")
    assert len(txns) == len(m.bts) + 1                                # the movements and the payout
    assert len({op.idempotency_key for op in csv_ops}) == len(txns)
    t = truth(m.bts)
    check_books(txns, t, bank=Decimal(payout["amount"]) / 100)


def test_charge_refunded_books_nothing_in_the_file_books(app):
    assert not [f.name for f in app.flows_for("charge.refunded")]


def test_a_failed_payout_leaves_clearing_as_stripe_left_the_balance(app):
    """A payout that fails before payout.paid: the CSV books the payout and its reversal (net zero);
    one that failed after payout.paid books the payout once, not twice."""
    m = Month()
    m.charge("ch_USDCH00000000000000009", 2000, "usd", 2000, 88)
    po = {"id": "po_FAILPO0000000000000001", "object": "payout", "amount": 1912, "currency": "usd",
          "arrival_date": T0 + 86400, "automatic": True, "status": "failed", "created": T0 + 3600,
          "balance_transaction": "txn_po_fail", "failure_balance_transaction": "txn_po_fail_back"}
    back = bt("txn_po_fail_back", 1912, "payout_reversal", po["id"], t=T0 + 86400)
    m.event("payout.failed", po, back)
    deliver(app, m.events)
    tb = trial_balance(read_books(app.project.dir / "out" / "csv", "csv"))
    assert tb.errors == [] and tb["Operating Bank"] == 0 and tb["Stripe Clearing"] == Decimal("19.12")
    # now the same payout's paid event arrives late, and a second failure notice: nothing new
    paid = bt("txn_po_fail", -1912, "payout", po["id"], t=T0 + 3600)
    later = Month()
    later.event("payout.paid", {**po, "status": "paid"}, paid)
    later.event("payout.failed", po, back)
    deliver(app, later.events)
    tb = trial_balance(read_books(app.project.dir / "out" / "csv", "csv"))
    assert tb["Operating Bank"] == 0 and tb["Stripe Clearing"] == Decimal("19.12")
