"""A seeded month of Stripe activity for a Connect platform, with its truth.

``generate(seed, size="small"|"medium")`` builds, deterministically from the
seed, what Stripe would hold and send for one month (March 2026) of a platform
whose home currency is USD and whose balance settles in USD, with two
connected accounts (one settling in USD, one in EUR). The objects have the
shapes of Stripe's own examples (``fixtures3.json`` in stripe-mock's OpenAPI
fixtures: same keys, same JSON types; a few extra keys Stripe documents).
The truth (:meth:`Scenario.truth`) is computed from the balance transactions
alone, not from any code under test.

Stripe behaviours modelled, and where they come from
----------------------------------------------------

Balance transactions (API reference "Balance transactions"; "Balance
transaction types" and "Reporting categories" under docs.stripe.com/reports):

* every movement of money in a Stripe balance is one ``txn_`` with ``amount``
  (gross, settlement currency, minor units, negative for money out), ``fee``
  (positive when Stripe charged it), ``fee_details`` (``stripe_fee``,
  ``application_fee``; ``fee == sum(fee_details.amount)``), ``net = amount -
  fee``, ``reporting_category`` (what accounting should use, not ``type``) and
  ``source`` (the id of the charge, refund, dispute, fee, fee refund, transfer
  or payout it belongs to);
* ``exchange_rate``: "if money was converted from currency A to currency B,
  the amount in currency A times exchange_rate is the amount in currency B".
  A charge presented in GBP and settled in USD has ``amount = round(GBP major
  x rate)`` in USD cents (rounded half-even, once); ``exchange_rate`` is None
  when presentment == settlement. Rates are quoted with 6 decimals so the
  float in the JSON is the exact rate used;
* Stripe's fee is computed on the settled amount: 2.9% + 30c for USD
  balances, 1.5% + 25c for the EUR balance (Stripe's standard card pricing in
  the US and for EEA cards in Europe); Stripe keeps its fee when a payment is
  refunded, so refund balance transactions have ``fee = 0``;
* currencies (docs "Supported currencies": zero-decimal, three-decimal and
  special cases): JPY is zero-decimal; BHD is three-decimal and amounts must
  end in 0; ISK is zero-decimal in ISO 4217 but two-decimal in Stripe's API,
  so amounts are always whole (multiples of 100).

Connect (docs "Destination charges", "Direct charges", "Collect application
fees", "Application fee refunds"):

* platform charges: charge and balance transaction on the platform;
* destination charges: a charge on the platform with ``transfer_data =
  {"destination": acct, "amount": n}`` (Stripe's ``transfer_data[amount]``
  form, so the platform keeps ``amount - n``); Stripe creates a ``tr_``
  transfer (platform balance transaction, ``type``/``reporting_category``
  ``transfer``, ``-n``) and a payment ``py_`` on the connected account (an
  object of type ``charge`` with ``source_transfer``; its balance transaction
  is ``type=payment``, ``reporting_category=charge``). Modelled only for USD
  charges to the USD-settling account (``transfer_data[amount]`` is in the
  charge currency; no cross-currency transfer is modelled);
* direct charges with ``application_fee_amount``: the charge and its balance
  transaction live on the connected account, whose ``fee_details`` hold the
  ``stripe_fee`` and an ``application_fee`` entry (``application: ca_...``);
  the platform gets an ``application_fee`` object ``fee_`` (currency = the
  connected account's settlement currency) and a balance transaction
  ``type=application_fee``, ``reporting_category=platform_earning``, converted
  to USD with ``exchange_rate`` when the fee is in EUR;
* application fee refunds ``fr_`` (``fee_refund`` objects): on the platform a
  balance transaction ``type=application_fee_refund``,
  ``reporting_category=platform_earning_refund`` (negative); on the connected
  account the money comes back as ``type=application_fee_refund``,
  ``reporting_category=fee`` (the Reporting categories page: Connect platform
  fee refunds are categorised ``fee``). Created when a refunded direct charge
  also refunds its application fee (``refund_application_fee``).

Refunds (API "Refunds"; events ``refund.created``/``refund.updated``,
``charge.refunded``): each refund is a ``re_`` with its own balance
transaction (``type``/``reporting_category`` ``refund``, negative). Partial,
repeated partial (two on one charge) and full refunds. A refund of a converted
charge is converted at the rate of the day it happens (choice: Stripe converts
at the rate in effect when the refund is made, so a full refund need not
settle to the charge's settled amount; the truth follows the balance
transactions either way). ``charge.refunded`` carries the charge with the
cumulative ``amount_refunded``.

Disputes (API "Disputes": ``balance_transactions`` lists "zero, one, or two
balance transactions that show funds withdrawn and reinstated"; support
article "Dispute fees FAQ": one balance transaction "for the dispute amount
and fee", and "if a dispute is ruled in your favor ... Stripe will also
refund the network dispute fee"): a dispute withdraws ``-amount`` with a
15.00 USD (20.00 EUR) ``stripe_fee`` (``type=adjustment``,
``reporting_category=dispute``); a won dispute adds a second balance
transaction (``reporting_category=dispute_reversal``, ``+amount``,
``fee = -fee`` returned, ``fee_details`` a negative ``stripe_fee``). Choice:
the fee is returned (``dispute_fee_returned=True``); ``False`` models Stripe's
newer non-refundable fees (fee 0 on the reversal). Events:
``charge.dispute.created``, ``charge.dispute.funds_withdrawn``,
``charge.dispute.closed`` and, when won, ``charge.dispute.funds_reinstated``.

Payouts (API "Payouts"; "Payout reconciliation"): automatic payouts, weekly
per account; an automatic payout's ``amount`` is exactly the sum of the
``net`` of the balance transactions it pays out (those available by then and
not yet paid out); its own balance transaction (``type=payout``,
``net = -amount``) is listed with them by ``/v1/balance_transactions?payout=``.

* a negative payout (``amount < 0``: Stripe debits the bank account when
  refunds and disputes exceed the sales of the period) on the EUR account;
* a failed payout on the platform: ``status=failed``, ``failure_code
  account_closed``, and ``failure_balance_transaction``: a balance
  transaction ``type=payout_failure``, ``reporting_category=payout_reversal``,
  ``+amount``, that "puts the funds from the failed payout back in your
  balance" (Payout object reference). Choice: the failed payout keeps its own
  transactions; the returned funds are paid out by the next payout (whose
  amount includes the payout_failure transaction).

Events (API "Events"; "Types of events"): ``evt_`` with ``type``,
``created``, ``api_version``, ``data.object`` = a snapshot of the object as of
that event (``balance_transaction`` an id string, never expanded; a dispute's
``balance_transactions`` are full objects, as Stripe returns them), and
``account`` on events of connected accounts. A payment sends both
``charge.succeeded`` and ``payment_intent.succeeded``; application fee and
transfer events belong to the platform. Delivery (docs "Webhooks: best
practices": events may be delivered more than once and not in order): a
seeded share of events is delivered twice, another moved out of order;
``missing=k`` drops every event of k money movements (charges, refunds,
application fees) and remembers them.

Not modelled: transfer reversals, refunds of destination charges with
``reverse_transfer``, currency-conversion surcharges, tax on fees, reserves,
manual payouts, payout reversals, Issuing/Treasury.
"""

from __future__ import annotations

import copy
import random
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from typing import Any, Iterable

T0 = 1772323200                 # 2026-03-01T00:00:00Z
DAY = 86400
HOUR = 3600
API_VERSION = "2024-06-20"
HOME = "USD"
APPLICATION = "ca_1BooksHarnessPlatform00"

# minor-unit exponent in Stripe's API (ISK: two-decimal in the API, always whole)
EXPONENT = {"usd": 2, "eur": 2, "gbp": 2, "jpy": 0, "bhd": 3, "isk": 2}
# the smallest amount step Stripe accepts, in minor units
STEP = {"usd": 1, "eur": 1, "gbp": 1, "jpy": 1, "bhd": 10, "isk": 100}
# USD per unit, before the day's drift
USD_PER = {"usd": Decimal("1"), "eur": Decimal("1.0842"), "gbp": Decimal("1.2716"), "jpy": Decimal("0.006712"),
           "bhd": Decimal("2.6525"), "isk": Decimal("0.007236")}
CURRENCIES = ("usd", "eur", "gbp", "jpy", "bhd", "isk")
# amount range in major units per currency (low, high)
RANGE = {"usd": (5, 480), "eur": (5, 450), "gbp": (5, 400), "jpy": (600, 70000), "bhd": (2, 180),
         "isk": (800, 65000)}
# per settlement currency: Stripe's percentage, fixed fee (minor), dispute fee (minor)
PRICING = {"usd": (Decimal("0.029"), 30, 1500), "eur": (Decimal("0.015"), 25, 2000)}
SIZES = {"small": 40, "medium": 300}


@dataclass
class Scenario:
    """One generated month. See the module docstring for what it models.

    ``objects``: ``(obj, account or None, payout id or None)`` for every Stripe object
    (accounts first), the third item linking a balance transaction to the automatic
    payout that paid it out. ``events``: delivery order, duplicates included, missing
    ones left out. ``missing``: ids of the money movements whose events were dropped.
    """

    seed: int
    size: str
    home_currency: str
    accounts: list[str]
    settlement: dict[str | None, str]
    objects: list[tuple[dict, str | None, str | None]]
    balance_transactions: dict[str, tuple[dict, str | None]]
    events: list[dict]
    payouts: list[tuple[dict, str | None]]
    missing: set[str] = field(default_factory=set)
    missing_events: set[str] = field(default_factory=set)
    duplicated: set[str] = field(default_factory=set)     # event ids delivered twice
    reordered: set[str] = field(default_factory=set)      # event ids delivered out of order
    chronological_events: list[dict] = field(default_factory=list, repr=False)   # all, as created
    payout_txns: dict[str, list[str]] = field(default_factory=dict, repr=False)  # po -> txn ids (not its own)
    event_movement: dict[str, str] = field(default_factory=dict, repr=False)     # evt id -> money object id

    # ---- loading ----------------------------------------------------------------

    def standin(self, standin: Any = None, *, events: bool = True, include_missing_events: bool = False) -> Any:
        """Load every object into a :class:`StripeStandin` (a new one unless given).

        ``events``: also store the events (each once, in their account's scope) for
        ``/v1/events``; the missing ones are left out unless ``include_missing_events``
        (Stripe keeps them; a catch-up would then find them).
        """
        if standin is None:
            from tests.standins.stripe_api import StripeStandin
            standin = StripeStandin()
        for obj, account, payout in self.objects:
            standin.add(obj, account=account, payout=payout)
        if events:
            for ev in self.chronological_events:
                if include_missing_events or ev["id"] not in self.missing_events:
                    standin.add(ev, account=ev.get("account"))
        return standin

    # ---- views ------------------------------------------------------------------

    def chronological(self, *, include_missing: bool = False) -> list[dict]:
        """Each event once, in the order Stripe created them."""
        return [e for e in self.chronological_events if include_missing or e["id"] not in self.missing_events]

    def payout_transactions(self, payout_id: str) -> list[dict]:
        """The balance transactions an automatic payout paid out (without its own)."""
        return [self.balance_transactions[t][0] for t in self.payout_txns[payout_id]]

    def object(self, obj_id: str) -> tuple[dict, str | None]:
        for obj, account, _ in self.objects:
            if obj["id"] == obj_id:
                return obj, account
        raise KeyError(obj_id)

    # ---- truth ------------------------------------------------------------------

    def truth(self, account: str | None = None) -> dict:
        """What the books of ``account`` (None: the platform) must say, from the balance
        transactions alone, in the account's settlement currency (major units, Decimal):

        * ``gross``: sum of ``amount`` per ``reporting_category`` (payouts included);
        * ``fees``: sum of ``fee_details`` per type (``stripe_fee``, ``application_fee``, ``tax``);
          ``fees_by_category``: sum of ``fee`` per category; ``net``: sum of ``net`` per category;
        * ``payouts``: payout id -> sum of the nets of the transactions it paid out
          (== its ``amount``); ``payout_status``: payout id -> status;
        * ``balance``: the Stripe balance (sum of every net) == what clearing must hold;
          ``unpaid``: nets not paid out by any payout (equal to ``balance``).
        """
        cur = self.settlement[account]
        exp = EXPONENT[cur.lower()]
        gross: dict[str, int] = defaultdict(int)
        net: dict[str, int] = defaultdict(int)
        fee_cat: dict[str, int] = defaultdict(int)
        fees: dict[str, int] = {"stripe_fee": 0, "application_fee": 0, "tax": 0}
        paid: set[str] = set()
        for tids in self.payout_txns.values():
            paid.update(tids)
        balance = unpaid = 0
        for tid, (bt, acct) in self.balance_transactions.items():
            if acct != account:
                continue
            cat = bt["reporting_category"]
            gross[cat] += bt["amount"]
            net[cat] += bt["net"]
            fee_cat[cat] += bt["fee"]
            for fd in bt["fee_details"]:
                fees[fd["type"]] = fees.get(fd["type"], 0) + fd["amount"]
            balance += bt["net"]
            if bt["type"] != "payout" and tid not in paid:
                unpaid += bt["net"]
        payouts, status = {}, {}
        for po, acct in self.payouts:
            if acct == account:
                payouts[po["id"]] = sum(self.balance_transactions[t][0]["net"] for t in self.payout_txns[po["id"]])
                status[po["id"]] = po["status"]

        def major(v: int) -> Decimal:
            return Decimal(v).scaleb(-exp)

        return {
            "account": account, "currency": cur,
            "gross": {k: major(v) for k, v in sorted(gross.items())},
            "net": {k: major(v) for k, v in sorted(net.items())},
            "fees": {k: major(v) for k, v in fees.items()},
            "fees_by_category": {k: major(v) for k, v in sorted(fee_cat.items()) if v},
            "payouts": {k: major(v) for k, v in payouts.items()},
            "payout_status": status,
            "balance": major(balance), "unpaid": major(unpaid),
        }


# ---------------------------------------------------------------------------------------------
# object shapes (keys and JSON types of fixtures3.json)


def _list(url: str, data: list | None = None) -> dict:
    return {"object": "list", "data": data or [], "has_more": False, "url": url}


def _address() -> dict:
    return {"city": None, "country": None, "line1": None, "line2": None, "postal_code": None, "state": None}


def _card(rng: random.Random, amount: int, country: str) -> dict:
    brand = rng.choice(("visa", "mastercard", "amex"))
    return {"card": {"amount_authorized": amount, "authorization_code": None, "brand": brand,
                     "checks": {"address_line1_check": None, "address_postal_code_check": "pass", "cvc_check": "pass"},
                     "country": country, "exp_month": rng.randint(1, 12), "exp_year": rng.randint(2027, 2031),
                     "extended_authorization": {"status": "disabled"},
                     "fingerprint": "".join(rng.choices("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789",
                                                        k=16)),
                     "funding": "credit", "incremental_authorization": {"status": "unavailable"},
                     "installments": None, "last4": f"{rng.randint(0, 9999):04d}", "mandate": None,
                     "multicapture": {"status": "unavailable"}, "network": brand,
                     "network_token": {"used": False}, "network_transaction_id": None,
                     "overcapture": {"maximum_amount_capturable": amount, "status": "unavailable"},
                     "regulated_status": "unregulated", "three_d_secure": None, "transaction_link_id": None,
                     "wallet": None},
            "type": "card"}


COUNTRY = {"usd": "US", "eur": "DE", "gbp": "GB", "jpy": "JP", "bhd": "BH", "isk": "IS"}


class _Gen:
    def __init__(self, seed: int, size: str, *, dispute_fee_returned: bool):
        if size not in SIZES:
            raise ValueError(f"size: one of {sorted(SIZES)}, not {size!r}")
        self.seed, self.size = seed, size
        self.rng = random.Random(f"ledgerflow-books-{seed}")
        self.dispute_fee_returned = dispute_fee_returned
        tag = _b36(seed % 36 ** 6).rjust(6, "0")
        self.tag = tag
        self._n = 0
        self.acct_us = f"acct_1{tag}UsSeller"
        self.acct_eu = f"acct_1{tag}EuSeller"
        self.settle: dict[str | None, str] = {None: "usd", self.acct_us: "usd", self.acct_eu: "eur"}
        self.objects: list[tuple[dict, str | None]] = []
        self.bts: dict[str, tuple[dict, str | None]] = {}
        self.events: list[tuple[int, int, dict]] = []          # (created, seq, event)
        self.event_movement: dict[str, str] = {}
        self.rates: dict[tuple[str, str, int], Decimal] = {}
        self.fees: dict[str, dict] = {}                          # charge id -> application fee
        self.paid: set[str] = set()                              # txn ids some payout paid out

    # ---- ids, rates, amounts -----------------------------------------------------

    def id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_3{self.tag}{self._n:07d}B"

    def rate(self, frm: str, to: str, t: int) -> Decimal:
        """``to`` per ``frm`` on the day of ``t`` (6 decimals; a seeded drift per day)."""
        day = (t - T0) // DAY
        key = (frm, to, day)
        r = self.rates.get(key)
        if r is None:
            drift = Decimal(1) + Decimal(self.rng.randint(-80, 80)) / Decimal(10000)
            r = (USD_PER[frm] / USD_PER[to] * drift).quantize(Decimal("0.000001"), ROUND_HALF_EVEN)
            self.rates[key] = r
        return r

    def convert(self, amount: int, frm: str, to: str, t: int) -> tuple[int, Decimal | None]:
        """Minor units of ``frm`` -> minor units of ``to`` at the day's rate, rounded once."""
        if frm == to:
            return amount, None
        r = self.rate(frm, to, t)
        major = Decimal(amount).scaleb(-EXPONENT[frm]) * r
        return int(major.scaleb(EXPONENT[to]).quantize(Decimal(1), ROUND_HALF_EVEN)), r

    def amount(self, cur: str) -> int:
        lo, hi = RANGE[cur]
        major = Decimal(str(round(self.rng.uniform(lo, hi), EXPONENT[cur] if cur != "isk" else 0)))
        minor = int(major.scaleb(EXPONENT[cur]))
        return max(STEP[cur], minor - minor % STEP[cur])

    @staticmethod
    def part(amount: int, frac: float, cur: str) -> int:
        step = STEP[cur]
        v = int(amount * frac) // step * step
        return min(max(v, step), amount - step) if amount > step else amount

    # ---- recording ----------------------------------------------------------------

    def keep(self, obj: dict, account: str | None) -> dict:
        self.objects.append((obj, account))
        return obj

    def event(self, type_: str, obj: dict, account: str | None, t: int, movement: str | None = None) -> dict:
        ev = {"id": "evt_" + self.id("x")[2:], "object": "event", "api_version": API_VERSION, "created": t,
              "data": {"object": copy.deepcopy(obj)}, "livemode": False, "pending_webhooks": 1,
              "request": {"id": "req_" + self.id("r")[2:] if type_.split(".")[0] in ("refund", "payment_intent")
                          else None, "idempotency_key": None},
              "type": type_}
        if account is not None:
            ev["account"] = account
        self.events.append((t, len(self.events), ev))
        if movement is not None:
            self.event_movement[ev["id"]] = movement
        return ev

    def bt(self, account: str | None, *, type_: str, category: str, amount: int, t: int, source: str | None,
           fee_details: Iterable[dict] = (), rate: Decimal | None = None, description: str | None = None,
           available_on: int | None = None) -> dict:
        cur = self.settle[account]
        fds = [dict(fd) for fd in fee_details]
        fee = sum(fd["amount"] for fd in fds)
        txn = {"id": self.id("txn"), "object": "balance_transaction", "amount": amount,
               "available_on": available_on if available_on is not None else (t // DAY + 2) * DAY,
               "balance_type": "payments", "created": t, "currency": cur, "description": description,
               "exchange_rate": float(rate) if rate is not None else None, "fee": fee, "fee_details": fds,
               "net": amount - fee, "reporting_category": category, "source": source, "status": "available",
               "type": type_}
        self.bts[txn["id"]] = (txn, account)
        self.keep(txn, account)
        return txn

    def stripe_fee(self, account: str | None, settled: int) -> dict:
        cur = self.settle[account]
        pct, fixed, _ = PRICING[cur]
        amt = int((Decimal(settled) * pct).quantize(Decimal(1), ROUND_HALF_UP)) + fixed
        return {"amount": amt, "application": None, "currency": cur, "description": "Stripe processing fees",
                "type": "stripe_fee"}

    # ---- objects ------------------------------------------------------------------

    def charge(self, account: str | None, cur: str, t: int, *, kind: str, amount: int | None = None) -> dict:
        """A succeeded card payment (PaymentIntent + charge + balance transaction [+ Connect parts])."""
        rng = self.rng
        settle = self.settle[account]
        amount = amount if amount is not None else self.amount(cur)
        cid, pid = self.id("ch"), self.id("pi")
        settled, rate = self.convert(amount, cur, settle, t)
        fds = [self.stripe_fee(account, settled)]
        app_fee_amount = None
        if kind == "direct":
            app_fee_amount = max(STEP[cur], self.part(amount, rng.uniform(0.05, 0.10), cur))
            app_settled, _ = self.convert(app_fee_amount, cur, settle, t)
            fds.append({"amount": app_settled, "application": APPLICATION, "currency": settle,
                        "description": "Application fee", "type": "application_fee"})
        customer = "cus_" + self.id("c")[2:]
        txn = self.bt(account, type_="charge", category="charge", amount=settled, t=t, source=cid,
                      fee_details=fds, rate=rate, description=f"Order {self._n}")
        ch = {
            "id": cid, "object": "charge", "amount": amount, "amount_captured": amount, "amount_refunded": 0,
            "application": APPLICATION if kind == "direct" else None, "application_fee": None,
            "application_fee_amount": app_fee_amount, "balance_transaction": txn["id"],
            "billing_details": {"address": _address(), "email": None, "name": f"Customer {self._n}",
                                "phone": None, "tax_id": None},
            "calculated_statement_descriptor": "LEDGERFLOW", "captured": True, "created": t, "currency": cur,
            "customer": customer, "description": f"Order {self._n}", "disputed": False,
            "failure_balance_transaction": None, "failure_code": None, "failure_message": None,
            "fraud_details": {}, "livemode": False, "metadata": {}, "on_behalf_of": None,
            "outcome": {"advice_code": None, "network_advice_code": None, "network_decline_code": None,
                        "network_status": "approved_by_network", "reason": None, "risk_level": "normal",
                        "seller_message": "Payment complete.", "type": "authorized"},
            "paid": True, "payment_intent": pid, "payment_method": "pm_" + self.id("m")[2:],
            "payment_method_details": _card(rng, amount, COUNTRY[cur]), "receipt_email": None,
            "receipt_number": None, "receipt_url": f"https://pay.stripe.com/receipts/payment/{cid}",
            "refunded": False, "refunds": _list(f"/v1/charges/{cid}/refunds"), "review": None, "shipping": None,
            "source": None, "source_transfer": None, "statement_descriptor": None,
            "statement_descriptor_suffix": None, "status": "succeeded", "transfer": None, "transfer_data": None,
            "transfer_group": None,
        }
        pi = {
            "id": pid, "object": "payment_intent", "amount": amount, "amount_capturable": 0,
            "amount_details": {"tip": {}}, "amount_received": amount, "application": ch["application"],
            "application_fee_amount": app_fee_amount, "automatic_payment_methods": {"enabled": True},
            "canceled_at": None, "cancellation_reason": None, "capture_method": "automatic",
            "client_secret": f"{pid}_secret_{self.tag}", "confirmation_method": "automatic", "created": t,
            "currency": cur, "customer": customer, "customer_account": None, "description": ch["description"],
            "excluded_payment_method_types": None, "last_payment_error": None, "latest_charge": cid,
            "livemode": False, "managed_payments": {"enabled": False}, "metadata": {}, "next_action": None,
            "on_behalf_of": None, "payment_method": ch["payment_method"],
            "payment_method_configuration_details": None, "payment_method_options": {},
            "payment_method_types": ["card"], "processing": None, "receipt_email": None, "review": None,
            "setup_future_usage": None, "shipping": None, "source": None, "statement_descriptor": None,
            "statement_descriptor_suffix": None, "status": "succeeded", "transfer_data": None,
            "transfer_group": None,
        }
        if kind == "destination":
            share = self.part(amount, rng.uniform(0.75, 0.90), cur)
            ch["transfer_data"] = {"amount": share, "destination": self.acct_us}
            pi["transfer_data"] = {"amount": share, "destination": self.acct_us}
            ch["transfer_group"] = pi["transfer_group"] = f"group_{pid}"
        fid = None
        if kind == "direct":
            ch["application_fee"] = fid = self.id("fee")
        self.keep(ch, account)
        self.keep(pi, account)
        self.event("charge.succeeded", ch, account, t, cid)
        self.event("payment_intent.succeeded", pi, account, t, cid)
        if fid is not None:
            self.fees[cid] = self.application_fee(fid, account, ch, fds[1]["amount"], t)
        if kind == "destination":
            self.transfer(ch, t)
        return ch

    def application_fee(self, fid: str, account: str, ch: dict, amount: int, t: int) -> dict:
        cur = self.settle[account]
        usd, rate = self.convert(amount, cur, "usd", t)
        txn = self.bt(None, type_="application_fee", category="platform_earning", amount=usd, t=t, source=fid,
                      rate=rate, description=None)
        fee = {"id": fid, "object": "application_fee", "account": account, "amount": amount, "amount_refunded": 0,
               "application": APPLICATION, "balance_transaction": txn["id"], "charge": ch["id"], "created": t,
               "currency": cur, "fee_source": {"charge": ch["id"], "type": "charge"}, "livemode": False,
               "originating_transaction": None, "refunded": False,
               "refunds": _list(f"/v1/application_fees/{fid}/refunds")}
        self.keep(fee, None)
        self.event("application_fee.created", fee, None, t, fid)
        return fee

    def fee_refund(self, fee: dict, amount: int, t: int) -> dict:
        fr_id = self.id("fr")
        usd, rate = self.convert(amount, fee["currency"], "usd", t)
        txn = self.bt(None, type_="application_fee_refund", category="platform_earning_refund", amount=-usd, t=t,
                      source=fr_id, rate=rate, description="Application fee refund")
        self.bt(fee["account"], type_="application_fee_refund", category="fee", amount=amount, t=t, source=fr_id,
                description="Application fee refund")
        fr = {"id": fr_id, "object": "fee_refund", "amount": amount, "balance_transaction": txn["id"],
              "created": t, "currency": fee["currency"], "fee": fee["id"], "metadata": {}}
        self.keep(fr, None)
        fee["amount_refunded"] += amount
        fee["refunded"] = fee["amount_refunded"] == fee["amount"]
        fee["refunds"]["data"].insert(0, fr)
        self.event("application_fee.refunded", fee, None, t, fr_id)
        return fr

    def transfer(self, ch: dict, t: int) -> dict:
        dest = ch["transfer_data"]["destination"]
        amount = ch["transfer_data"]["amount"]          # USD charges only: same currency everywhere
        tid, pyid = self.id("tr"), self.id("py")
        txn = self.bt(None, type_="transfer", category="transfer", amount=-amount, t=t, source=tid)
        ptxn = self.bt(dest, type_="payment", category="charge", amount=amount, t=t, source=pyid)
        tr = {"id": tid, "object": "transfer", "amount": amount, "amount_reversed": 0,
              "balance_transaction": txn["id"], "created": t, "currency": "usd", "description": None,
              "destination": dest, "destination_payment": pyid, "livemode": False, "metadata": {},
              "reversals": _list(f"/v1/transfers/{tid}/reversals"), "reversed": False,
              "source_transaction": ch["id"], "source_type": "card", "transfer_group": ch["transfer_group"]}
        py = {k: v for k, v in ch.items()}
        py.update({"id": pyid, "amount": amount, "amount_captured": amount, "balance_transaction": ptxn["id"],
                   "application": None, "application_fee_amount": None, "billing_details": {
                       "address": _address(), "email": None, "name": None, "phone": None, "tax_id": None},
                   "calculated_statement_descriptor": None, "customer": None, "description": None,
                   "outcome": None, "payment_intent": None, "payment_method": None,
                   "payment_method_details": {"stripe_account": {}, "type": "stripe_account"},
                   "receipt_url": None, "refunds": _list(f"/v1/charges/{pyid}/refunds"),
                   "source_transfer": tid, "transfer_data": None, "transfer_group": None})
        ch["transfer"] = tid
        self.keep(tr, None)
        self.keep(py, dest)
        self.event("transfer.created", tr, None, t, tid)
        return tr

    def refund(self, account: str | None, ch: dict, amount: int, t: int, *, fee: dict | None = None,
               fee_amount: int = 0) -> dict:
        cur, settle = ch["currency"], self.settle[account]
        rid = self.id("re")
        settled, rate = self.convert(amount, cur, settle, t)
        txn = self.bt(account, type_="refund", category="refund", amount=-settled, t=t, source=rid, rate=rate,
                      description="REFUND FOR CHARGE")
        re = {"id": rid, "object": "refund", "amount": amount, "balance_transaction": txn["id"], "charge": ch["id"],
              "created": t, "currency": cur, "customer": None, "customer_account": None,
              "destination_details": {"card": {"reference_status": "pending",
                                               "reference_type": "acquirer_reference_number", "type": "refund"},
                                      "type": "card"},
              "metadata": {}, "payment_intent": ch["payment_intent"], "payment_method": ch["payment_method"],
              "reason": "requested_by_customer", "receipt_number": None, "source_transfer_reversal": None,
              "status": "pending", "transfer_reversal": None}
        self.keep(re, account)
        self.event("refund.created", re, account, t, rid)
        ch["amount_refunded"] += amount
        ch["refunded"] = ch["amount_refunded"] == ch["amount"]
        ch["refunds"]["data"].insert(0, re)
        self.event("charge.refunded", ch, account, t, rid)
        if fee is not None and fee_amount:
            self.fee_refund(fee, fee_amount, t + 1)
        re["status"] = "succeeded"
        re["destination_details"]["card"]["reference_status"] = "available"
        re["destination_details"]["card"]["reference"] = f"{self.rng.randint(10 ** 22, 10 ** 23 - 1)}"
        self.event("refund.updated", re, account, t + 2 * HOUR, rid)
        return re

    def dispute(self, account: str | None, ch: dict, t: int, *, won: bool, t_close: int) -> dict:
        cur, settle = ch["currency"], self.settle[account]
        did = self.id("dp")
        settled, rate = self.convert(ch["amount"], cur, settle, t)
        dfee = PRICING[settle][2]
        withdrawn = self.bt(account, type_="adjustment", category="dispute", amount=-settled, t=t, source=did,
                            rate=rate, description=f"Chargeback withdrawal for {ch['id']}",
                            fee_details=[{"amount": dfee, "application": None, "currency": settle,
                                          "description": "Dispute fee", "type": "stripe_fee"}])
        dp = {"id": did, "object": "dispute", "amount": ch["amount"], "balance_transactions": [withdrawn],
              "charge": ch["id"], "created": t, "currency": cur, "enhanced_eligibility_types": [],
              "evidence": {k: None for k in (
                  "access_activity_log", "billing_address", "cancellation_policy", "cancellation_policy_disclosure",
                  "cancellation_rebuttal", "customer_communication", "customer_email_address", "customer_name",
                  "customer_purchase_ip", "customer_signature", "duplicate_charge_documentation",
                  "duplicate_charge_explanation", "duplicate_charge_id", "product_description", "receipt",
                  "refund_policy", "refund_policy_disclosure", "refund_refusal_explanation", "service_date",
                  "service_documentation", "shipping_address", "shipping_carrier", "shipping_date",
                  "shipping_documentation", "shipping_tracking_number", "uncategorized_file",
                  "uncategorized_text")} | {"enhanced_evidence": {}},
              "evidence_details": {"due_by": t + 21 * DAY, "enhanced_eligibility": {}, "has_evidence": False,
                                   "past_due": False, "submission_count": 0},
              "is_charge_refundable": False, "livemode": False, "metadata": {},
              "payment_intent": ch["payment_intent"],
              "payment_method_details": {"card": {"brand": ch["payment_method_details"]["card"]["brand"],
                                                  "case_type": "chargeback", "network_reason_code": "10.4",
                                                  "network": ch["payment_method_details"]["card"]["network"]},
                                         "type": "card"},
              "reason": "fraudulent", "status": "needs_response"}
        ch["disputed"] = True
        self.keep(dp, account)
        self.event("charge.dispute.created", dp, account, t, did)
        self.event("charge.dispute.funds_withdrawn", dp, account, t, did)
        dp["evidence_details"]["has_evidence"] = True
        dp["evidence_details"]["submission_count"] = 1
        if won:
            back, rate2 = self.convert(ch["amount"], cur, settle, t_close)
            returned = -dfee if self.dispute_fee_returned else 0
            fds = [{"amount": returned, "application": None, "currency": settle,
                    "description": "Dispute fee returned", "type": "stripe_fee"}] if returned else []
            reinstated = self.bt(account, type_="adjustment", category="dispute_reversal", amount=back, t=t_close,
                                 source=did, rate=rate2, description=f"Chargeback reversal for {ch['id']}",
                                 fee_details=fds)
            dp["balance_transactions"].append(reinstated)
            dp["status"] = "won"
            self.event("charge.dispute.closed", dp, account, t_close, did)
            self.event("charge.dispute.funds_reinstated", dp, account, t_close + 1, did)
        else:
            dp["status"] = "lost"
            self.event("charge.dispute.closed", dp, account, t_close, did)
        return dp

    def adjustment(self, account: str | None, amount: int, t: int, description: str) -> dict:
        return self.bt(account, type_="adjustment", category="other_adjustment", amount=amount, t=t, source=None,
                       description=description)

    def account_obj(self, acct: str, country: str, cur: str) -> dict:
        return {"id": acct, "object": "account", "business_profile": {"mcc": "5734", "name": f"Seller {country}",
                                                                        "url": None},
                "business_type": "company", "capabilities": {"card_payments": "active", "transfers": "active"},
                "charges_enabled": True, "controller": {"type": "application", "is_controller": True},
                "country": country, "created": T0 - 400 * DAY, "default_currency": cur, "details_submitted": True,
                "email": None, "external_accounts": _list(f"/v1/accounts/{acct}/external_accounts"),
                "future_requirements": {}, "metadata": {}, "payouts_enabled": True, "requirements": {},
                "settings": {"payouts": {"schedule": {"interval": "weekly"}}}, "tos_acceptance": {},
                "type": "express"}

    # ---- payouts ------------------------------------------------------------------

    def payouts(self, account: str | None, times: list[int], *, fail_index: int | None = None
                ) -> tuple[list[dict], dict[str, list[str]]]:
        cur = self.settle[account]
        paid = self.paid
        made, links = [], {}
        for i, tp in enumerate(times):
            due = [tid for tid, (bt, acct) in self.bts.items()
                   if acct == account and bt["type"] != "payout" and tid not in paid and bt["available_on"] <= tp]
            amount = sum(self.bts[t][0]["net"] for t in due)
            if not due or amount == 0:
                continue
            paid.update(due)
            pid = self.id("po")
            own = self.bt(account, type_="payout", category="payout", amount=-amount, t=tp, source=pid,
                          description="STRIPE PAYOUT", available_on=tp)
            po = {"id": pid, "object": "payout", "amount": amount, "application_fee": None,
                  "application_fee_amount": None, "arrival_date": (tp // DAY + 2) * DAY, "automatic": True,
                  "balance_transaction": own["id"], "created": tp, "currency": cur, "description": "STRIPE PAYOUT",
                  "destination": "ba_" + self.id("b")[2:], "failure_balance_transaction": None,
                  "failure_code": None, "failure_message": None, "livemode": False, "metadata": {},
                  "method": "standard", "original_payout": None, "payout_method": None,
                  "reconciliation_status": "completed", "reversed_by": None, "source_type": "card",
                  "statement_descriptor": None, "status": "pending", "trace_id": {"status": "pending", "value": None},
                  "type": "bank_account"}
            self.keep(po, account)
            links[pid] = due
            self.event("payout.created", po, account, tp)
            if i == fail_index:
                tf = tp + DAY
                back = self.bt(account, type_="payout_failure", category="payout_reversal", amount=amount, t=tf,
                               source=pid, description="Payout failure", available_on=tf)
                po.update(status="failed", failure_balance_transaction=back["id"], failure_code="account_closed",
                          failure_message="The bank account has been closed",
                          trace_id={"status": "unsupported", "value": None})
                self.event("payout.failed", po, account, tf)
            else:
                po.update(status="paid", trace_id={"status": "supported", "value": f"TRACE{self._n:010d}"})
                self.event("payout.paid", po, account, po["arrival_date"])
            made.append(po)
        return made, links


def _b36(n: int) -> str:
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


MONEY_EVENTS = ("charge.succeeded", "payment_intent.succeeded", "refund.created", "refund.updated",
                "charge.refunded", "application_fee.created")


def generate(seed: int, *, size: str = "small", missing: int = 0, duplicates: float = 0.03,
             out_of_order: float = 0.05, dispute_fee_returned: bool = True) -> Scenario:
    """A month of Stripe activity for a Connect platform, deterministic in ``seed``.

    ``size``: ``"small"`` (40 charges) or ``"medium"`` (300). ``missing``: how many
    money movements (charges, refunds, application fees) lose all their events.
    ``duplicates``/``out_of_order``: the share of events delivered twice / moved
    (at least one of each). ``dispute_fee_returned``: a won dispute returns its fee.
    """
    g = _Gen(seed, size, dispute_fee_returned=dispute_fee_returned)
    rng = g.rng
    n = SIZES[size]
    us, eu = g.acct_us, g.acct_eu
    objects_accounts = [g.account_obj(us, "US", "usd"), g.account_obj(eu, "DE", "eur")]

    # -- plan: who charges, in what currency, when; fates for the early ones
    kinds = ["platform"] * 6 + ["destination"] * 2 + ["direct_us"] * 3 + ["direct_eu"] * 4
    kinds += rng.choices(["platform", "destination", "direct_us", "direct_eu"], weights=[50, 20, 15, 15],
                         k=max(0, n - len(kinds)))
    plan = []
    cover = {"platform": list(CURRENCIES), "direct_eu": ["eur", "gbp", "isk", "usd"],
             "direct_us": ["usd", "jpy", "bhd"]}
    for k in kinds:
        if k == "destination":
            cur = "usd"
        elif cover.get(k):
            cur = cover[k].pop(0)
        elif k == "direct_eu":
            cur = rng.choices(["eur", "gbp", "usd", "isk", "jpy"], weights=[60, 15, 10, 10, 5])[0]
        else:
            cur = rng.choices(CURRENCIES, weights=[45, 20, 12, 10, 5, 8])[0]
        plan.append([k, cur])
    rng.shuffle(plan)
    times = sorted(T0 + rng.randint(0, 25 * DAY - 1) for _ in plan)
    early = [i for i, t in enumerate(times) if t < T0 + 16 * DAY]
    fates = {}
    for i in early:
        r = rng.random()
        fates[i] = ("partial" if r < 0.08 else "two_partials" if r < 0.12 else "full" if r < 0.18
                    else "dispute_lost" if r < 0.20 else "dispute_won" if r < 0.22 else None)
    need = ["partial", "two_partials", "full", "dispute_lost", "dispute_won", "full_direct"]
    for fate in need:
        want = "full" if fate == "full_direct" else fate
        have = [i for i, f in fates.items() if f == want and (fate != "full_direct" or plan[i][0].startswith("direct"))]
        if have:
            continue
        free = [i for i, f in fates.items() if f is None and plan[i][0] != "destination"
                and (fate != "full_direct" or plan[i][0].startswith("direct"))]
        if fate == "full_direct" and not free:
            free = [i for i, f in fates.items() if f is None and plan[i][0] != "destination"]
            if free:
                plan[free[0]][0] = "direct_us"
        if free:
            fates[free[0]] = want
    for i, f in fates.items():          # destination charges: no refunds/disputes modelled
        if plan[i][0] == "destination" and f:
            fates[i] = None

    acct_of = {"platform": None, "destination": None, "direct_us": us, "direct_eu": eu}
    charges: list[tuple[dict, str | None, dict | None]] = []
    handled: set[str] = set()
    for i, ((k, cur), t) in enumerate(zip(plan, times)):
        account = acct_of[k]
        ch = g.charge(account, cur, t, kind="direct" if k.startswith("direct") else k)
        fee = g.fees.get(ch["id"])
        charges.append((ch, account, fee))
        fate = fates.get(i)
        if not fate:
            continue
        handled.add(ch["id"])
        t1 = t + rng.randint(1 * DAY, 4 * DAY)
        if fate == "partial":
            amt = g.part(ch["amount"], rng.uniform(0.2, 0.6), cur)
            fee_amt = g.part(fee["amount"], amt / ch["amount"], fee["currency"]) if fee and rng.random() < 0.5 else 0
            g.refund(account, ch, amt, t1, fee=fee, fee_amount=fee_amt)
        elif fate == "two_partials":
            a1 = g.part(ch["amount"], rng.uniform(0.2, 0.4), cur)
            a2 = g.part(ch["amount"] - a1, rng.uniform(0.3, 0.7), cur) if ch["amount"] - a1 > STEP[cur] else 0
            g.refund(account, ch, a1, t1)
            if a2:
                g.refund(account, ch, a2, t1 + rng.randint(DAY, 3 * DAY))
        elif fate == "full":
            g.refund(account, ch, ch["amount"], t1, fee=fee, fee_amount=fee["amount"] if fee else 0)
        else:
            td = t + rng.randint(2 * DAY, 5 * DAY)
            g.dispute(account, ch, td, won=fate == "dispute_won", t_close=td + rng.randint(2 * DAY, 4 * DAY))

    # an adjustment on the platform's balance
    g.adjustment(None, -rng.randint(100, 5000), T0 + 10 * DAY + 3 * HOUR, "Balance adjustment: network cost")

    # platform sales at the end of the month, not paid out yet (Stripe's pending balance)
    for _ in range(2):
        ch = g.charge(None, "usd", T0 + 28 * DAY + rng.randint(2 * HOUR, 20 * HOUR), kind="platform")
        charges.append((ch, None, None))

    # the EUR account's negative payout below needs two sales of its own left untouched: a seed
    # whose month refunded or disputed them all gets two more, early enough to be paid out weekly
    spare = [c for c, a, _ in charges if a == eu and c["id"] not in handled and c["amount_refunded"] == 0]
    for i in range(max(0, 2 - len(spare))):
        extra = g.charge(eu, "eur", T0 + 2 * DAY + (i + 1) * HOUR, kind="direct", amount=20000 - 5000 * i)
        charges.append((extra, eu, None))

    # -- payouts: weekly per account; the platform's second one fails
    po_p, links_p = g.payouts(None, [T0 + d * DAY + HOUR for d in (7, 14, 21, 28)], fail_index=1)
    po_u, links_u = g.payouts(us, [T0 + d * DAY + HOUR for d in (5, 12, 19, 26)])
    po_e, links_e = g.payouts(eu, [T0 + d * DAY + HOUR for d in (6, 13, 20, 27)])
    # a negative payout on the EUR account: a lost dispute and a full refund, one small sale
    te = T0 + 27 * DAY + 2 * HOUR
    eu_charges = sorted([c for c, a, _ in charges if a == eu and c["id"] not in handled
                         and c["amount_refunded"] == 0], key=lambda c: g.convert(c["amount"], c["currency"], "eur",
                                                                                 te)[0], reverse=True)
    g.dispute(eu, eu_charges[0], te, won=False, t_close=te + HOUR)
    g.refund(eu, eu_charges[1], eu_charges[1]["amount"], te + 2 * HOUR)
    small = g.charge(eu, "eur", te + 3 * HOUR, kind="direct", amount=500)
    charges.append((small, eu, None))
    po_n, links_n = g.payouts(eu, [T0 + 29 * DAY + HOUR])
    assert po_n and po_n[0]["amount"] < 0, "the EUR account's last payout must be negative"

    payouts = [(p, None) for p in po_p] + [(p, us) for p in po_u] + [(p, eu) for p in po_e + po_n]
    links = {**links_p, **links_u, **links_e, **links_n}
    link_of = {tid: pid for pid, tids in links.items() for tid in tids}
    for po, _acct in payouts:
        link_of[po["balance_transaction"]] = po["id"]

    # -- events: chronological, then missing, duplicated, out of order
    g.events.sort(key=lambda e: (e[0], e[1]))
    chrono = [e for _, _, e in g.events]
    movements = sorted({m for m in g.event_movement.values() if m.split("_")[0] in ("ch", "re", "fee")})
    missing_ids = set(rng.sample(movements, min(missing, len(movements)))) if missing else set()
    missing_events = {eid for eid, m in g.event_movement.items() if m in missing_ids}
    delivered = [e for e in chrono if e["id"] not in missing_events]
    order = list(range(len(delivered)))
    reordered: set[str] = set()
    k_moves = max(1, int(len(order) * out_of_order))
    for _ in range(k_moves):
        i = rng.randrange(len(order))
        j = min(len(order) - 1, max(0, i + rng.choice((-1, 1)) * rng.randint(1, 15)))
        if i == j:
            j = i - 1 if i > 0 else i + 1
        order.insert(j, order.pop(i))
    # an event is "out of order" if something created later was delivered before it
    seen_max = -1
    for pos in order:
        if pos < seen_max:
            reordered.add(delivered[pos]["id"])
        seen_max = max(seen_max, pos)
    out = [delivered[p] for p in order]
    dup_count = max(1, int(len(out) * duplicates))
    duplicated: set[str] = set()
    for i in sorted(rng.sample(range(len(out)), min(dup_count, len(out))), reverse=True):
        ev = out[i]
        duplicated.add(ev["id"])
        out.insert(min(len(out), i + 1 + rng.randint(0, 40)), ev)

    objects: list[tuple[dict, str | None, str | None]] = [(a, None, None) for a in objects_accounts]
    objects += [(obj, acct, link_of.get(obj["id"]) if obj["object"] == "balance_transaction" else None)
                for obj, acct in g.objects]
    return Scenario(
        seed=seed, size=size, home_currency=HOME, accounts=[us, eu],
        settlement={a: c.upper() for a, c in g.settle.items()},
        objects=objects, balance_transactions=dict(g.bts), events=out, payouts=payouts,
        missing=missing_ids, missing_events=missing_events, duplicated=duplicated, reordered=reordered,
        chronological_events=chrono, payout_txns=links, event_movement=dict(g.event_movement),
    )
