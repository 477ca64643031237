"""Deterministic Stripe scenarios with known truth, for the Stripe stand-in.

A :class:`Scenario` holds Stripe objects (charges, refunds, disputes,
application fees, transfers, balance transactions, payouts, accounts), the
events the runner received about them, what the runner booked (one delivery
per booked object: amount, currency, and the rate it used) and the truth: each
payout's expected status and every seeded exception as
``(balance transaction id, classification)``.

``build("clean")`` books everything correctly; ``build("dirty")`` seeds one of
each discrepancy. Same input, same ids, same amounts, every time.

Sign conventions follow Stripe: a balance transaction's ``amount`` is gross in
the settlement currency (negative for money out), ``fee`` is positive when
Stripe charged it, ``net = amount - fee``, and an automatic payout's amount is
the sum of the nets of the transactions it pays out. The payout's own
balance transaction (type ``payout``, ``net = -amount``) is listed with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from runner.core.money import api_exponent, from_minor

from .stripe_api import StripeStandin

T0 = 1767268800          # 2026-01-01T12:00:00Z
DAY = 86400
HOME = "USD"


@dataclass
class Booking:
    """What the runner booked for one Stripe object: its event and (optionally) a delivery."""

    event: dict
    account: str | None
    amount: Decimal | None = None     # booked amount in ``currency`` (major units); None: no delivery row
    currency: str | None = None
    rate: Decimal | None = None       # rate the booking used (settlement per booked unit), when any
    state: str = "sent"               # the delivery's state


@dataclass
class Scenario:
    name: str
    objects: list[tuple[dict, str | None, str | None]] = field(default_factory=list)   # (obj, account, payout)
    bookings: list[Booking] = field(default_factory=list)
    accounts: list[str] = field(default_factory=list)
    payout_status: dict[str, str] = field(default_factory=dict)        # payout id -> expected status
    exceptions: set[tuple[str, str]] = field(default_factory=set)      # (txn id, classification)
    transactions: dict[str, int] = field(default_factory=dict)         # payout id -> included txns

    def standin(self, standin: StripeStandin | None = None) -> StripeStandin:
        s = standin or StripeStandin()
        for acct in self.accounts:
            s.add({"id": acct, "object": "account", "created": T0 - 400 * DAY, "type": "express",
                   "country": "US", "default_currency": "usd", "charges_enabled": True, "payouts_enabled": True,
                   "details_submitted": True, "metadata": {}})
        for obj, account, payout in self.objects:
            s.add(obj, account=account, payout=payout)
        return s


def minor(amount: str, currency: str) -> int:
    return int(Decimal(amount).scaleb(api_exponent(currency)))


class Builder:
    """Makes Stripe-shaped objects with deterministic ids and times."""

    def __init__(self, name: str):
        self.sc = Scenario(name)
        self._n = 0
        self._t = T0 - 5 * DAY

    def _id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self.sc.name[:3]}{self._n:07d}"

    def _time(self) -> int:
        self._t += 97
        return self._t

    def _event(self, type_: str, obj: dict, account: str | None, created: int) -> dict:
        ev = {"id": "evt_" + obj["id"].split("_", 1)[1] + "_" + type_.replace(".", "_"), "object": "event",
              "api_version": "2024-06-20", "created": created, "data": {"object": obj}, "livemode": False,
              "pending_webhooks": 0, "request": {"id": None, "idempotency_key": None}, "type": type_}
        if account:
            ev["account"] = account
        return ev

    def _txn(self, *, type_: str, category: str, amount: int, fee: int, currency: str, source: str | None,
             created: int, rate: Decimal | None = None, description: str | None = None) -> dict:
        fee_details = [] if not fee else [{"amount": fee, "application": None, "currency": currency,
                                           "description": "Stripe processing fees", "type": "stripe_fee"}]
        return {"id": self._id("txn"), "object": "balance_transaction", "amount": amount,
                "available_on": created + 2 * DAY, "created": created, "currency": currency,
                "description": description, "exchange_rate": float(rate) if rate is not None else None,
                "fee": fee, "fee_details": fee_details, "net": amount - fee, "reporting_category": category,
                "source": source, "status": "available", "type": type_, "balance_type": "payments"}

    def _book(self, event: dict, account: str | None, amount: Decimal, currency: str,
              rate: Decimal | None = None, state: str = "sent") -> Booking:
        b = Booking(event, account, amount, currency.upper(), rate, state)
        self.sc.bookings.append(b)
        return b

    # ---- objects ---------------------------------------------------------------

    def charge(self, pay: "PayoutDraft", amount: str, currency: str, *, fee: str = "0", rate: str | None = None,
               book: bool = True) -> tuple[dict, dict]:
        """A succeeded charge of ``amount`` ``currency``; ``rate`` converts it to the payout's currency."""
        t = self._time()
        settle = pay.currency
        cid = self._id("ch")
        amt = minor(amount, currency)
        r = Decimal(rate) if rate else None
        gross = _convert(amt, currency, settle, r)
        txn = self._txn(type_="charge", category="charge", amount=gross, fee=minor(fee, settle),
                        currency=settle, source=cid, created=t, rate=r)
        charge = {"id": cid, "object": "charge", "amount": amt, "amount_captured": amt, "amount_refunded": 0,
                  "balance_transaction": txn["id"], "captured": True, "created": t, "currency": currency.lower(),
                  "description": None, "disputed": False, "metadata": {}, "paid": True, "payment_intent": None,
                  "refunded": False, "status": "succeeded", "application_fee_amount": None}
        pay.add(txn, charge)
        ev = self._event("charge.succeeded", charge, pay.account, t)
        if book:
            self._book(ev, pay.account, from_minor(amt, currency), currency, r)
        return charge, txn

    def refund(self, pay: "PayoutDraft", charge: dict, amount: str, *, book: bool = True) -> tuple[dict, dict]:
        t = self._time()
        cur = charge["currency"]
        amt = minor(amount, cur)
        charge_txn = pay.by_source.get(charge["id"])
        r = Decimal(str(charge_txn["exchange_rate"])) if charge_txn and charge_txn["exchange_rate"] else None
        rid = self._id("re")
        txn = self._txn(type_="refund", category="refund", amount=-_convert(amt, cur, pay.currency, r), fee=0,
                        currency=pay.currency, source=rid, created=t, rate=r)
        refund = {"id": rid, "object": "refund", "amount": amt, "balance_transaction": txn["id"],
                  "charge": charge["id"], "created": t, "currency": cur, "metadata": {}, "payment_intent": None,
                  "reason": "requested_by_customer", "status": "succeeded"}
        pay.add(txn, refund)
        ev = self._event("refund.created", refund, pay.account, t)
        if book:
            self._book(ev, pay.account, from_minor(amt, cur), cur, r)
        return refund, txn

    def dispute(self, pay: "PayoutDraft", charge: dict, *, won: bool, fee: str = "15.00") -> list[dict]:
        t = self._time()
        cur, amt = charge["currency"], charge["amount"]
        did = self._id("dp")
        withdrawn = self._txn(type_="adjustment", category="dispute", amount=-_convert(amt, cur, pay.currency, None),
                              fee=minor(fee, pay.currency), currency=pay.currency, source=did, created=t,
                              description=f"Chargeback withdrawal for {charge['id']}")
        txns = [withdrawn]
        dispute = {"id": did, "object": "dispute", "amount": amt, "balance_transactions": txns, "charge": charge["id"],
                   "created": t, "currency": cur, "is_charge_refundable": False, "metadata": {},
                   "payment_intent": None, "reason": "fraudulent", "status": "won" if won else "lost"}
        pay.add(withdrawn, dispute)
        self._book(self._event("charge.dispute.funds_withdrawn", dispute, pay.account, t), pay.account,
                   from_minor(amt, cur), cur)
        if won:
            t2 = self._time()
            back = self._txn(type_="adjustment", category="dispute_reversal", amount=-withdrawn["amount"],
                             fee=-withdrawn["fee"], currency=pay.currency, source=did, created=t2,
                             description=f"Chargeback reversal for {charge['id']}")
            pay.add(back, None)
            txns.append(back)
            self._book(self._event("charge.dispute.funds_reinstated", dispute, pay.account, t2), pay.account,
                       from_minor(amt, cur), cur)
        return txns

    def application_fee(self, pay: "PayoutDraft", charge: dict, amount: str, from_account: str) -> dict:
        t = self._time()
        fid = self._id("fee")
        txn = self._txn(type_="application_fee", category="platform_earning", amount=minor(amount, pay.currency),
                        fee=0, currency=pay.currency, source=fid, created=t)
        fee = {"id": fid, "object": "application_fee", "account": from_account, "amount": minor(amount, pay.currency),
               "amount_refunded": 0, "balance_transaction": txn["id"], "charge": charge["id"], "created": t,
               "currency": pay.currency, "refunded": False}
        pay.add(txn, fee)
        self._book(self._event("application_fee.created", fee, pay.account, t), pay.account,
                   Decimal(amount), pay.currency)
        return txn

    def transfer(self, pay: "PayoutDraft", amount: str, destination: str) -> dict:
        t = self._time()
        tid = self._id("tr")
        txn = self._txn(type_="transfer", category="transfer", amount=-minor(amount, pay.currency), fee=0,
                        currency=pay.currency, source=tid, created=t)
        tr = {"id": tid, "object": "transfer", "amount": minor(amount, pay.currency), "amount_reversed": 0,
              "balance_transaction": txn["id"], "created": t, "currency": pay.currency, "description": None,
              "destination": destination, "metadata": {}, "reversed": False, "transfer_group": None}
        pay.add(txn, tr)
        self._book(self._event("transfer.created", tr, pay.account, t), pay.account, Decimal(amount), pay.currency)
        return txn

    def stripe_fee(self, pay: "PayoutDraft", amount: str, description: str = "Radar fees") -> dict:
        txn = self._txn(type_="stripe_fee", category="fee", amount=-minor(amount, pay.currency), fee=0,
                        currency=pay.currency, source=None, created=self._time(), description=description)
        pay.add(txn, None)
        return txn

    def adjustment(self, pay: "PayoutDraft", amount: str, description: str = "Balance adjustment") -> dict:
        txn = self._txn(type_="adjustment", category="other_adjustment", amount=minor(amount, pay.currency), fee=0,
                        currency=pay.currency, source=None, created=self._time(), description=description)
        pay.add(txn, None)
        return txn

    def payout(self, account: str | None, currency: str) -> "PayoutDraft":
        return PayoutDraft(self, account, currency.lower())

    def finish(self) -> Scenario:
        return self.sc


class PayoutDraft:
    """Transactions gathered for one payout; :meth:`close` makes the payout."""

    def __init__(self, b: Builder, account: str | None, currency: str):
        self.b, self.account, self.currency = b, account, currency
        self.txns: list[dict] = []
        self.sources: list[dict] = []
        self.by_source: dict[str, dict] = {}

    def add(self, txn: dict, source: dict | None) -> None:
        self.txns.append(txn)
        if source is not None:
            self.sources.append(source)
            self.by_source[source["id"]] = txn

    def close(self, *, status: str = "paid", automatic: bool = True, skew: int = 0,
              expect: str = "reconciled", **extra: Any) -> dict:
        b = self.b
        t = b._time() + DAY
        pid = b._id("po")
        amount = sum(x["net"] for x in self.txns)
        own = b._txn(type_="payout", category="payout", amount=-amount, fee=0, currency=self.currency,
                     source=pid, created=t, description="STRIPE PAYOUT")
        payout = {"id": pid, "object": "payout", "amount": amount + skew, "arrival_date": t + DAY,
                  "automatic": automatic, "balance_transaction": own["id"], "created": t, "currency": self.currency,
                  "description": "STRIPE PAYOUT", "destination": "ba_" + pid[3:], "failure_balance_transaction": None,
                  "failure_code": None, "failure_message": None, "livemode": False, "metadata": {},
                  "method": "standard", "original_payout": None, "reconciliation_status":
                  "completed" if automatic else "not_applicable", "reversed_by": None, "source_type": "card",
                  "statement_descriptor": None, "status": status, "type": "bank_account", **extra}
        sc = b.sc
        for src in self.sources:
            sc.objects.append((src, self.account, None))
        link = pid if automatic else None
        for txn in self.txns + [own]:
            sc.objects.append((txn, self.account, link))
        sc.objects.append((payout, self.account, None))
        sc.payout_status[pid] = expect
        sc.transactions[pid] = len(self.txns) if automatic and not extra.get("reversed_by") else 0
        return payout


def _convert(amount: int, frm: str, to: str, rate: Decimal | None) -> int:
    """Minor units of ``frm`` to minor units of ``to`` at ``rate`` (to per frm), rounded once."""
    if frm.upper() == to.upper():
        return amount
    if rate is None:
        raise ValueError(f"converting {frm} to {to} needs a rate")
    major = Decimal(amount).scaleb(-api_exponent(frm)) * rate
    return int(major.scaleb(api_exponent(to)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


CONNECTED = ["acct_1EurSeller00001", "acct_1JpySeller00001", "acct_1BhdSeller00001"]


def build(variant: str = "clean") -> Scenario:
    """The reference scenario: ``clean`` (everything booked right) or ``dirty`` (seeded exceptions)."""
    if variant not in ("clean", "dirty"):
        raise ValueError(f"variant: expected 'clean' or 'dirty', got {variant!r}")
    dirty = variant == "dirty"
    b = Builder(variant)
    sc = b.sc
    sc.accounts = list(CONNECTED)
    eur, jpy, bhd = CONNECTED

    # -- platform, USD: charges in USD, EUR, JPY, BHD; refunds; disputes; fees; transfers; adjustments
    p = b.payout(None, "usd")
    c1, t1 = b.charge(p, "100.00", "usd", fee="3.20")
    c2, _ = b.charge(p, "25.00", "usd", fee="1.03")
    ceur, teur = b.charge(p, "50.00", "eur", fee="1.87", rate="1.0800")
    cjpy, tjpy = b.charge(p, "1200", "jpy", fee="0.54", rate="0.0068")
    cbhd, _ = b.charge(p, "10.000", "bhd", fee="0.99", rate="2.6520")
    c3, _ = b.charge(p, "40.00", "usd", fee="1.46")
    c4, _ = b.charge(p, "60.00", "usd", fee="2.04")
    b.refund(p, c2, "25.00")                       # full refund
    b.refund(p, c1, "30.00")                       # partial refund
    b.refund(p, ceur, "20.00")                     # partial refund of an FX charge
    b.dispute(p, c3, won=False)
    b.dispute(p, c4, won=True)
    b.application_fee(p, c1, "2.00", eur)
    b.transfer(p, "30.00", eur)
    b.stripe_fee(p, "5.00")
    b.adjustment(p, "-1.50")
    if dirty:
        # missing: a charge the runner never heard of
        _, t_missing = b.charge(p, "12.00", "usd", fee="0.65", book=False)
        sc.exceptions.add((t_missing["id"], "missing"))
        # booked late: the event is in, its delivery is dead (replay fixes it)
        _, t_late = b.charge(p, "13.00", "usd", fee="0.68", book=False)
        b._book(b._event("charge.succeeded", _last_source(p), None,
                         t_late["created"]), None, Decimal("13.00"), "usd", state="dead")
        sc.exceptions.add((t_late["id"], "booked_late"))
        # amount mismatch and wrong currency
        cm, t_mis = b.charge(p, "14.00", "usd", fee="0.71", book=False)
        b._book(b._event("charge.succeeded", cm, None, t_mis["created"]), None, Decimal("41.00"), "usd")
        sc.exceptions.add((t_mis["id"], "mismatch"))
        cc, t_cur = b.charge(p, "15.00", "usd", fee="0.74", book=False)
        b._book(b._event("charge.succeeded", cc, None, t_cur["created"]), None, Decimal("15.00"), "gbp")
        sc.exceptions.add((t_cur["id"], "mismatch"))
        # FX: booked with another rate, slightly off (within tolerance) and far off (beyond)
        cf, t_fx1 = b.charge(p, "80.00", "eur", fee="2.62", rate="1.0800", book=False)
        b._book(b._event("charge.succeeded", cf, None, t_fx1["created"]), None, Decimal("80.00"), "eur",
                Decimal("1.0810"))
        sc.exceptions.add((t_fx1["id"], "fx_within_tolerance"))
        cj, t_fx2 = b.charge(p, "5000", "jpy", fee="1.29", rate="0.0068", book=False)
        b._book(b._event("charge.succeeded", cj, None, t_fx2["created"]), None, Decimal("5000"), "jpy",
                Decimal("0.0080"))
        sc.exceptions.add((t_fx2["id"], "fx_beyond_tolerance"))
    p.close(expect="exceptions" if dirty else "reconciled")

    # -- connected EUR seller: EUR payout with a GBP charge converted
    q = b.payout(eur, "eur")
    b.charge(q, "30.00", "eur", fee="0.70")
    b.charge(q, "20.00", "gbp", fee="0.55", rate="1.1700")
    b.charge(q, "45.50", "eur", fee="0.89")
    q.close()
    # a payout that failed at the bank, and a payout later reversed
    f = b.payout(eur, "eur")
    b.charge(f, "10.00", "eur", fee="0.40")
    f.close(status="failed", expect="failed", failure_code="account_closed",
            failure_message="The bank account has been closed.")
    r = b.payout(eur, "eur")
    b.charge(r, "11.00", "eur", fee="0.41")
    r.close(expect="reversed", reversed_by="po_reversal0000001")

    # -- connected JPY seller (zero-decimal)
    j = b.payout(jpy, "jpy")
    cj1, _ = b.charge(j, "5000", "jpy", fee="180")
    b.charge(j, "12800", "jpy", fee="461")
    b.refund(j, cj1, "1000")
    j.close()
    # a negative payout: refunds and a lost dispute exceed the sales
    n = b.payout(jpy, "jpy")
    cn, _ = b.charge(n, "3000", "jpy", fee="108")
    b.refund(n, cn, "3000")
    b.dispute(n, cj1, won=False, fee="1500")
    n.close(expect="reconciled")

    # -- connected BHD seller (three decimals)
    h = b.payout(bhd, "bhd")
    b.charge(h, "12.340", "bhd", fee="0.380")
    b.charge(h, "7.500", "bhd", fee="0.250")
    h.close()

    # -- a manual payout (Stripe cannot tie it to transactions)
    m = b.payout(None, "usd")
    m.close(automatic=False, expect="unreconcilable", skew=50000)

    if dirty:
        # a payout whose amount does not equal the sum of its transactions
        u = b.payout(None, "usd")
        b.charge(u, "9.00", "usd", fee="0.56")
        po = u.close(skew=1, expect="unbalanced")
        sc.exceptions.add((po["id"], "unbalanced"))
    return b.finish()


def _last_source(p: PayoutDraft) -> dict:
    return p.sources[-1]
