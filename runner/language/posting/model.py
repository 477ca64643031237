"""Postings: one Stripe money movement as balanced lines in the home currency.

A :class:`Posting` cannot be built unbalanced: its constructor sums the lines
(``Decimal``, debit positive, credit negative) and refuses anything but zero.
Templates read it (``posting.lines``, ``posting.gross``, ``posting.fee``, ...);
:class:`DocumentView` is the same movement seen by one set of books
(single-currency: home amounts; multicurrency: the presentment currency with
the exchange rate to home).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from typing import Any

from runner.core.errors import LedgerflowError
from runner.core.money import quantum

ZERO = Decimal(0)


class PostingError(LedgerflowError):
    """A movement that cannot be turned into balanced postings (says what and why)."""


class UnbalancedPosting(PostingError):
    pass


@dataclass(frozen=True)
class Line:
    account: str
    amount: Decimal            # home currency; debit > 0, credit < 0
    role: str                  # clearing, revenue, fee, refund, dispute, dispute_fee, fx, ...
    memo: str = ""

    @property
    def debit(self) -> Decimal:
        return self.amount if self.amount > 0 else ZERO

    @property
    def credit(self) -> Decimal:
        return -self.amount if self.amount < 0 else ZERO

    def as_dict(self) -> dict[str, Any]:
        return {"account": self.account, "amount": self.amount, "debit": self.debit, "credit": self.credit,
                "role": self.role, "memo": self.memo}


@dataclass(frozen=True)
class Posting:
    """A money movement booked once, keyed by the id of what moved the money."""

    kind: str                          # charge, refund, dispute, dispute_reversal, platform_earning, ...
    key: str                           # ch_..., re_..., txn_... (a dispute's balance transaction), fee_..., po_...
    books: str                         # "platform", or the connected account whose books it belongs to
    date: str                          # YYYY-MM-DD in the project's timezone (the balance transaction's)
    currency: str                      # the home currency: every line's currency
    lines: tuple[Line, ...]
    gross: Decimal                     # home currency, positive (the movement's size before fees)
    fee: Decimal                       # home currency, Stripe's fees on it (negative when returned)
    net: Decimal                       # what it did to the clearing account, signed (+ in, - out)
    settlement_currency: str
    settlement_amount: Decimal         # the balance transaction's amount, signed, settlement currency
    presentment_currency: str
    presentment_amount: Decimal        # positive, presentment currency (booking exponent)
    exchange_rate: Decimal | None      # Stripe's: settlement units per presentment unit, when converted
    home_rate: dict[str, str] | None   # settlement -> home conversion {rate, rate_source, rate_date}, when any
    balance_transaction: str | None
    source: str                        # the Stripe object id (ch_, re_, du_, fee_, fr_, tr_, po_, ...)
    account: str | None                # the Stripe account the movement happened on (None: the platform)
    memo: str = ""
    customer: str | None = None        # Stripe customer id, when the movement has one
    fee_details: tuple[dict, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        total = sum((ln.amount for ln in self.lines), ZERO)
        if total != 0:
            detail = ", ".join(f"{ln.account} {ln.amount}" for ln in self.lines)
            raise UnbalancedPosting(f"{self.kind} {self.key}: the postings do not balance (off by {total} "
                                    f"{self.currency}): {detail}")

    # ---- what templates read --------------------------------------------------------

    @property
    def doc_number(self) -> str:
        """The key's last 21 characters (QuickBooks Online's DocNumber limit; the id's random tail)."""
        return self.key[-21:]

    @property
    def home_amount(self) -> Decimal:
        return self.gross

    @property
    def converted(self) -> bool:
        return self.presentment_currency != self.settlement_currency

    def lines_for(self, *roles: str) -> list[Line]:
        return [ln for ln in self.lines if ln.role in roles]

    def amount_of(self, *roles: str) -> Decimal:
        """The signed sum of the lines with these roles."""
        return sum((ln.amount for ln in self.lines_for(*roles)), ZERO)

    @property
    def fee_lines(self) -> list[Line]:
        return self.lines_for("fee", "dispute_fee", "platform_fee")

    @property
    def journal(self) -> list[dict[str, Any]]:
        """The lines as plain dicts (account, amount, debit, credit, role, memo)."""
        return [ln.as_dict() for ln in self.lines]

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key, "books": self.books, "date": self.date,
                "currency": self.currency, "gross": self.gross, "fee": self.fee, "net": self.net,
                "settlement": {"currency": self.settlement_currency, "amount": self.settlement_amount},
                "presentment": {"currency": self.presentment_currency, "amount": self.presentment_amount},
                "exchange_rate": self.exchange_rate, "home_rate": self.home_rate,
                "balance_transaction": self.balance_transaction, "source": self.source, "account": self.account,
                "memo": self.memo, "lines": self.journal}


def _rounds_back(value: Decimal, target: Decimal, q: Decimal) -> bool:
    """``value`` rounds to ``target`` whether the books round half-up or half-even."""
    return value.quantize(q, rounding=ROUND_HALF_EVEN) == target == value.quantize(q, rounding=ROUND_HALF_UP)


def effective_rate(home: Decimal, foreign: Decimal, home_currency: str, stripe_rate: Decimal | None = None
                   ) -> Decimal:
    """Home units per foreign unit such that ``foreign * rate`` rounds back to exactly
    ``home``: a document in the foreign currency then books the very home amount Stripe
    settled. Stripe's applied rate when it does; else the fewest decimals (6 to 12) that do."""
    if foreign == 0:
        return Decimal(1)
    q = quantum(home_currency)
    if stripe_rate is not None and _rounds_back(abs(foreign) * stripe_rate, abs(home), q):
        return stripe_rate
    exact = abs(home) / abs(foreign)
    for places in range(6, 13):
        r = exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
        if _rounds_back(abs(foreign) * r, abs(home), q):
            return r.quantize(Decimal(1)) if r == r.to_integral_value() else r
    return exact.quantize(Decimal(1).scaleb(-12), rounding=ROUND_HALF_EVEN)


def inverse_rate(home: Decimal, foreign: Decimal, home_currency: str) -> Decimal:
    """Foreign units per home unit, with the fewest decimals (6 to 12) such that
    ``foreign / rate`` rounds back to exactly ``home``."""
    if home == 0:
        return Decimal(1)
    q = quantum(home_currency)
    exact = abs(foreign) / abs(home)
    for places in range(6, 25):
        r = exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
        if r and _rounds_back(abs(foreign) / r, abs(home), q):
            return r
    return exact.quantize(Decimal(1).scaleb(-12), rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True)
class DocumentView:
    """The movement as one set of books takes it.

    Single-currency books: the home currency and home amounts (``exchange_rate`` 1).
    Multicurrency books: the presentment currency and amount, with ``exchange_rate``
    (home units per presentment unit) such that amount x rate is the home amount
    Stripe settled; customers/contacts are per currency (``customer_name``).
    """

    posting: Posting
    multicurrency: bool
    customer_base: str = "Stripe Customers"

    @property
    def foreign(self) -> bool:
        return self.multicurrency and self.posting.presentment_currency != self.posting.currency

    @property
    def currency(self) -> str:
        return self.posting.presentment_currency if self.foreign else self.posting.currency

    @property
    def amount(self) -> Decimal:
        return self.posting.presentment_amount if self.foreign else self.posting.gross

    @property
    def home_amount(self) -> Decimal:
        return self.posting.gross

    @property
    def exchange_rate(self) -> Decimal:
        if not self.foreign:
            return Decimal(1)
        p = self.posting
        stripe = p.exchange_rate if p.settlement_currency == p.currency else None
        return effective_rate(p.gross, p.presentment_amount, p.currency, stripe)

    @property
    def foreign_per_home(self) -> Decimal:
        """The other direction (foreign units per home unit, as Sage's ``exchange_rate`` reads),
        chosen so that amount / rate rounds back to exactly the home amount."""
        if not self.foreign:
            return Decimal(1)
        return inverse_rate(self.posting.gross, self.posting.presentment_amount, self.posting.currency)

    @property
    def is_home(self) -> bool:
        return not self.foreign

    def customer_name(self, base: str | None = None) -> str:
        """One customer per currency: "Stripe Customers" in the home currency, "Stripe Customers EUR" ..."""
        name = base or self.customer_base
        return name if not self.foreign else f"{name} {self.currency}"

    @property
    def customer(self) -> str:
        return self.customer_name()
