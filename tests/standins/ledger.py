"""A target's books as double-entry postings, scored by an engine we did not write.

Each vendor stand-in (QuickBooks Online, QuickBooks Desktop, Sage) and each file
parser (IIF, CSV) turns what the target *received* into :class:`JournalTxn`
rows the way that vendor posts them: one posting per account touched, amounts
in the company's home currency, debit positive, credit negative. The books
harness then writes them as a Beancount ledger and lets Beancount check that
every transaction balances and compute the trial balance, so the proof does
not share ledgerflow's own arithmetic.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Iterable


@dataclass
class Posting:
    account: str                      # the account's name in the target's chart of accounts
    amount: Decimal                   # home currency, debit > 0, credit < 0
    currency: str | None = None       # the document's currency when it is foreign
    foreign_amount: Decimal | None = None


@dataclass
class JournalTxn:
    id: str                           # the target's own id (TxnID, Id, ...)
    date: str                         # YYYY-MM-DD
    doc_type: str                     # SalesReceipt, JournalEntry, IIF TRNS, ...
    memo: str = ""
    doc_number: str | None = None
    postings: list[Posting] = field(default_factory=list)

    def total(self) -> Decimal:
        return sum((p.amount for p in self.postings), Decimal(0))


_SAFE = re.compile(r"[^A-Za-z0-9-]+")


def account_path(name: str) -> str:
    """A Beancount account for a target account name: Assets:X-Y (one root for all: the
    trial balance only needs each account's sum, not its type)."""
    cleaned = _SAFE.sub("-", name).strip("-") or "Unnamed"
    if not cleaned[0].isalpha() or not cleaned[0].isupper():
        cleaned = "A" + cleaned
    return "Assets:" + cleaned[0].upper() + cleaned[1:]


def to_beancount(txns: Iterable[JournalTxn], home_currency: str) -> str:
    txns = list(txns)
    accounts = sorted({p.account for t in txns for p in t.postings})
    out = [f'option "operating_currency" "{home_currency}"', ""]
    for a in accounts:
        out.append(f"1970-01-01 open {account_path(a)}")
    out.append("")
    for t in sorted(txns, key=lambda t: (t.date, t.id)):
        memo = (t.memo or "").replace('"', "'")
        out.append(f'{t.date} * "{t.doc_type} {t.id}" "{memo}"')
        for p in t.postings:
            out.append(f"  {account_path(p.account)}  {p.amount} {home_currency}")
        out.append("")
    return "\n".join(out)


@dataclass
class TrialBalance:
    balances: dict[str, Decimal]      # target account name -> home-currency balance (debit > 0)
    errors: list[str]                 # Beancount's errors (an unbalanced transaction, ...)

    def __getitem__(self, account: str) -> Decimal:
        return self.balances.get(account, Decimal(0))


def trial_balance(txns: Iterable[JournalTxn], home_currency: str = "USD") -> TrialBalance:
    """Load the ledger into Beancount; its errors, and each account's balance as Beancount
    computes it."""
    from beancount import loader
    from beancount.core import data, realization

    txns = list(txns)
    names = {account_path(p.account): p.account for t in txns for p in t.postings}
    entries, errors, _options = loader.load_string(to_beancount(txns, home_currency))
    real = realization.realize(entries)
    balances: dict[str, Decimal] = defaultdict(Decimal)
    for path, name in names.items():
        node = realization.get(real, path)
        if node is None:
            continue
        for pos in node.balance:
            if pos.units.currency == home_currency:
                balances[name] += pos.units.number
    _ = data
    return TrialBalance(dict(balances), [getattr(e, "message", str(e)) for e in errors])


CENT = Decimal("0.01")


def to_home(foreign: list[Decimal], rate: Decimal, *, absorb: int) -> list[Decimal]:
    """Home-currency amounts for one document's postings (foreign amounts summing to zero),
    each ``amount x rate`` rounded half-up to the cent, line by line. Rounding each line can
    leave the document a cent or so out of balance; the posting at index ``absorb`` takes
    the difference, so every document balances in the home currency."""
    from decimal import ROUND_HALF_UP

    home = [(a * rate).quantize(CENT, rounding=ROUND_HALF_UP) for a in foreign]
    diff = -sum(home, Decimal(0))
    if diff and home:
        home[absorb] += diff
    return home
