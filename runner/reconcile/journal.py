"""Payout bookings (pure): the clearing -> bank transfer and the payout's journal.

Amounts are Decimal in major units; a journal line's amount is a debit when
positive and a credit when negative, and every journal sums to zero.

* summary mode: bank +payout; per reporting category -sum(gross); fees
  +sum(fee). Because payout = sum(net) = sum(gross - fee), it balances.
* per-transaction mode: the transfer (clearing -> bank, reversed for a
  negative payout), plus, when needed, a journal against the clearing account
  for what no flow booked as it happened: every fee, the categories booked
  with the payout, and FX differences within tolerance (to the FX account).

Converting to another currency rounds each line once, to that currency's
exponent; what rounding leaves over goes to the FX gain/loss account.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from runner.core.fx import Rate
from runner.core.money import from_minor, round_money
from runner.reconcile.policy import Policy


@dataclass
class Totals:
    """Running sums over a payout's transactions, in minor units of the payout currency."""

    currency: str
    count: int = 0
    net: int = 0
    fee: int = 0                                      # fees the payout's journal still has to book
    all_fees: int = 0
    gross: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    unbooked_gross: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    fx_diff: Decimal = Decimal(0)                     # major units, clearing correction
    posted: dict | None = None                        # summary mode: (account, role) -> home amount, from postings
    posted_error: str | None = None

    def add(self, txn: dict, booked_with_payout: bool, *, fee_booked: bool = False) -> None:
        cat = txn.get("reporting_category") or txn.get("type") or "other"
        self.count += 1
        self.net += int(txn["net"])
        self.all_fees += int(txn["fee"])
        if not fee_booked:          # the accounting model books a movement's fee with it
            self.fee += int(txn["fee"])
        self.gross[cat] += int(txn["amount"])
        self.counts[cat] += 1
        if booked_with_payout:
            self.unbooked_gross[cat] += int(txn["amount"])


@dataclass
class Line:
    account: str
    amount: Decimal
    memo: str = ""

    def as_dict(self) -> dict:
        return {"account": self.account, "amount": self.amount, "memo": self.memo}


def summary_lines(totals: Totals, payout_amount: int, policy: Policy) -> list[Line]:
    cur = totals.currency
    lines = [Line(policy.ledger["bank"], from_minor(payout_amount, cur), "Stripe payout")]
    for cat in sorted(totals.gross):
        if totals.gross[cat]:
            lines.append(Line(policy.account_for(cat), -from_minor(totals.gross[cat], cur),
                              f"{cat} ({totals.counts[cat]} transactions)"))
    if totals.all_fees:
        lines.append(Line(policy.ledger["fees"], from_minor(totals.all_fees, cur), "Stripe fees"))
    return lines


def posted_summary_lines(totals: Totals, policy: Policy) -> list[Line]:
    """Summary mode on the accounting model: every transaction's posting summed by account (home
    currency, as the per-transaction flows would book them); the clearing account's total, which is
    what the payout moved, goes to the bank instead. Balanced because each posting is."""
    clearing = policy.ledger["clearing"]
    bank = sum((v for (acct, role), v in totals.posted.items() if role == "clearing"), Decimal(0))
    lines = [Line(policy.ledger["bank"], bank, "Stripe payout")]
    sums: dict[str, Decimal] = defaultdict(Decimal)
    for (acct, role), v in totals.posted.items():
        if role != "clearing":
            sums[acct] += v
    lines += [Line(acct, v, "") for acct, v in sorted(sums.items()) if v and acct != clearing]
    return [l for l in lines if l.amount]


def clearing_lines(totals: Totals, policy: Policy) -> list[Line]:
    """Per-transaction mode: fees, categories booked with the payout, FX differences."""
    cur = totals.currency
    lines: list[Line] = []
    if totals.fee:
        lines.append(Line(policy.ledger["fees"], from_minor(totals.fee, cur), "Stripe fees"))
    for cat in sorted(totals.unbooked_gross):
        if totals.unbooked_gross[cat]:
            lines.append(Line(policy.account_for(cat), -from_minor(totals.unbooked_gross[cat], cur),
                              f"{cat} ({totals.counts[cat]} transactions)"))
    if totals.fx_diff:
        lines.append(Line(policy.fx_account, -totals.fx_diff, "FX differences within tolerance"))
    if not lines:
        return []
    total = sum((l.amount for l in lines), Decimal(0))
    if total:
        lines.insert(0, Line(policy.ledger["clearing"], -total, "Stripe balance"))
    return [l for l in lines if l.amount]


def convert_lines(lines: list[Line], rate: Rate, policy: Policy) -> list[Line]:
    """The lines in ``rate.quote``, each rounded once; rounding's remainder to the FX account."""
    out = [Line(l.account, round_money(l.amount * rate.rate, rate.quote),
                f"{l.memo} @ {rate.rate} {rate.base}/{rate.quote} ({rate.source} {rate.date})".strip())
           for l in lines]
    rest = sum((l.amount for l in out), Decimal(0))
    if rest:
        out.append(Line(policy.fx_account, -rest, "FX rounding"))
    return out


def transfer(payout_amount: int, currency: str, policy: Policy) -> dict:
    """Clearing -> bank; a negative payout (Stripe debits the bank) goes the other way."""
    amount = from_minor(payout_amount, currency)
    if amount >= 0:
        return {"from_account": policy.ledger["clearing"], "to_account": policy.ledger["bank"], "amount": amount}
    return {"from_account": policy.ledger["bank"], "to_account": policy.ledger["clearing"], "amount": -amount}
