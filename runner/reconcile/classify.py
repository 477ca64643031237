"""Classifying one balance transaction against what was booked (pure).

Classes: ``matched``; ``booked_late`` (the event is in, its booking is not sent:
a replay fixes it); ``missing`` (no event books it); ``mismatch`` (another
amount, or a currency that is neither the presentment nor the settlement
currency); ``fx_within_tolerance`` / ``fx_beyond_tolerance`` (booked at another
rate than Stripe applied); ``booked_with_payout`` (a category no flow books per
transaction, such as Stripe fees: the payout's journal books it);
``in_summary`` (summary mode: the payout's journal books everything).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Mapping

from runner.core.money import MoneyError, from_minor, round_money, to_decimal
from runner.reconcile.booked import Booked, dig
from runner.reconcile.policy import Policy

MATCHED = "matched"
BOOKED_LATE = "booked_late"
MISSING = "missing"
MISMATCH = "mismatch"
FX_WITHIN = "fx_within_tolerance"
FX_BEYOND = "fx_beyond_tolerance"
WITH_PAYOUT = "booked_with_payout"
IN_SUMMARY = "in_summary"
UNBALANCED = "unbalanced"
CONNECTED_BOOKS = "connected_books"    # a connected account's own money, in books this project does not keep

RECONCILED = frozenset({MATCHED, FX_WITHIN, WITH_PAYOUT, IN_SUMMARY, CONNECTED_BOOKS})
EXCEPTIONS = (MISSING, BOOKED_LATE, MISMATCH, FX_WITHIN, FX_BEYOND)


@dataclass
class Check:
    txn_id: str
    category: str
    kind: str
    object_id: str | None = None
    detail: str = ""
    fix: str = ""
    fx_diff: Decimal = Decimal(0)       # clearing-account correction, settlement currency (signed)
    fee_booked: bool = False            # the booking carried the fee too (the accounting model)

    @property
    def is_exception(self) -> bool:
        return self.kind not in (MATCHED, WITH_PAYOUT, IN_SUMMARY, CONNECTED_BOOKS)


def source_ids(txn: Mapping[str, Any]) -> list[str]:
    src = txn.get("source")
    if isinstance(src, Mapping):
        ids = [src.get("id")]
        if isinstance(src.get("payment_intent"), str):
            ids.append(src["payment_intent"])
        return [i for i in ids if i]
    return [src] if isinstance(src, str) else []


def classify(txn: Mapping[str, Any], booked: Mapping[str, list[Booked]], policy: Policy,
             posted: Mapping[str, list[Any]] | None = None) -> Check:
    cat = txn.get("reporting_category") or txn.get("type") or "other"
    ids = source_ids(txn)
    check = Check(txn["id"], cat, MATCHED, ids[0] if ids else None)
    if policy.mode == "summary":
        check.kind = IN_SUMMARY
        return check
    mine = _posted(txn, ids, cat, posted or {})
    if mine:
        return _classify_posted(txn, mine, check)
    types = policy.expect.get(cat)
    if types is None:
        if policy.unbooked == "journal":
            check.kind = WITH_PAYOUT
            return check
        check.kind, check.detail = MISSING, f"no flow books {cat} transactions"
        check.fix = f"add {cat} to reconcile.expect with the events that book it, or set reconcile.unbooked: journal"
        return check
    cands = [b for i in ids for b in booked.get(i, []) if b.event_type in types]
    day = datetime.fromtimestamp(int(txn.get("created", 0)), timezone.utc).date().isoformat()
    events = sorted({b.event_id for b in cands})
    if not cands or all(b.event_status == "ignored" and b.delivery_id is None for b in cands):
        check.kind = MISSING
        if cands:
            check.detail = f"event {events[0]} was filtered out by every flow"
            check.fix = f"check the filter of the flow that books {', '.join(types)}; then ledgerflow stripe dispatch"
        else:
            check.detail = f"no {' / '.join(types)} event for {check.object_id or 'its source'} in the inbox"
            check.fix = (f"ledgerflow stripe catch-up --since {day}, then ledgerflow stripe dispatch; "
                         f"check that a flow triggers on {types[0]}")
        return check
    sent = [b for b in cands if b.delivery_id is not None and b.state == "sent"]
    if not sent:
        check.kind = BOOKED_LATE
        dead = [b for b in cands if b.state == "dead"]
        waiting = [b for b in cands if b.state in ("pending", "retrying", "sending")]
        if dead:
            check.detail = f"delivery {dead[0].delivery_id} ({dead[0].flow}) is dead: {dead[0].last_error or ''}".rstrip(": ")
            check.fix = f"ledgerflow dlq replay {dead[0].delivery_id}"
        elif waiting:
            check.detail = f"delivery {waiting[0].delivery_id} ({waiting[0].flow}) is {waiting[0].state}"
            check.fix = "wait for the delivery loop (ledgerflow serve), or ledgerflow dlq replay " \
                        f"{waiting[0].delivery_id}"
        else:
            check.detail = f"event {events[0]} is {cands[0].event_status}; nothing was planned yet"
            check.fix = "ledgerflow stripe dispatch"
        return check
    results = [_compare(txn, b, policy, check) for b in sent]
    order = [MATCHED, FX_WITHIN, FX_BEYOND, MISMATCH]
    best = min(results, key=lambda r: order.index(r[0]))
    check.kind, check.detail, check.fx_diff = best
    if check.kind == MISMATCH:
        check.fix = (f"compare the booking of {check.object_id} (delivery {sent[0].delivery_id}, flow {sent[0].flow}) "
                     "with the Stripe transaction and correct it in the books")
    elif check.kind == FX_WITHIN:
        check.fix = "none needed: the payout's journal books the difference to the FX gain/loss account"
    elif check.kind == FX_BEYOND:
        check.fix = (f"check the rate the booking of {check.object_id} used (delivery {sent[0].delivery_id}) "
                     "against Stripe's exchange_rate; correct the booking")
    return check


def _posted(txn: Mapping[str, Any], ids: list[str], category: str, posted: Mapping[str, list[Any]]) -> list[Any]:
    """The accounting model's bookings of this transaction: by its own id, else by its source
    when the booking was of the same kind of movement (a refund's re_, a charge's ch_)."""
    own = posted.get(txn["id"], [])
    if own:
        return own
    return [b for i in ids for b in posted.get(i, []) if b.kind == category and not b.balance_transaction]


def _classify_posted(txn: Mapping[str, Any], bookings: list[Any], check: Check) -> Check:
    """Booked through the accounting model: the posting was built from this very balance
    transaction, in the books' currency; what is left to check is that it was delivered and
    that Stripe's amount has not changed since. Its fee is that booking's, delivered or not: the
    payout's journal never books it again."""
    check.fee_booked = True
    sent = [b for b in bookings if b.state in ("sent", "discarded")]     # discarded: booked by hand
    if len(sent) < len(bookings):
        # every set of books must have it: one target's dead or waiting booking is that target's
        # exception, even when another target has the movement
        sent = []
        check.kind = BOOKED_LATE
        dead = [b for b in bookings if b.state == "dead"]
        b = dead[0] if dead else next(b for b in bookings if b.state not in ("sent", "discarded"))
        check.detail = f"delivery {b.delivery_id} ({b.flow} -> {b.connection}) is {b.state}" + (
            f": {b.last_error}" if dead and b.last_error else "")
        check.fix = (f"ledgerflow dlq replay {b.delivery_id}" if dead else
                     f"wait for the delivery loop (ledgerflow serve), or ledgerflow dlq replay {b.delivery_id}")
        return check
    settle = str(txn["currency"]).upper()
    stripe_amount = from_minor(int(txn["amount"]), settle)
    for b in sent:
        try:
            booked = to_decimal(b.settlement_amount, "booked amount")
        except MoneyError:
            continue
        if booked != stripe_amount:
            check.kind = MISMATCH
            check.detail = (f"delivery {b.delivery_id} ({b.flow}) booked {booked} {settle}, "
                            f"Stripe's transaction is {stripe_amount} {settle}")
            check.fix = (f"compare the booking of {check.object_id} (delivery {b.delivery_id}, flow {b.flow}) with "
                         "the Stripe transaction and correct it in the books")
            return check
    check.kind = MATCHED
    return check


def _compare(txn: Mapping[str, Any], b: Booked, policy: Policy, check: Check) -> tuple[str, str, Decimal]:
    spec = policy.booked_amount.get(f"{b.connector_type}.{b.action}")
    if spec is None:
        return MATCHED, f"amount not compared (no booked_amount path for {b.connector_type}.{b.action})", Decimal(0)
    src = txn.get("source") if isinstance(txn.get("source"), Mapping) else {}
    settle = str(txn["currency"]).upper()
    presentment = str(src.get("currency") or settle).upper()
    try:
        raw = dig(b.payload, spec["amount"])
        booked = abs(to_decimal(raw, "booked amount"))
        cur_raw = dig(b.payload, spec["currency"]) if spec.get("currency") else None
        # a booking that names no currency is in the books' currency (home), never assumed to be Stripe's
        cur = str(cur_raw).upper() if cur_raw else policy.home_currency
        rate_raw = dig(b.payload, spec["rate"]) if spec.get("rate") else None
        rate = to_decimal(rate_raw, "booked rate") if rate_raw not in (None, "") else None
    except MoneyError as exc:
        return MISMATCH, f"delivery {b.delivery_id}: cannot read the booked amount: {exc}", Decimal(0)
    gross = from_minor(abs(int(txn["amount"])), settle)
    sign = -1 if int(txn["amount"]) < 0 else 1
    if cur not in (settle, presentment):
        return MISMATCH, f"booked in {cur}, Stripe moved {presentment}" + (
            f" (settled {settle})" if settle != presentment else ""), Decimal(0)
    if cur == presentment and presentment != settle:
        if isinstance(src.get("amount"), int):
            expected = from_minor(src["amount"], presentment)
            if booked != expected:
                return MISMATCH, f"booked {booked} {cur}, Stripe {expected} {cur}", Decimal(0)
        if rate is None:
            return MATCHED, "", Decimal(0)
        converted = round_money(booked * rate, settle)
        return _fx(gross - converted, gross, sign, settle, policy,
                   f"booked at {rate} ({converted} {settle}), Stripe applied {txn.get('exchange_rate')} "
                   f"({gross} {settle})")
    if booked == gross:
        return MATCHED, "", Decimal(0)
    if presentment != settle:
        return _fx(gross - booked, gross, sign, settle, policy, f"booked {booked} {settle}, Stripe {gross} {settle}")
    return MISMATCH, f"booked {booked} {cur}, Stripe {gross} {settle}", Decimal(0)


def _fx(diff: Decimal, gross: Decimal, sign: int, currency: str, policy: Policy,
        detail: str) -> tuple[str, str, Decimal]:
    if diff == 0:
        return MATCHED, "", Decimal(0)
    within = abs(diff) <= policy.fx_tolerance * gross
    text = f"{detail}: difference {diff} {currency}"
    return (FX_WITHIN, text, sign * diff) if within else (FX_BEYOND, text, Decimal(0))
